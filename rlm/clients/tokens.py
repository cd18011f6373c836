"""Token estimates and model context limits, without a tokenizer dependency.

``tiktoken`` is used when installed; otherwise tokens are estimated as characters / 4,
which is close enough for budgets and for the compaction decision.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from rlm.clients.context_windows import MODEL_WINDOWS, table_window

DEFAULT_CONTEXT_LIMIT = 128_000

# Family -> the most input tokens a request may carry (``rlm.clients.context_windows``
# holds the table, its sources and date; this view stays for code written against it).
MODEL_CONTEXT_LIMITS: dict[str, int] = {name: w.input for name, w in MODEL_WINDOWS.items()}


def get_context_limit(model_name: str | None) -> int:
    """The most input tokens ``model_name`` takes, from the table (provider prefixes like
    ``openai/`` ignored); ``DEFAULT_CONTEXT_LIMIT`` for a model the table does not know.
    A client's own window (override, provider) is ``context_windows.window_of``."""
    window = table_window(model_name)
    return window.input if window is not None else DEFAULT_CONTEXT_LIMIT


def _text_of(prompt: Any) -> list[str]:
    if isinstance(prompt, str):
        return [prompt]
    if isinstance(prompt, dict):
        content = prompt.get("content", "")
        if isinstance(content, list):
            return [p.get("text", "") if isinstance(p, dict) else str(p) for p in content]
        return [str(content)]
    if isinstance(prompt, list | tuple):
        return [t for item in prompt for t in _text_of(item)]
    return [str(prompt)]


@lru_cache(maxsize=1)
def _tiktoken_encoding() -> Any:
    try:
        import tiktoken

        return tiktoken.get_encoding("o200k_base")
    except Exception:
        return None


def estimate_tokens(prompt: Any) -> int:
    """Character-based estimate: ceil(chars / 4), plus 4 per chat message."""
    parts = _text_of(prompt)
    chars = sum(len(p) for p in parts)
    overhead = 4 * len(prompt) if isinstance(prompt, list | tuple) else 0
    return (chars + 3) // 4 + overhead


def counts_exactly(model_name: str | None = None) -> bool:
    """True if ``count_tokens`` is exact for ``model_name``: tiktoken is installed (with
    its encoding) and the model is OpenAI's; otherwise the count is an estimate."""
    if _tiktoken_encoding() is None:
        return False
    name = (model_name or "").lower().rsplit("/", 1)[-1]
    return name.startswith(("gpt-", "o1", "o3", "o4", "chatgpt"))


def count_tokens(messages: Any, model_name: str | None = None) -> int:
    """Token count of a prompt: exact with tiktoken, estimated otherwise."""
    enc = _tiktoken_encoding()
    if enc is None:
        return estimate_tokens(messages)
    parts = _text_of(messages)
    overhead = 4 * len(messages) if isinstance(messages, list | tuple) else 0
    return sum(len(enc.encode(p, disallowed_special=())) for p in parts) + overhead
