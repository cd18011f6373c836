"""What an LM call may cost, estimated before it is made, and its reservation.

Calls: one. Tokens: the prompt's estimated input tokens plus the output allowance (the
client's sampling ``max_tokens``, or ``DEFAULT_OUTPUT_TOKENS``). USD: those tokens at
the model's price from ``rlm.clients.pricing``; for a model with no known price, at
the rate the model has cost so far in this tree (nothing before its first call).
Set a sampling ``max_tokens`` and the estimate is an upper bound on the output.
"""

from __future__ import annotations

from typing import Any

from rlm.clients.pricing import estimate_cost
from rlm.core.budget import BudgetNode, Estimate
from rlm.core.types import Prompt
from rlm.utils.token_utils import estimate_tokens

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
    usd = 0.0
    if wants_usd:
        cost = estimate_cost(model, tokens_in, tokens_out)
        if cost is None:
            rate = node.cost_per_token(model)
            cost = rate * (tokens_in + tokens_out) if rate is not None else 0.0
        usd = cost
    return Estimate(calls=1, tokens=tokens_in + tokens_out, usd=usd)


def reserve_call(node: BudgetNode, client: Any, model: str, prompt: Prompt) -> Estimate | None:
    """Reserve one call on ``node`` (``None`` when the tree has no limits). Raises
    ``BudgetExhaustedError`` when the call would break a limit."""
    if not node.guarded:
        return None
    return node.reserve(estimate_call(node, client, model, prompt))
