"""USD prices per million tokens, for providers that do not report cost themselves.

Users extend it with ``register_price``. A model with no known price has cost ``None``
(never a guessed zero), so ``max_budget`` users can tell "free" from "unknown": under
``max_budget`` a call to such a model is refused (``UnpricedModelError``) unless its
client reports its own cost (``reports_cost``) or it has cost something already in the
call tree. ``register_price(name, 0, 0)`` declares a free model.
"""

from __future__ import annotations

import threading

# model-name prefix -> (input USD / 1M tokens, output USD / 1M tokens). Longest prefix wins.
_PRICES: dict[str, tuple[float, float]] = {
    "gpt-5-nano": (0.05, 0.40),
    "gpt-5-mini": (0.25, 2.00),
    "gpt-5": (1.25, 10.00),
    "gpt-4.1-nano": (0.10, 0.40),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4o": (2.50, 10.00),
    "o4-mini": (1.10, 4.40),
    "o3": (2.00, 8.00),
    "claude-opus-4": (15.00, 75.00),
    "claude-sonnet-4": (3.00, 15.00),
    "claude-3-5-haiku": (0.80, 4.00),
    "claude-haiku-4": (1.00, 5.00),
    "gemini-2.5-pro": (1.25, 10.00),
    "gemini-2.5-flash": (0.30, 2.50),
}
_lock = threading.Lock()


def register_price(model_prefix: str, input_per_million: float, output_per_million: float) -> None:
    """Set the price of every model whose name starts with ``model_prefix``."""
    if input_per_million < 0 or output_per_million < 0:
        raise ValueError("prices must be non-negative")
    with _lock:
        _PRICES[model_prefix] = (float(input_per_million), float(output_per_million))


def price_of(model: str) -> tuple[float, float] | None:
    name = model.rsplit("/", 1)[-1]
    with _lock:
        best = max((p for p in _PRICES if name.startswith(p)), key=len, default=None)
        return _PRICES[best] if best is not None else None


def estimate_cost(model: str, input_tokens: int, output_tokens: int) -> float | None:
    """Cost in USD, or ``None`` when the model's price is unknown."""
    price = price_of(model)
    if price is None:
        return None
    return (input_tokens * price[0] + output_tokens * price[1]) / 1_000_000
