"""Token estimates and model context limits, without a tokenizer dependency.

``tiktoken`` is used when installed; otherwise tokens are estimated as characters / 4,
which is close enough for budgets and for the compaction decision.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

DEFAULT_CONTEXT_LIMIT = 128_000

# Prefix -> the most input tokens a request may carry. Longest matching prefix wins;
# a name such as "us.anthropic.claude-..." (Bedrock) matches on its last dotted part.
MODEL_CONTEXT_LIMITS: dict[str, int] = {
    "gpt-5": 272_000,  # the input limit (the 400K window includes 128K of output)
    "gpt-4.1": 1_047_576,
    "gpt-4o": 128_000,
    "gpt-4-turbo": 128_000,
    "gpt-4": 8_192,
    "gpt-3.5": 16_385,
    "o1": 200_000,
    "o3": 200_000,
    "o4": 200_000,
    "claude": 200_000,
    "gemini-1.5": 1_000_000,
    "gemini-2": 1_000_000,
    "gemini": 1_000_000,
    "llama-3": 128_000,
    "qwen": 128_000,
    "smollm2": 8_192,
    "gemma-3": 32_768,
}


def get_context_limit(model_name: str | None) -> int:
    """Context window of ``model_name`` (provider prefixes like ``openai/`` ignored)."""
    name = (model_name or "").lower().rsplit("/", 1)[-1]
    candidates = {name, *(name[i + 1 :] for i, ch in enumerate(name) if ch == ".")}
    best = ""
    for prefix in MODEL_CONTEXT_LIMITS:
        if len(prefix) > len(best) and any(c.startswith(prefix) for c in candidates):
            best = prefix
    return MODEL_CONTEXT_LIMITS[best] if best else DEFAULT_CONTEXT_LIMIT


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


def count_tokens(messages: Any, model_name: str | None = None) -> int:
    """Token count of a prompt: exact with tiktoken, estimated otherwise."""
    enc = _tiktoken_encoding()
    if enc is None:
        return estimate_tokens(messages)
    parts = _text_of(messages)
    overhead = 4 * len(messages) if isinstance(messages, list | tuple) else 0
    return sum(len(enc.encode(p, disallowed_special=())) for p in parts) + overhead
