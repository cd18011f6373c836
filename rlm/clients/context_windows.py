"""Context windows: how many tokens a model takes, and whether a prompt fits.

Where a client's window comes from, first match wins (``window_of``):

1. **the override**: ``context_window=`` in ``backend_kwargs`` (``BaseLM.context_window``;
   the CLI's ``--context-window``), the whole window in tokens, prompt and reply;
2. **the provider**: what the client's ``provider_context_window()`` reports: the
   embedded llama.cpp model's ``n_ctx()``; an OpenAI-compatible server's ``/v1/models``
   (``context_length``: OpenRouter; ``max_model_len``: vLLM; ``context_window``: Vercel)
   or a llama.cpp server's ``/props`` ``n_ctx`` (``rlm.clients.window_probe``). It is
   asked once per client, on its first sub-call (never per call), and a failure falls
   back to
3. **the table** below, matched on the model's name: exactly, else by the longest
   family prefix (``gpt-4o-mini-2024-07-18`` is ``gpt-4o-mini``); provider prefixes
   (``openai/``), Bedrock's ``us.anthropic.`` and tags (``:latest``) are ignored.

The table: each model's published limits, from the providers' model pages (OpenAI
platform.openai.com/docs/models, Anthropic docs.anthropic.com "Models overview", Google
ai.google.dev "Gemini models", and the open models' model cards on Hugging Face), as of
2025-11. ``input`` is the most prompt tokens a request may carry; ``total``, when the
prompt and the reply share one window, that window. For open models the table gives the
model's own maximum: the server that runs one may be configured smaller, and then its
own report (2.) or an override (1.) is what counts. A name the table does not know has
no window: its sub-calls are not checked.

``check_fits`` is the guard: it counts a prompt (the client's own tokenizer when it has
one, else ``rlm.clients.tokens.count_tokens``: tiktoken, or characters / 4, said to be
an estimate) against the window, less the reply's ``max_tokens`` when that is known,
and raises ``ContextWindowExceededError`` before anything is sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from dataclasses import dataclass
from typing import Any

from rlm.base.errors import ContextWindowExceededError
from rlm.base.types import Prompt

TABLE_DATE = "2025-11"


@dataclass(frozen=True)
class Window:
    """A model's limits in tokens: ``input`` (prompt), ``total`` (prompt and reply
    together, when they share a window) and ``output`` (the longest reply), if known."""

    input: int
    total: int | None = None
    output: int | None = None


def _shared(total: int, output: int | None = None) -> Window:
    return Window(input=total, total=total, output=output)


_M = 1_048_576
MODEL_WINDOWS: dict[str, Window] = {
    # OpenAI
    "gpt-5": Window(272_000, 400_000, 128_000),  # gpt-5, -mini, -nano, -codex, 5.1
    "gpt-5-chat": _shared(128_000, 16_384),
    "gpt-4.1": _shared(1_047_576, 32_768),  # gpt-4.1, -mini, -nano
    "gpt-4o": _shared(128_000, 16_384),  # gpt-4o, -mini
    "gpt-4.5": _shared(128_000, 16_384),
    "chatgpt-4o": _shared(128_000, 16_384),
    "gpt-4-turbo": _shared(128_000, 4_096),
    "gpt-4-32k": _shared(32_768),
    "gpt-4": _shared(8_192),
    "gpt-3.5-turbo": _shared(16_385, 4_096),
    "o1": _shared(200_000, 100_000),
    "o1-mini": _shared(128_000, 65_536),
    "o1-preview": _shared(128_000, 32_768),
    "o3": _shared(200_000, 100_000),  # o3, o3-mini, o3-pro
    "o4-mini": _shared(200_000, 100_000),
    "gpt-oss": _shared(131_072),  # gpt-oss-20b, -120b
    # Anthropic (the standard window; Sonnet 4/4.5's 1M needs a beta header)
    "claude": _shared(200_000),
    "claude-3": _shared(200_000, 4_096),
    "claude-3-5": _shared(200_000, 8_192),
    "claude-3-7-sonnet": _shared(200_000, 64_000),
    "claude-sonnet-4": _shared(200_000, 64_000),
    "claude-opus-4": _shared(200_000, 32_000),
    "claude-haiku-4": _shared(200_000, 64_000),
    # Google Gemini (input and output limits are separate)
    "gemini": Window(_M),
    "gemini-1.5-pro": Window(2_097_152, None, 8_192),
    "gemini-1.5-flash": Window(_M, None, 8_192),
    "gemini-2.0-flash": Window(_M, None, 8_192),
    "gemini-2.5": Window(_M, None, 65_536),
    "gemini-3": Window(_M, None, 65_536),
    # xAI, DeepSeek, Mistral
    "grok-3": _shared(131_072),
    "grok-4": _shared(256_000),
    "deepseek-chat": _shared(128_000, 8_192),
    "deepseek-reasoner": _shared(128_000, 64_000),
    "deepseek-v3": _shared(128_000),
    "deepseek-r1": _shared(128_000),
    "mistral-large": _shared(131_072),
    "mistral-medium": _shared(131_072),
    "mistral-small": _shared(131_072),
    "mistral-nemo": _shared(131_072),
    "ministral": _shared(131_072),
    "codestral": _shared(256_000),
    "mixtral-8x7b": _shared(32_768),
    "mixtral-8x22b": _shared(65_536),
    # Open models (their own maximum; a server may run them smaller)
    "llama-3": _shared(8_192),  # Llama 3.0
    "llama-3.1": _shared(131_072),
    "llama-3.2": _shared(131_072),
    "llama-3.3": _shared(131_072),
    "llama-4": _shared(_M),
    "qwen": _shared(131_072),
    "qwen2.5": _shared(131_072),
    "qwen3": _shared(131_072),
    "qwen3-coder": _shared(262_144),
    "gemma-2": _shared(8_192),
    "gemma-3": _shared(131_072),
    "gemma-3-1b": _shared(32_768),
    "phi-3": _shared(131_072),
    "phi-4": _shared(16_384),
    "smollm2": _shared(8_192),
    "smollm3": _shared(65_536),
    "kimi-k2": _shared(131_072),
    "glm-4.5": _shared(131_072),
    "command-r": _shared(128_000),
}

# Words in front of a family name: "Meta-Llama-3.1-8B-Instruct" is llama-3.1.
_VENDOR_WORDS = ("meta-", "mistralai-", "google-", "microsoft-", "huggingfacetb-")


def _candidates(model_name: str) -> list[str]:
    name = model_name.strip().lower().rsplit("/", 1)[-1].split(":", 1)[0]
    names = [name, *(name[i + 1 :] for i, ch in enumerate(name) if ch == ".")]
    names += [n[len(w) :] for n in list(names) for w in _VENDOR_WORDS if n.startswith(w)]
    return names


def table_window(model_name: str | None) -> Window | None:
    """The table's window for ``model_name``: an exact name, else the longest family
    prefix; ``None`` for a model it does not know."""
    if not model_name:
        return None
    names = _candidates(model_name)
    for name in names:
        if name in MODEL_WINDOWS:
            return MODEL_WINDOWS[name]
    best = ""
    for prefix in MODEL_WINDOWS:
        if len(prefix) > len(best) and any(n.startswith(prefix) for n in names):
            best = prefix
    return MODEL_WINDOWS[best] if best else None


# -- a client's window ---------------------------------------------------------------


@dataclass(frozen=True)
class ResolvedWindow:
    """A client's window and where it came from (``override``, ``provider``, ``table``)."""

    model: str
    window: Window
    source: str

    def prompt_limit(self, reply: int | None) -> int:
        """The most prompt tokens that leave ``reply`` tokens for the answer."""
        limit = self.window.input
        if reply and self.window.total is not None:
            limit = min(limit, self.window.total - reply)
        return max(limit, 0)


