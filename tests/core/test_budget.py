"""Limits, the budget tree and the limit errors."""

from __future__ import annotations

import threading
import time

import pytest

from rlm.base.errors import (
    BudgetExceededError,
    ErrorThresholdExceededError,
    RLMLimitError,
    TimeoutExceededError,
    TokenLimitExceededError,
)
from rlm.base.types import ModelUsageSummary
from rlm.core.budget import Breach, BudgetNode, Limits, breach_error, find_breach

# -- find_breach -----------------------------------------------------------------------


def test_no_limits_never_breach() -> None:
    assert find_breach(Limits(), elapsed=1e9, spent_usd=1e9, tokens=10**12) is None


def test_each_kind() -> None:
    assert find_breach(Limits(max_timeout=1.0), elapsed=1.5) == Breach("timeout", 1.5, 1.0)
    assert find_breach(Limits(max_errors=3), consecutive_errors=3) == Breach("errors", 3, 3)
    assert find_breach(Limits(max_budget=0.5), spent_usd=0.75) == Breach("budget", 0.75, 0.5)
    assert find_breach(Limits(max_tokens=100), tokens=101) == Breach("tokens", 101, 100)


def test_boundaries() -> None:
    # Time, money and tokens may reach the limit; errors may not.
    assert find_breach(Limits(max_timeout=1.0), elapsed=1.0) is None
    assert find_breach(Limits(max_budget=0.5), spent_usd=0.5) is None
    assert find_breach(Limits(max_tokens=100), tokens=100) is None
    assert find_breach(Limits(max_errors=3), consecutive_errors=2) is None
    assert find_breach(Limits(max_errors=0), consecutive_errors=0) is not None


def test_precedence_timeout_errors_budget_tokens() -> None:
    limits = Limits(max_budget=1.0, max_timeout=1.0, max_tokens=10, max_errors=1)
    everything = {"elapsed": 2.0, "spent_usd": 2.0, "tokens": 20, "consecutive_errors": 1}
    assert find_breach(limits, **everything).kind == "timeout"  # type: ignore[union-attr]
    everything["elapsed"] = 0.0
    assert find_breach(limits, **everything).kind == "errors"  # type: ignore[union-attr]
    everything["consecutive_errors"] = 0
    assert find_breach(limits, **everything).kind == "budget"  # type: ignore[union-attr]
    everything["spent_usd"] = 0.0
    assert find_breach(limits, **everything).kind == "tokens"  # type: ignore[union-attr]
    everything["tokens"] = 0
    assert find_breach(limits, **everything) is None


# -- BudgetNode ------------------------------------------------------------------------


def usage(
    calls: int = 1, tin: int = 10, tout: int = 5, cost: float | None = 0.01
) -> ModelUsageSummary:
    return ModelUsageSummary(calls, tin, tout, cost)


def test_charge_propagates_to_every_ancestor() -> None:
    root = BudgetNode(Limits())
    child = root.child(Limits())
    grandchild = child.child(Limits())
    grandchild.charge("m", usage())
    child.charge("n", usage(tin=100, cost=None))
    assert grandchild.tokens == 15
    assert child.tokens == 15 + 105
    assert root.tokens == 15 + 105
    assert root.spent_usd == pytest.approx(0.01)
    assert set(root.usage.model_usage_summaries) == {"m", "n"}
    assert set(grandchild.usage.model_usage_summaries) == {"m"}
    assert grandchild.parent is child and child.parent is root


def test_charge_copies_the_usage() -> None:
    node = BudgetNode()
    u = usage()
    node.charge("m", u)
    node.charge("m", u)
    assert u.total_calls == 1  # the caller's object is never mutated
    assert node.usage.model_usage_summaries["m"].total_calls == 2


def test_usage_is_a_snapshot() -> None:
    node = BudgetNode()
    node.charge("m", usage())
    snap = node.usage
    snap.model_usage_summaries["m"].total_calls = 999
    assert node.usage.model_usage_summaries["m"].total_calls == 1


