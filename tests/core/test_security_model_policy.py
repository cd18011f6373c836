"""Security hardening, finding 4: REPL code may only name models the operator
registered, and with ``max_budget`` a model of unknown price stops with a clear error.

The allowlist is checked where REPL code reaches the handler (``LMRoute``, the handler
socket, ``rlm_query``); Python callers of the handler and of ``RLM._subcall`` are not
restricted. A client that reports its own cost (``reports_cost``) needs no price.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from unittest import mock

import pytest

import rlm.core.rlm
from rlm import RLM
from rlm.base.wire import LMRequest, send_lm_request, send_lm_request_batched
from rlm.clients.base_lm import BaseLM
from rlm.clients.pricing import register_price
from rlm.clients.scripted import ScriptedLM
from rlm.core.budget import BudgetNode, Limits
from rlm.core.lm_handler import LMHandler
from rlm.environments.local_repl import LocalREPL

UNPRICED = "unpriced-sec-model"  # no pricing entry: its price is unknown
CHEAP = "cheap-sec-model"
register_price(CHEAP, 0.05, 0.40)
BIG = "x" * 400_000  # ~100K tokens


def _repl(code: str) -> str:
    return f"```repl\n{code}\n```"


class Clients:
    """Stands in for ``get_client``: a ScriptedLM per model name, recording creations.
    ``priced`` clients report their cost (``cost_per_token``), others report none."""

    def __init__(self, root_code: str, priced: bool = True) -> None:
        self.root_code = root_code
        self.priced = priced
        self.made: list[str] = []
        self.called: dict[str, int] = {}
        self._lock = threading.Lock()

    def __call__(self, backend: str, backend_kwargs: dict[str, Any]) -> BaseLM:
        name = str(backend_kwargs.get("model_name"))
        with self._lock:
            self.made.append(name)

        def reply(prompt: Any) -> str:
            with self._lock:
                self.called[name] = self.called.get(name, 0) + 1
            if isinstance(prompt, list) and "ROOT" in str(prompt[1]["content"]):
                return _repl(self.root_code + "\nanswer['content'] = out\nanswer['ready'] = True")
            return f"from {name}"

        cost = 1e-9 if self.priced else None
        return ScriptedLM(model_name=name, responder=reply, cost_per_token=cost)


@contextmanager
def rlm_with(clients: Clients, **kwargs: Any) -> Iterator[RLM]:
    kwargs.setdefault("backend_kwargs", {"model_name": CHEAP})
    with (
        mock.patch.object(rlm.core.rlm, "get_client", clients),
        RLM(backend="openai", **kwargs) as r,
    ):
        yield r


def _answer(clients: Clients, **kwargs: Any) -> str:
    with rlm_with(clients, **kwargs) as r:
        return r.completion("ctx", root_prompt="ROOT").response


# -- the allowlist ---------------------------------------------------------------------


def test_repl_cannot_name_an_unregistered_model() -> None:
    clients = Clients("out = llm_query('hi', model='o1-pro')")
    answer = _answer(clients)
    assert answer.startswith("Error: model 'o1-pro' is not available")
    assert "allowed_models" in answer and CHEAP in answer
    assert "o1-pro" not in clients.made


def test_batched_and_rlm_query_are_checked_too() -> None:
    code = (
        "a = llm_query_batched(['1', '2'], model='o1-pro')\n"
        "b = rlm_query('task', model='o1-pro')\n"
        "out = repr((a, b))"
    )
    clients = Clients(code)
    answer = _answer(clients, max_depth=2)
    assert answer.count("is not available") == 3, answer
    assert "o1-pro" not in clients.made


def test_registered_models_are_allowed() -> None:
    code = (
        f"out = repr((llm_query('a', model={CHEAP!r}), llm_query('b', model='helper'), "
        "llm_query('c', model='extra')))"
    )
    clients = Clients(code)
    answer = _answer(
        clients,
        other_backends=["openai"],
        other_backend_kwargs=[{"model_name": "helper"}],
        allowed_models=["extra"],
    )
    assert answer == repr((f"from {CHEAP}", "from helper", "from extra"))


def test_allowed_models_star_opts_out() -> None:
    clients = Clients("out = llm_query('hi', model='anything-goes')")
    assert _answer(clients, allowed_models="*") == "from anything-goes"


def test_allowed_models_is_validated() -> None:
    with pytest.raises(ValueError, match="allowed_models"):
        RLM(backend="openai", backend_kwargs={"model_name": CHEAP}, allowed_models="gpt-5")


def test_socket_server_refuses_an_unregistered_model() -> None:
    made: list[str] = []

    def factory(model: str) -> BaseLM:
        made.append(model)
        return ScriptedLM(model_name=model, responses=["made"])

    handler = LMHandler(ScriptedLM(model_name="m", responses=["ok"]), client_factory=factory)
    try:
        address = handler.start()
        single = send_lm_request(address, LMRequest(prompt="x", model="o1-pro"))
        batched = send_lm_request_batched(address, ["a", "b"], model="o1-pro")
        fine = send_lm_request(address, LMRequest(prompt="x", model="m"))
    finally:
        handler.close()
    assert not single.success and "model 'o1-pro' is not available" in (single.error or "")
    assert all("model 'o1-pro' is not available" in (r.error or "") for r in batched)
    assert fine.success
    assert made == []


def test_local_repl_route_refuses_an_unregistered_model() -> None:
    handler = LMHandler(ScriptedLM(model_name="m", responses=["ok"]))
    repl = LocalREPL(lm_route=handler.route(1))
    try:
        result = repl.execute_code("print(llm_query('x', model='o1-pro'))")
    finally:
        repl.cleanup()
        handler.close()
    assert result.stdout.startswith("Error: model 'o1-pro' is not available")


def test_python_callers_are_not_restricted() -> None:
    made: list[str] = []

    def factory(model: str) -> BaseLM:
        made.append(model)
        return ScriptedLM(model_name=model, responses=["direct"])

    handler = LMHandler(ScriptedLM(model_name="m", responses=["ok"]), client_factory=factory)
    try:
        assert handler.call("x", "o1-pro").response == "direct"
    finally:
        handler.close()
    clients = Clients("out = 'unused'")
    with rlm_with(clients) as r:  # at the depth limit: one plain call
        assert r._subcall("task", model="o1-pro").response == "from o1-pro"


# -- unknown prices under max_budget ---------------------------------------------------


def test_unpriced_model_is_refused_under_max_budget() -> None:
    """The cell called an unpriced model 20 times with 100K tokens; the run reported
    almost nothing spent, because an unknown price counted as 0."""
    code = f"out = [llm_query('x' * 400_000, model={UNPRICED!r}) for _ in range(20)][-1]"
    clients = Clients(code, priced=False)
    with rlm_with(clients, max_budget=0.50, allowed_models=[UNPRICED]) as r:
        answer = r.completion("ctx", root_prompt="ROOT").response
    assert answer.startswith(f"Error: model {UNPRICED!r} has no known price")
    assert "register_price" in answer
    assert clients.called.get(UNPRICED, 0) == 0


def test_unpriced_model_refused_at_the_handler() -> None:
    made: list[str] = []

    def factory(model: str) -> BaseLM:
        made.append(model)
        return ScriptedLM(model_name=model, responses=["free?"])  # reports no cost

    handler = LMHandler(ScriptedLM(model_name=CHEAP, responses=["ok"]), client_factory=factory)
    node = BudgetNode(Limits(max_budget=0.5))
    try:
        with pytest.raises(ValueError, match="has no known price"):
            handler.call(BIG, UNPRICED, 1, node)
        batch = handler.call_batched([BIG, BIG], UNPRICED, 1, node)
        assert all("has no known price" in (r.error or "") for r in batch)
        assert handler.clients[UNPRICED].prompts == []  # type: ignore[attr-defined]
        assert handler.call("x", CHEAP, 1, node).response == "ok"  # priced: fine
    finally:
        handler.close()


def test_a_registered_price_or_a_cost_reporting_client_is_enough() -> None:
    node = BudgetNode(Limits(max_budget=0.5))
    reporting = ScriptedLM(model_name="self-reporting-sec", responses=["r"], cost_per_token=1e-9)
    silent = ScriptedLM(model_name="registered-sec", responses=["s"])
    assert reporting.reports_cost and not silent.reports_cost
    register_price("registered-sec", 1.0, 2.0)
    handler = LMHandler(reporting)
    try:
        handler.register_client("registered-sec", silent)
        assert handler.call("x", None, 1, node).response == "r"
        assert handler.call("x", "registered-sec", 1, node).response == "s"
    finally:
        handler.close()
    assert node.spent_usd > 0


def test_free_local_client_declares_that_it_reports_cost() -> None:
    from rlm.clients.llama_cpp import LlamaCppClient

    assert LlamaCppClient.reports_cost is True


def test_without_max_budget_unknown_prices_are_fine() -> None:
    node = BudgetNode(Limits(max_llm_calls=5))
    handler = LMHandler(ScriptedLM(model_name=UNPRICED, responses=["ok"]))
    try:
        assert handler.call("x", None, 1, node).response == "ok"
    finally:
        handler.close()
