"""Usage arithmetic for the viewer, on the plain dicts found in logs.

A log holds usage in two shapes: ``UsageSummary.to_dict()`` (per model) and
``ModelUsageSummary.to_dict()`` (one model). Both become one flat ``Usage`` with short
keys, because it is embedded once per node in the page.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any, TypedDict


class Usage(TypedDict, total=False):
    """Totals for one node. ``cost`` is absent when no price was known."""

    calls: int
    input: int
    output: int
    cost: float
    cached: int  # calls the call cache answered (RLM(cache=...)); absent when none
    models: dict[str, Usage]  # only on run totals


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _one_model(data: Mapping[str, Any]) -> Usage:
    out: Usage = {
        "calls": _int(data.get("total_calls")),
        "input": _int(data.get("total_input_tokens")),
        "output": _int(data.get("total_output_tokens")),
    }
    cost = data.get("total_cost")
    if isinstance(cost, int | float) and not isinstance(cost, bool) and math.isfinite(cost):
        out["cost"] = float(cost)
    cached = _int(data.get("cached_calls"))
    if cached > 0:
        out["cached"] = cached
    return out


def parse_usage(data: Any, *, with_models: bool = False) -> Usage | None:
    """Read either usage shape; None when ``data`` holds no usage at all."""
    if not isinstance(data, Mapping):
        return None
    per_model = data.get("model_usage_summaries")
    if isinstance(per_model, Mapping):
        models = {str(m): _one_model(s) for m, s in per_model.items() if isinstance(s, Mapping)}
        total = add_usage(models.values())
        if with_models and models:
            total["models"] = models
        return total
    if any(k in data for k in ("total_calls", "total_input_tokens", "total_output_tokens")):
        return _one_model(data)
    return None


def add_usage(items: Iterable[Usage | None]) -> Usage:
    """Sum usages; the cost stays absent unless at least one item had one."""
    total: Usage = {"calls": 0, "input": 0, "output": 0}
    for item in items:
        if not item:
            continue
        total["calls"] += item.get("calls", 0)
        total["input"] += item.get("input", 0)
        total["output"] += item.get("output", 0)
        if "cost" in item:
            total["cost"] = total.get("cost", 0.0) + item["cost"]
        if item.get("cached"):
            total["cached"] = total.get("cached", 0) + item["cached"]
    return total
