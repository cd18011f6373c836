"""The sub-call cache: ``RLM(..., cache=...)`` memoises model calls in a SQLite file.

``open_cache`` reads the ``cache=`` argument: ``None``/``False`` (the default: no cache),
``True`` (the default file, ``default_cache_path``), a path, a ``CallCache``, or a dict
``{"path": ..., "nondeterministic": bool}``. The call pipeline
(``rlm.core.lm_pipeline.CallPipeline.drive``/``adrive``) asks it before a call goes to
the governor: a hit is answered from the file, never touching the governor or the
network, and still ends through the call's flow (its budget node is charged the hit's
usage, which is free: ``total_calls`` 0, ``cached_calls`` 1, and the tokens and cost it
saved in ``saved_input_tokens``/``saved_output_tokens``/``saved_cost``). Every model
call of a run goes through there: root iterations, the final-answer and compaction
calls, ``llm_query`` and each prompt of ``llm_query_batched``. A re-run replays the same
trajectory while its code is deterministic.

The key is a SHA-256 of (the client: its class, endpoint and model; the model the call
names; the client's ``sampling_args``; the call's purpose; the structured-output schema;
the prompt, as JSON). Which calls are cached:

* only a client whose key is known: the clients in ``rlm.clients`` that talk to a
  provider (OpenAI and compatible servers, Anthropic, Azure OpenAI, Gemini, LiteLLM,
  Portkey, llama.cpp), exactly those classes, or any client with a
  ``cache_identity()`` method returning a JSON object that names what else changes its
  answers. Others (a ``ScriptedLM``, an rlms-era client, a subclass, a mock) are never
  cached: nothing says what their answer depends on;
* only deterministic calls: ``temperature`` 0 in the client's ``sampling_args``. A
  sampled call (any other temperature, or none, where providers default to sampling)
  is cached only with ``CallCache(include_sampled=True)`` or ``{"nondeterministic":
  True}``: a re-run then gets the first sample again;
* a prompt or sampling argument that is not JSON (bytes, objects) is not cached.

Replies are stored as JSON in ``rlm.sessions.call_store.CallStore``: a corrupt row or
file is a miss, never a failed call.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rlm.base.errors import ConfigurationError
from rlm.base.types import ModelUsageSummary
from rlm.clients.base_lm import LMResult
from rlm.sessions.call_store import CacheStats, CallStore

if TYPE_CHECKING:
    from rlm.core.lm_call import Send

CACHE_ENV_VAR = "RLM_CACHE_PATH"
KEY_VERSION = 1

# The client classes whose answers depend only on what ``client_identity`` reads.
_KEYED_MODULES = frozenset(
    f"rlm.clients.{name}"
    for name in ("openai", "anthropic", "azure_openai", "gemini", "litellm", "portkey", "llama_cpp")
)
# Attributes that say where a client's requests go or how it shapes them.
_IDENTITY_ATTRS = (
    "base_url",
    "_where",
    "azure_endpoint",
    "api_version",
    "api_base",
    "model_path",
    "chat_format",
    "code_prefill",
    "seed",
)
_SCALARS = (str, int, float, bool)


def default_cache_path() -> Path:
    """``$RLM_CACHE_PATH``, else ``$XDG_CACHE_HOME/rlmx/calls.db``, else
    ``~/.cache/rlmx/calls.db``."""
    explicit = os.environ.get(CACHE_ENV_VAR)
    if explicit:
        return Path(explicit).expanduser()
    cache_home = os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache")
    return Path(cache_home).expanduser() / "rlmx" / "calls.db"


def client_identity(client: Any) -> dict[str, Any] | None:
    """What besides the call itself decides a client's answer, or ``None`` if that is
    not known (the client is then not cached)."""
    hook = getattr(client, "cache_identity", None)
    if callable(hook):
        found = hook()
        return {"custom": found} if isinstance(found, dict) else None
    cls = type(client)
    if cls.__module__ not in _KEYED_MODULES:
        return None
    identity: dict[str, Any] = {"class": f"{cls.__module__}.{cls.__qualname__}"}
    identity["model_name"] = getattr(client, "model_name", None)
    for name in _IDENTITY_ATTRS:
        value = getattr(client, name, None)
        if isinstance(value, _SCALARS):
            identity[name] = value
    kwargs = getattr(client, "kwargs", None)
    if isinstance(kwargs, dict):
        identity["kwargs"] = {
            k: v for k, v in kwargs.items() if isinstance(k, str) and isinstance(v, _SCALARS)
        }
    return identity


def deterministic(sampling: dict[str, Any]) -> bool:
    """True when ``sampling`` asks for temperature 0."""
    t = sampling.get("temperature")
    return isinstance(t, int | float) and not isinstance(t, bool) and t == 0


def _count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"not a token count: {value!r}")
    return value


def _cost(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"not a cost: {value!r}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"not a cost: {value!r}")
    return float(value)


def decode_hit(value: dict[str, Any]) -> LMResult | None:
    """A stored reply as the result of a free call, or ``None`` if it is malformed."""
    text, model, usage = value.get("text"), value.get("model"), value.get("usage")
    if not isinstance(text, str) or not isinstance(model, str) or not isinstance(usage, dict):
        return None
    saved_in = _count(usage.get("total_input_tokens", 0))
    saved_out = _count(usage.get("total_output_tokens", 0))
    saved_cost = _cost(usage.get("total_cost"))
    spent = ModelUsageSummary(
        total_calls=0,
        total_cost=0.0 if saved_cost is not None else None,
        cached_calls=1,
        saved_input_tokens=saved_in,
        saved_output_tokens=saved_out,
        saved_cost=saved_cost,
    )
    return LMResult(text=text, model=model, usage=spent)


class CallCache:
    """Memoised model calls in the SQLite file at ``path`` (``default_cache_path()``
    if ``None``). ``include_sampled``: also cache calls whose temperature is not 0."""

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        include_sampled: bool = False,
        busy_timeout: float = 30.0,
    ) -> None:
        where = Path(path).expanduser() if path is not None else default_cache_path()
        if not str(path if path is not None else where).strip():
            raise ConfigurationError("cache path is empty")
        if where.is_dir():
            raise ConfigurationError(f"cache path {where} is a directory, not a cache file")
        self.store = CallStore(where, busy_timeout=busy_timeout)
        self.include_sampled = bool(include_sampled)

    @property
    def path(self) -> Path:
        return self.store.path

    # -- keys --------------------------------------------------------------------------

    def key(self, send: Send) -> str | None:
        """The call's key, or ``None`` if it is not to be cached (see the module)."""
        client = send.route.client
        identity = client_identity(client)
        if identity is None:
            return None
        sampling = getattr(client, "sampling_args", None)
        if not isinstance(sampling, dict):
            return None
        if not self.include_sampled and not deterministic(sampling):
            return None
        schema = send.schema
        payload = {
            "v": KEY_VERSION,
            "client": identity,
            "model": send.route.name,
            "sampling": sampling,
            "purpose": send.purpose.value,
            "schema": None
            if schema is None
            else [schema.name, schema.schema, schema.strict, schema.description],
            "prompt": send.prompt,
        }
        try:
            text = json.dumps(
                payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
            )
        except (TypeError, ValueError, RecursionError):
            return None
        return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()

    # -- the pipeline's side -----------------------------------------------------------

    def probe(self, send: Send) -> tuple[str | None, LMResult | None]:
        """``(key, hit)``: the call's key (``None``: not cached) and its stored reply."""
        key = self.key(send)
        if key is None:
            return None, None
        return key, self.store.get(key, decode_hit)

    async def aprobe(self, send: Send) -> tuple[str | None, LMResult | None]:
        """``probe`` off the event loop (the file may wait for another process)."""
        return await asyncio.to_thread(self.probe, send)

    def save(self, key: str, result: LMResult) -> None:
        """Remember the reply of a call that was made."""
        usage = result.usage
        value = {"text": result.text, "model": result.model, "usage": usage.to_dict()}
        self.store.put(
            key,
            value,
            model=result.model,
            input_tokens=max(0, usage.total_input_tokens),
            output_tokens=max(0, usage.total_output_tokens),
            cost=usage.total_cost,
        )

    async def asave(self, key: str, result: LMResult) -> None:
        await asyncio.to_thread(self.save, key, result)

    # -- maintenance -------------------------------------------------------------------

    def stats(self) -> CacheStats:
        return self.store.stats()

    def clear(self) -> int:
        return self.store.clear()

    def close(self) -> None:
        self.store.close()

    def __repr__(self) -> str:
        sampled = ", include_sampled=True" if self.include_sampled else ""
        return f"CallCache({str(self.path)!r}{sampled})"


