"""Asking an OpenAI-compatible server for its model's context window.

Two documented places, tried in order, each one GET with a short timeout:

* ``{base_url}/models``: the entry whose ``id`` is the model (or the only entry, on a
  server that serves one model under another name) and its ``context_length``
  (OpenRouter), ``max_model_len`` (vLLM), ``context_window`` (Vercel AI Gateway) or
  ``meta.n_ctx`` (llama.cpp);
* ``{server}/props`` (the llama.cpp server, at its root): ``n_ctx``, top-level or in
  ``default_generation_settings`` (the window of one slot).

OpenAI's own API lists no windows, so it is not asked. Any failure (refused, 404, not
JSON, no such field) gives ``None``: the caller falls back to its table. The API key
goes in the ``Authorization`` header only and never into an error or log line.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

PROBE_TIMEOUT = 5.0
_MAX_BODY = 32 * 1024 * 1024  # OpenRouter's list of every model is a few MB
_ENTRY_KEYS = ("context_length", "max_model_len", "context_window")


def _get_json(url: str, api_key: str | None, timeout: float) -> Any:
    headers = {"Accept": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    request = urllib.request.Request(url, headers=headers, method="GET")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read(_MAX_BODY))


def _positive(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 1:
        return None
    return int(value)


def _entry_window(entry: Any) -> int | None:
    if not isinstance(entry, dict):
        return None
    for key in _ENTRY_KEYS:
        found = _positive(entry.get(key))
        if found is not None:
            return found
    meta = entry.get("meta")
    return _positive(meta.get("n_ctx")) if isinstance(meta, dict) else None


def _matches(entry_id: str, model: str) -> bool:
    a, b = entry_id.lower(), model.lower()
    return a == b or a.endswith("/" + b) or b.endswith("/" + a)


def window_from_models(payload: Any, model: str) -> int | None:
    """The window of ``model`` in a ``/models`` reply, if it gives one."""
    data = payload.get("data") if isinstance(payload, dict) else payload
    if not isinstance(data, list):
        return None
    entries = [e for e in data if isinstance(e, dict)]
    named = [e for e in entries if _matches(str(e.get("id", "")), model)]
    if not named and len(entries) == 1:
        named = entries  # one model, served under another name
    for entry in named:
        found = _entry_window(entry)
        if found is not None:
            return found
    return None


def window_from_props(payload: Any) -> int | None:
    """``n_ctx`` in a llama.cpp server's ``/props`` reply, if it gives one."""
    if not isinstance(payload, dict):
        return None
    settings = payload.get("default_generation_settings")
    nested = settings.get("n_ctx") if isinstance(settings, dict) else None
    return _positive(nested) or _positive(payload.get("n_ctx"))


def _server_root(base_url: str) -> str:
    root = base_url.rstrip("/")
    return root[: -len("/v1")] if root.endswith("/v1") else root


def probe_window(
    base_url: str, model: str, api_key: str | None = None, timeout: float = PROBE_TIMEOUT
) -> int | None:
    """The context window the server at ``base_url`` reports for ``model``, or ``None``."""
    if urlsplit(base_url).scheme not in ("http", "https"):
        return None
    base = base_url.rstrip("/")

    def from_models(payload: Any) -> int | None:
        return window_from_models(payload, model)

    readers: tuple[tuple[str, Callable[[Any], int | None]], ...] = (
        (f"{base}/models", from_models),
        (f"{_server_root(base)}/props", window_from_props),
    )
    for url, read in readers:
        try:
            found = read(_get_json(url, api_key, timeout))
        except (OSError, ValueError, urllib.error.URLError) as exc:
            log.debug("no context window from %s: %s", url, type(exc).__name__)
            continue
        if found is not None:
            return found
    return None


__all__ = ["PROBE_TIMEOUT", "probe_window", "window_from_models", "window_from_props"]
