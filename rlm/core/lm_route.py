"""``LMRoute``: what an in-process environment holds to reach the session's handler.

It is the boundary between REPL code and the handler: the model names REPL code passes
are checked against the handler's ``model_policy`` here, and a batch's length against
``max_batch_size`` before anything else. A refused call comes back as an ``error``
completion (the REPL shows ``Error: <error>``).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from rlm.base.errors import BudgetExhaustedError
from rlm.base.types import Prompt, RLMChatCompletion, UsageSummary
from rlm.core.model_policy import ModelNotAllowedError, UnpricedModelError

if TYPE_CHECKING:
    from rlm.base.events import RunScope
    from rlm.core.budget import BudgetNode
    from rlm.core.lm_handler import LMHandler

# A call that was not made for one of these reasons reads just the reason.
REFUSALS = (BudgetExhaustedError, ModelNotAllowedError, UnpricedModelError)


def preview(prompt: Prompt, limit: int = 80) -> str:
    if isinstance(prompt, str):
        text = prompt
    elif isinstance(prompt, dict):
        text = str(prompt.get("content", ""))
    elif isinstance(prompt, list) and prompt:
        last = prompt[-1]
        text = str(last.get("content", "")) if isinstance(last, dict) else str(last)
    else:
        text = str(prompt)
    return text[:limit]


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


class LMRoute:
    """What an in-process environment holds: the handler bound to one depth, one usage
    sink and one run's event scope. ``llm_query`` raises on failure;
    ``llm_query_batched`` reports failures per item in ``RLMChatCompletion.error``."""

    __slots__ = ("depth", "handler", "scope", "sink")

    def __init__(
        self,
        handler: LMHandler,
        depth: int,
        sink: BudgetNode | None = None,
        scope: RunScope | None = None,
    ) -> None:
        self.handler = handler
        self.depth = depth
        self.sink = sink
        self.scope = scope

    def remaining(self) -> dict[str, Any]:
        """The REPL's ``budget()``: what remains of the run's limits."""
        if self.sink is None:
            return {"calls": None, "tokens": None, "usd": None, "seconds": None}
        return self.sink.remaining()

    def llm_query(self, prompt: Prompt, model: str | None = None) -> RLMChatCompletion:
        """One call; a refused call (model, reservation) comes back as an ``error``
        completion."""
        started = time.perf_counter()
        try:
            self.handler.model_policy.check(model)
        except ModelNotAllowedError as exc:
            return failed_completion(model or "", prompt, exc, started)
        scope = self.scope
        if scope is None or not scope.bus.active:
            try:
                return self.handler.call(prompt, model, self.depth, self.sink)
            except REFUSALS as exc:
                return failed_completion(model or "", prompt, exc, started)
        scope.emit(
            "subcall_started", kind="llm", model=model, prompt_preview=preview(prompt), count=1
        )
        error, result = None, None
        try:
            result = self.handler.call(prompt, model, self.depth, self.sink)
            return result
        except REFUSALS as exc:
            error = str(exc)
            return failed_completion(model or "", prompt, exc, started)
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            scope.emit(
                "subcall_finished",
                kind="llm",
                model=result.root_model if result else model,
                duration=time.perf_counter() - started,
                usage=result.usage_summary if result else None,
                error=error,
            )

    def llm_query_batched(
        self, prompts: list[Prompt], model: str | None = None
    ) -> list[RLMChatCompletion]:
        """Every prompt, concurrently; raises ``BatchTooLargeError`` (naming
        ``max_batch_size``) for a batch over the cap, before anything else."""
        self.handler.check_batch_size(len(prompts))
        if not self.handler.model_policy.allows(model):
            started = time.perf_counter()
            exc = ModelNotAllowedError(str(model), self.handler.model_policy.names)
            return [failed_completion(str(model), p, exc, started) for p in prompts]
        scope = self.scope
        if scope is None or not scope.bus.active:
            return self.handler.call_batched(prompts, model, self.depth, self.sink)
        scope.emit(
            "subcall_started",
            kind="llm",
            model=model,
            prompt_preview=preview(prompts[0]) if prompts else "",
            count=len(prompts),
        )
        started = time.perf_counter()
        results = self.handler.call_batched(prompts, model, self.depth, self.sink)
        usage = UsageSummary()
        for r in results:
            usage.merge(r.usage_summary)
        errors = [r.error for r in results if r.error]
        scope.emit(
            "subcall_finished",
            kind="llm",
            model=model,
            duration=time.perf_counter() - started,
            usage=usage,
            error=f"{len(errors)} of {len(results)} failed: {errors[0]}" if errors else None,
        )
        return results


__all__ = ["REFUSALS", "LMRoute", "failed_completion", "preview"]