_DICT_KEYS = frozenset({"path", "nondeterministic", "include_sampled", "busy_timeout"})


def open_cache(spec: Any) -> CallCache | None:
    """The ``CallCache`` that ``RLM(cache=spec)`` means; ``ConfigurationError`` if
    ``spec`` is none of the accepted forms (see the module)."""
    if spec is None or spec is False:
        return None
    if spec is True:
        return CallCache()
    if isinstance(spec, CallCache):
        return spec
    if isinstance(spec, str | os.PathLike):
        return CallCache(spec)
    if isinstance(spec, dict):
        unknown = set(spec) - _DICT_KEYS
        if unknown:
            raise ConfigurationError(
                f"unknown cache option(s) {sorted(unknown)}; known: {sorted(_DICT_KEYS)}"
            )
        path = spec.get("path")
        if path is not None and not isinstance(path, str | os.PathLike):
            raise ConfigurationError(f"cache path must be a path, got {path!r}")
        sampled = spec.get("nondeterministic", spec.get("include_sampled", False))
        timeout = spec.get("busy_timeout", 30.0)
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout < 0:
            raise ConfigurationError(f"cache busy_timeout must be seconds, got {timeout!r}")
        return CallCache(path, include_sampled=bool(sampled), busy_timeout=float(timeout))
    raise ConfigurationError(
        "cache must be True, a path, a dict {'path': ..., 'nondeterministic': bool} or a "
        f"rlm.core.call_cache.CallCache, got {type(spec).__name__}"
    )


__all__ = [
    "CACHE_ENV_VAR",
    "CacheStats",
    "CallCache",
    "client_identity",
    "decode_hit",
    "default_cache_path",
    "deterministic",
    "open_cache",
]
