"""One LM call, written once: reserve, send, then charge or release.

``charged`` is a call as a generator: it reserves the call's estimated cost on the
caller's budget node (``rlm.core.reservation``; a refused reservation raises before
anything is sent), yields a ``Send`` for its driver to perform through the governor
(``rlm.core.lm_pipeline``: in this thread, or on the running loop), receives the
``LMResult`` and charges the call's real usage to the node; if the send raised, the
driver closes the flow, which releases the reservation. The ``Send`` also says what the
call is for (``CallPurpose``, told to the client) and which run's events it belongs to
(``scope``: its retries are announced there). ``completion_of`` and
``failed_completion`` are the two ways a call ends up as an ``RLMChatCompletion``.
"""

from __future__ import annotations

import time
from collections.abc import Generator
from typing import TYPE_CHECKING, NamedTuple

from rlm.base.errors import BudgetExhaustedError
from rlm.base.types import Prompt, RLMChatCompletion, UsageSummary
from rlm.clients.base_lm import CallPurpose
from rlm.core.model_policy import ModelNotAllowedError, UnpricedModelError
from rlm.core.reservation import reserve_call

if TYPE_CHECKING:
    from rlm.base.cancel import CancelToken
    from rlm.base.events import RunScope
    from rlm.clients.base_lm import LMResult
    from rlm.core.budget import BudgetNode
    from rlm.core.lm_router import Route

# A call that was not made for one of these reasons reads just the reason.
REFUSALS = (BudgetExhaustedError, ModelNotAllowedError, UnpricedModelError)


class Send(NamedTuple):
    """What a driver sends, through the governor, for one call."""

    route: Route
    prompt: Prompt
    token: CancelToken | None
    purpose: CallPurpose = CallPurpose.SUBCALL
    scope: RunScope | None = None  # the run that makes the call (its events)


# One call: yields its ``Send``, receives the ``LMResult`` and returns the completion;
# closed instead when the send failed.
Flow = Generator[Send, "LMResult", RLMChatCompletion]


def completion_of(name: str, prompt: Prompt, result: LMResult, started: float) -> RLMChatCompletion:
    """The completion of a call that returned ``result``, with that call's own usage."""
    return RLMChatCompletion(
        root_model=name,
        prompt=prompt,
        response=result.text,
        usage_summary=UsageSummary({name: result.usage}),
        execution_time=time.perf_counter() - started,
    )


def failed_completion(
    name: str, prompt: Prompt, exc: BaseException, started: float
) -> RLMChatCompletion:
    """A completion for a call that failed (or was never made): the REPL shows the model
    ``Error: <error>``. A refused call reads its reason ("budget exhausted: ...",
    "model 'x' is not available ...")."""
    text = str(exc) if isinstance(exc, REFUSALS) else f"{type(exc).__name__}: {exc}"
    return RLMChatCompletion(
        root_model=name,
        prompt=prompt,
        response="",
        usage_summary=UsageSummary(),
        execution_time=time.perf_counter() - started,
        error=text,
    )


def charged(
    route: Route,
    prompt: Prompt,
    sink: BudgetNode | None,
    purpose: CallPurpose = CallPurpose.SUBCALL,
    scope: RunScope | None = None,
) -> Flow:
    """One call of the pipeline: reserve on ``sink``, send, then charge or release."""
    started = time.perf_counter()
    hold = None
    if sink is not None and sink.guarded:
        hold = reserve_call(sink, route.client, route.name, prompt)
    try:
        token = sink.token if sink is not None else None
        result = yield Send(route, prompt, token, purpose, scope)
    except BaseException:  # GeneratorExit: the send failed and the driver closed the flow
        if hold is not None:
            assert sink is not None
            sink.release(hold)
        raise
    if sink is not None:
        sink.settle(route.name, result.usage, hold)
    return completion_of(route.name, prompt, result, started)


__all__ = ["REFUSALS", "Flow", "Send", "charged", "completion_of", "failed_completion"]