def test_charge_is_thread_safe() -> None:
    root = BudgetNode()
    children = [root.child(Limits()) for _ in range(8)]
    start = threading.Barrier(8)

    def work(node: BudgetNode, model: str) -> None:
        start.wait()
        for _ in range(1000):
            node.charge(model, ModelUsageSummary(1, 3, 2, 0.001))

    threads = [threading.Thread(target=work, args=(c, f"m{i % 2}")) for i, c in enumerate(children)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not any(t.is_alive() for t in threads)
    total = root.usage
    assert total.total_calls == 8000
    assert total.total_input_tokens == 24000
    assert total.total_output_tokens == 16000
    assert total.model_usage_summaries["m0"].total_calls == 4000
    assert total.total_cost == pytest.approx(8.0)
    for child in children:
        assert child.usage.total_calls == 1000
        assert child.tokens == 5000


def test_child_limits_are_the_remainders() -> None:
    node = BudgetNode(Limits(max_budget=1.0, max_timeout=100.0, max_tokens=1000, max_errors=7))
    node.charge("m", ModelUsageSummary(1, 300, 100, 0.25))
    lim = node.child_limits(Limits(max_errors=3))
    assert lim.max_budget == pytest.approx(0.75)
    assert lim.max_tokens == 600
    assert lim.max_timeout is not None and 90.0 < lim.max_timeout <= 100.0
    assert lim.max_errors == 3  # inherited, not a remainder
    assert node.child(Limits(max_errors=3)).limits.max_budget == pytest.approx(0.75)


def test_child_limits_never_negative_and_none_stays_none() -> None:
    node = BudgetNode(Limits(max_budget=0.1, max_timeout=0.5, max_tokens=10))
    node.started -= 5  # pretend it has been running for a while
    node.charge("m", ModelUsageSummary(1, 100, 100, 1.0))
    lim = node.child_limits(Limits())
    assert lim == Limits(max_budget=0.0, max_timeout=0.0, max_tokens=0, max_errors=None)
    assert BudgetNode().child_limits(Limits()) == Limits()


def test_elapsed_grows() -> None:
    node = BudgetNode()
    first = node.elapsed
    time.sleep(0.01)
    assert node.elapsed > first >= 0


# -- breach_error ----------------------------------------------------------------------


def test_timeout_error() -> None:
    err = breach_error(Breach("timeout", 12.34, 10.0), "partial", 3)
    assert isinstance(err, TimeoutExceededError) and isinstance(err, RLMLimitError)
    assert err.partial_answer == "partial"
    assert err.elapsed == 12.34 and err.timeout == 10.0
    assert str(err) == "Timeout exceeded after iteration 3: 12.3s of 10.0s limit"


def test_timeout_before_first_iteration_message() -> None:
    err = breach_error(Breach("timeout", 2.0, 1.0), None, 0)
    assert "before the first iteration" in str(err)
    assert err.partial_answer is None


def test_errors_error() -> None:
    err = breach_error(Breach("errors", 3, 3), "p", 5, "ZeroDivisionError: division by zero")
    assert isinstance(err, ErrorThresholdExceededError)
    assert err.error_count == 3 and err.threshold == 3
    assert err.last_error == "ZeroDivisionError: division by zero"
    assert err.partial_answer == "p"
    assert str(err) == "Error threshold exceeded: 3 consecutive errors (limit: 3)"


def test_budget_error() -> None:
    err = breach_error(Breach("budget", 0.0123, 0.01), "p", 2)
    assert isinstance(err, BudgetExceededError)
    assert err.spent == 0.0123 and err.budget == 0.01
    assert err.partial_answer == "p"
    assert str(err) == "Budget exceeded after iteration 2: spent $0.012300 of $0.010000 budget"


def test_tokens_error() -> None:
    err = breach_error(Breach("tokens", 12345, 1000), None, 1)
    assert isinstance(err, TokenLimitExceededError)
    assert err.tokens_used == 12345 and err.token_limit == 1000
    assert err.partial_answer is None
    assert str(err) == "Token limit exceeded after iteration 1: 12,345 of 1,000 tokens"


def test_limit_errors_are_exported_by_rlm() -> None:
    import rlm

    for cls in (
        BudgetExceededError,
        TimeoutExceededError,
        TokenLimitExceededError,
        ErrorThresholdExceededError,
    ):
        assert getattr(rlm, cls.__name__) is cls
