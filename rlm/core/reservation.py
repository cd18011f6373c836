"""What an LM call may cost, estimated before it is made, and its reservation.

Calls: one. Tokens: the prompt's estimated input tokens plus the output allowance (the
client's sampling ``max_tokens``, or ``DEFAULT_OUTPUT_TOKENS``). USD: those tokens at
the model's price from ``rlm.clients.pricing``; for a model with no known price, at
the rate the model has cost so far in this tree. A model with neither, whose client
does not report its own cost (``reports_cost``), is refused with
``UnpricedModelError`` when ``max_budget`` is set: an unknown price is never counted
as free. A client that reports its cost is reserved at 0 until its first call.
Set a sampling ``max_tokens`` and the estimate is an upper bound on the output.
"""

from __future__ import annotations

from typing import Any

from rlm.base.types import Prompt
from rlm.clients.pricing import estimate_cost
from rlm.clients.tokens import estimate_tokens
from rlm.core.budget import BudgetNode, Estimate
from rlm.core.model_policy import UnpricedModelError, reports_cost

DEFAULT_OUTPUT_TOKENS = 1024
_OUTPUT_KEYS = ("max_tokens", "max_completion_tokens", "max_output_tokens")


def output_allowance(client: Any) -> int:
    """The most output tokens a call to ``client`` is expected to produce."""
    args = getattr(client, "sampling_args", None) or {}
    for key in _OUTPUT_KEYS:
        value = args.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return DEFAULT_OUTPUT_TOKENS


def estimate_call(node: BudgetNode, client: Any, model: str, prompt: Prompt) -> Estimate:
    """The estimate to reserve on ``node``; tokens and USD only when a limit needs them."""
    wants_usd = node.needs("budget")
    if not (wants_usd or node.needs("tokens")):
        return Estimate(calls=1)
    tokens_in, tokens_out = estimate_tokens(prompt), output_allowance(client)
    usd = _usd(node, client, model, tokens_in, tokens_out) if wants_usd else 0.0
    return Estimate(calls=1, tokens=tokens_in + tokens_out, usd=usd)


def _usd(node: BudgetNode, client: Any, model: str, tokens_in: int, tokens_out: int) -> float:
    cost = estimate_cost(model, tokens_in, tokens_out)
    if cost is not None:
        return cost
    rate = node.cost_per_token(model)
    if rate is not None:
        return rate * (tokens_in + tokens_out)
    if reports_cost(client):
        return 0.0  # the real cost arrives with the call, and prices later ones
    raise UnpricedModelError(model)


def require_price(node: BudgetNode, client: Any, model: str) -> None:
    """Raise ``UnpricedModelError`` if a call to ``model`` could not be priced under
    ``node``'s ``max_budget`` (a batch checks once, before any work)."""
    if node.guarded and node.needs("budget"):
        _usd(node, client, model, 0, 0)


def reserve_call(node: BudgetNode, client: Any, model: str, prompt: Prompt) -> Estimate | None:
    """Reserve one call on ``node`` (``None`` when the tree has no limits). Raises
    ``BudgetExhaustedError`` when the call would break a limit, ``UnpricedModelError``
    when ``max_budget`` is set and the call cannot be priced."""
    if not node.guarded:
        return None
    return node.reserve(estimate_call(node, client, model, prompt))