_lock = threading.Lock()
_resolving: dict[int, threading.Lock] = {}  # id(client) -> its lock, while being resolved
_ATTR = "_rlm_context_window"  # where a client's resolved window is kept


def _positive(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return int(value) if value >= 1 else None


def _resolve(client: Any) -> ResolvedWindow | None:
    model = str(getattr(client, "model_name", None) or "unknown")
    override = _positive(getattr(client, "context_window", None))
    if override is not None:
        return ResolvedWindow(model, _shared(override), "override")
    ask = getattr(client, "provider_context_window", None)
    if callable(ask):
        try:
            answer = ask()
        except Exception:  # an unreachable or odd provider: the table decides
            answer = None
        if isinstance(answer, Window) and _positive(answer.input) is not None:
            return ResolvedWindow(model, answer, "provider")  # its own prompt/reply split
        reported = _positive(answer)
        if reported is not None:
            return ResolvedWindow(model, _shared(reported), "provider")
    window = table_window(model)
    return ResolvedWindow(model, window, "table") if window is not None else None


def _cached(client: Any) -> tuple[bool, ResolvedWindow | None]:
    """(True, window) when ``client``'s window is already resolved, else (False, None)."""
    store = getattr(client, "__dict__", None)
    if isinstance(store, dict) and _ATTR in store:
        found: ResolvedWindow | None = store[_ATTR]
        return True, found
    return False, None


def window_of(client: Any) -> ResolvedWindow | None:
    """``client``'s window (see the module docstring), resolved once and kept on the
    client; ``None`` when nothing knows it. The first call may ask the provider."""
    known, found = _cached(client)
    if known:
        return found
    with _lock:  # one lock per client being resolved: others do not wait for its provider
        lock = _resolving.setdefault(id(client), threading.Lock())
    with lock:
        known, found = _cached(client)
        if known:
            return found
        resolved = _resolve(client)
        with contextlib.suppress(AttributeError, TypeError):  # no __dict__: resolved each time
            client.__dict__[_ATTR] = resolved
    with _lock:
        _resolving.pop(id(client), None)
    return resolved


async def awindow_of(client: Any) -> ResolvedWindow | None:
    """``window_of`` for async callers: a first resolution runs on a worker thread, so
    asking the provider never blocks the event loop."""
    known, found = _cached(client)
    if known:
        return found
    return await asyncio.to_thread(window_of, client)


def input_window(client: Any) -> int | None:
    """The most prompt tokens ``client``'s model takes (its window's input limit), or
    ``None`` when nothing knows its window. What the root's compaction measures against."""
    resolved = window_of(client)
    return resolved.window.input if resolved is not None else None


# -- the guard -----------------------------------------------------------------------

_REPLY_KEYS = ("max_tokens", "max_completion_tokens", "max_output_tokens")


def reply_allowance(client: Any) -> int | None:
    """The reply's ``max_tokens`` for ``client`` if known: its ``reply_allowance()``,
    else its sampling arguments."""
    own = getattr(client, "reply_allowance", None)
    if callable(own):
        return _positive(own())
    args = getattr(client, "sampling_args", None) or {}
    for key in _REPLY_KEYS:
        value = _positive(args.get(key)) if isinstance(args, dict) else None
        if value is not None:
            return value
    return None


def _prompt_tokens(client: Any, prompt: Prompt) -> tuple[int, bool]:
    """(tokens, estimated): the client's own count when it has one, else tiktoken's,
    else characters / 4."""
    own = getattr(client, "count_prompt_tokens", None)
    if callable(own):
        exact = own(prompt)
        if isinstance(exact, int) and not isinstance(exact, bool):
            return exact, False
    from rlm.clients.tokens import count_tokens, counts_exactly  # tokens imports this module

    model = str(getattr(client, "model_name", "") or "")
    return count_tokens(prompt, model), not counts_exactly(model)


_FORMAT_ROOM = 64  # tokens a chat template may add around a prompt (a default system line)


def _surely_fits(prompt: Prompt, limit: int) -> bool:
    """True when ``prompt`` fits whatever the tokenizer, without counting it: no token
    is shorter than one byte (and UTF-8 takes at most 4 bytes a character)."""
    if not isinstance(prompt, str):
        return False
    room = limit - _FORMAT_ROOM
    return len(prompt) * 4 <= room or len(prompt.encode("utf-8")) <= room


def check_fits(client: Any, prompt: Prompt) -> None:
    """Raise ``ContextWindowExceededError`` if ``prompt`` (and the reply's ``max_tokens``,
    when known) cannot fit ``client``'s window. A client with no known window passes."""
    resolved = window_of(client)
    if resolved is None:
        return
    reply = reply_allowance(client)
    limit = resolved.prompt_limit(reply)
    if _surely_fits(prompt, limit):
        return
    tokens, estimated = _prompt_tokens(client, prompt)
    if tokens > limit:
        raise ContextWindowExceededError(
            model=resolved.model,
            prompt_tokens=tokens,
            limit=limit,
            window=resolved.window.total or resolved.window.input,
            reply_tokens=reply if limit < resolved.window.input else None,
            estimated=estimated,
        )


def budget_windows(own: Any, sub: Any) -> dict[str, int | None]:
    """``budget()``'s window entries: the most prompt tokens the run's own model
    (``own``) and ``llm_query``'s default model (``sub``) take, ``None`` if unknown."""
    out: dict[str, int | None] = {}
    for key, client in (("context_window", own), ("sub_context_window", sub)):
        resolved = window_of(client) if client is not None else None
        out[key] = resolved.prompt_limit(reply_allowance(client)) if resolved else None
    return out


__all__ = [
    "MODEL_WINDOWS",
    "TABLE_DATE",
    "ResolvedWindow",
    "Window",
    "awindow_of",
    "budget_windows",
    "check_fits",
    "input_window",
    "reply_allowance",
    "table_window",
    "window_of",
]
