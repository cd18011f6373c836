"""One LM call, written once: reserve, send, then charge or release.

``charged`` is a call as a generator: it reserves the call's estimated cost on the
caller's budget node (``rlm.core.reservation``; a refused reservation raises before
anything is sent), yields a ``Send`` for its driver to perform through the governor
(``rlm.core.lm_pipeline``: in this thread, or on the running loop), receives the
``LMResult`` and charges the call's real usage to the node; if the send raised, the
driver closes the flow, which releases the reservation. The ``Send`` also says what the
call is for (``CallPurpose``, told to the client) and which run's events it belongs to
(``scope``: its retries are announced there). A sub-call's prompt is first checked
against its model's context window (``rlm.clients.context_windows.check_fits``): one
that cannot fit is refused like an over-budget call, and so is a prompt with images for
a model without vision (``rlm.clients.vision.check_images``); a completion keeps its
prompt's images as a summary (``rlm.base.images.loggable``), never their bytes.
``completion_of`` and ``failed_completion`` are the two ways a call ends up as an ``RLMChatCompletion``.
"""

from __future__ import annotations

import time
from collections.abc import Generator
from typing import TYPE_CHECKING, NamedTuple

from rlm.base.errors import (
    BudgetExhaustedError,
    ContextWindowExceededError,
    ImagesNotSupportedError,
)
from rlm.base.images import loggable
from rlm.base.types import Prompt, RLMChatCompletion, UsageSummary
from rlm.clients.base_lm import CallPurpose
from rlm.clients.context_windows import check_fits
from rlm.clients.vision import check_images
from rlm.core.model_policy import ModelNotAllowedError, UnpricedModelError
from rlm.core.reservation import reserve_call

if TYPE_CHECKING:
    from rlm.base.cancel import CancelToken
    from rlm.base.events import RunScope
    from rlm.base.json_schema import ResponseSchema
    from rlm.clients.base_lm import LMResult
    from rlm.core.budget import BudgetNode
    from rlm.core.lm_router import Route

# A call that was not made for one of these reasons reads just the reason.
REFUSALS = (
    BudgetExhaustedError,
    ContextWindowExceededError,
    ImagesNotSupportedError,
    ModelNotAllowedError,
    UnpricedModelError,
)


class Send(NamedTuple):
    """What a driver sends, through the governor, for one call."""

    route: Route
    prompt: Prompt
    token: CancelToken | None
    purpose: CallPurpose = CallPurpose.SUBCALL
    scope: RunScope | None = None  # the run that makes the call (its events)
    schema: ResponseSchema | None = None  # structured output, where the client has it


# One call: yields its ``Send``, receives the ``LMResult`` and returns the completion;
# closed instead when the send failed.
Flow = Generator[Send, "LMResult", RLMChatCompletion]


def completion_of(
    name: str, prompt: Prompt, result: LMResult, started: float, images: bool = True
) -> RLMChatCompletion:
    """The completion of a call that returned ``result``, with that call's own usage.
    ``images=False``: ``prompt`` is the engine's own (a root conversation), which holds
    no image, so it is not scanned for one."""
    return RLMChatCompletion(
        root_model=name,
        prompt=loggable(prompt) if images else prompt,  # image bytes never reach a log
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
        prompt=loggable(prompt),
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
    schema: ResponseSchema | None = None,
) -> Flow:
    """One call of the pipeline: reserve on ``sink``, send, then charge or release. A
    sub-call whose prompt cannot fit its model's window raises
    ``ContextWindowExceededError`` first, before anything is reserved or sent."""
    started = time.perf_counter()
    subcall = purpose is CallPurpose.SUBCALL
    if subcall:  # the engine's own calls carry no image, and the root is not guarded
        check_images(route.client, prompt)
        check_fits(route.client, prompt)
    hold = None
    if sink is not None and sink.guarded:
        hold = reserve_call(sink, route.client, route.name, prompt)
    try:
        token = sink.token if sink is not None else None
        result = yield Send(route, prompt, token, purpose, scope, schema)
    except BaseException:  # GeneratorExit: the send failed and the driver closed the flow
        if hold is not None:
            assert sink is not None
            sink.release(hold)
        raise
    if sink is not None:
        sink.settle(route.name, result.usage, hold)
    return completion_of(route.name, prompt, result, started, images=subcall)


__all__ = ["REFUSALS", "Flow", "Send", "charged", "completion_of", "failed_completion"]
