"""``LMRoute``: what an in-process environment holds to reach the session's calls.

It is the boundary between REPL code and the call pipeline (``rlm.core.lm_pipeline``):
the model names REPL code passes are checked against the model policy here, and a
batch's length against ``max_batch_size`` before anything else. A refused call comes
back as an ``error`` completion (the REPL shows ``Error: <error>``). While someone
listens to the run's events, each ``llm_query``/``llm_query_batched`` is announced by
``subcall_started`` and ``subcall_finished``. A call with a ``schema`` (the REPL's
``llm_query(..., schema=)``) is asked in rounds until its reply matches
(``rlm.core.typed_subcall``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from rlm.base.errors import ConfigurationError
from rlm.base.images import has_images, text_preview
from rlm.base.types import Prompt, RLMChatCompletion, UsageSummary
from rlm.clients.context_windows import budget_windows
from rlm.core.lm_call import REFUSALS, failed_completion
from rlm.core.model_policy import ModelNotAllowedError
from rlm.core.typed_subcall import SubcallSchema, ask_typed, refused

if TYPE_CHECKING:
    from rlm.base.events import RunScope
    from rlm.base.json_schema import ResponseSchema
    from rlm.core.budget import BudgetNode
    from rlm.core.lm_pipeline import CallPipeline
    from rlm.core.model_policy import ModelPolicy


def preview(prompt: Prompt, limit: int = 80) -> str:
    if isinstance(prompt, str):
        text = prompt
    elif has_images(prompt):  # their text and a summary of each: never their bytes
        text = text_preview(prompt)
    elif isinstance(prompt, dict):
        text = str(prompt.get("content", ""))
    elif isinstance(prompt, list) and prompt:
        last = prompt[-1]
        text = str(last.get("content", "")) if isinstance(last, dict) else str(last)
    else:
        text = str(prompt)
    return text[:limit]


class _Outcome:
    """What a sub-call's ``subcall_finished`` event reports."""

    __slots__ = ("error", "model", "usage")

    def __init__(self, model: str | None) -> None:
        self.model = model
        self.usage: UsageSummary | None = None
        self.error: str | None = None


class LMRoute:
    """What an in-process environment holds: the pipeline bound to one depth, one usage
    sink and one run's event scope. ``llm_query`` raises on failure;
    ``llm_query_batched`` reports failures per item in ``RLMChatCompletion.error``."""

    __slots__ = ("depth", "model", "pipeline", "policy", "scope", "sink")

    def __init__(
        self,
        pipeline: CallPipeline,
        policy: ModelPolicy,
        depth: int,
        sink: BudgetNode | None = None,
        scope: RunScope | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.policy = policy
        self.depth = depth
        self.sink = sink
        self.scope = scope
        self.model: str | None = None  # the model the run's own calls name (None: default)

    def remaining(self) -> dict[str, Any]:
        """The REPL's ``budget()``: what remains of the run's limits, and the most prompt
        tokens the run's own model (``context_window``) and ``llm_query``'s default model
        (``sub_context_window``) take (``None`` if unknown)."""
        left: dict[str, Any]
        if self.sink is None:
            left = {"calls": None, "tokens": None, "usd": None, "seconds": None}
        else:
            left = self.sink.remaining()
        router = self.pipeline.router
        left.update(budget_windows(router.get(self.model, 0), router.get(None, self.depth)))
        return left

    @contextmanager
    def _announced(self, model: str | None, prompts: list[Prompt]) -> Iterator[_Outcome]:
        """Emit ``subcall_started`` now and ``subcall_finished`` (with what the block
        put in the outcome, or the exception it raised) when the block ends."""
        assert self.scope is not None
        first = preview(prompts[0]) if prompts else ""
        self.scope.emit(
            "subcall_started", kind="llm", model=model, prompt_preview=first, count=len(prompts)
        )
        outcome, started = _Outcome(model), time.perf_counter()
        try:
            yield outcome
        except Exception as exc:
            outcome.error = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            self.scope.emit(
                "subcall_finished",
                kind="llm",
                model=outcome.model,
                duration=time.perf_counter() - started,
                usage=outcome.usage,
                error=outcome.error,
            )

    def _listened(self) -> bool:
        scope = self.scope
        return scope is not None and scope.bus.active

    def llm_query(
        self, prompt: Prompt, model: str | None = None, schema: Any = None
    ) -> RLMChatCompletion:
        """One call; a refused call (model, reservation, an unusable ``schema``) comes
        back as an ``error`` completion. ``schema``: the REPL's wire form of a typed
        sub-call; the reply is then the matching value's JSON text."""
        started = time.perf_counter()
        if not self.policy.allows(model):
            exc = ModelNotAllowedError(str(model), self.policy.names)
            return failed_completion(model or "", prompt, exc, started)
        try:
            typed = SubcallSchema.of(schema) if schema is not None else None
        except ConfigurationError as exc:
            return refused([prompt], model, exc)[0]
        if not self._listened():  # nobody listens: no events to build
            return self._one(prompt, model, started, None, typed)
        with self._announced(model, [prompt]) as outcome:
            return self._one(prompt, model, started, outcome, typed)

    def _one(
        self,
        prompt: Prompt,
        model: str | None,
        started: float,
        outcome: _Outcome | None,
        typed: SubcallSchema | None = None,
    ) -> RLMChatCompletion:
        try:
            if typed is None:
                result = self._call(prompt, model)
            else:
                result = ask_typed(lambda ps, rs: [self._call(ps[0], model, rs)], [prompt], typed)[
                    0
                ]
        except REFUSALS as exc:
            if outcome is not None:
                outcome.error = str(exc)
            return failed_completion(model or "", prompt, exc, started)
        if outcome is not None:
            outcome.model, outcome.usage = result.root_model, result.usage_summary
            outcome.error = result.error
        return result

    def _call(
        self, prompt: Prompt, model: str | None, schema: ResponseSchema | None = None
    ) -> RLMChatCompletion:
        return self.pipeline.call(
            prompt, model, self.depth, self.sink, scope=self.scope, schema=schema
        )

    def llm_query_batched(
        self, prompts: list[Prompt], model: str | None = None, schema: Any = None
    ) -> list[RLMChatCompletion]:
        """Every prompt, concurrently; raises ``BatchTooLargeError`` (naming
        ``max_batch_size``) for a batch over the cap, before anything else. With a
        ``schema``, a prompt whose replies never match fails alone."""
        self.pipeline.check_batch_size(len(prompts))
        if not self.policy.allows(model):
            started = time.perf_counter()
            exc = ModelNotAllowedError(str(model), self.policy.names)
            return [failed_completion(str(model), p, exc, started) for p in prompts]
        try:
            typed = SubcallSchema.of(schema) if schema is not None else None
        except ConfigurationError as exc:
            return refused(prompts, model, exc)
        if not self._listened():
            return self._batch(prompts, model, typed)
        with self._announced(model, prompts) as outcome:
            results = self._batch(prompts, model, typed)
            outcome.usage = UsageSummary()
            for r in results:
                outcome.usage.merge(r.usage_summary)
            errors = [r.error for r in results if r.error]
            if errors:
                outcome.error = f"{len(errors)} of {len(results)} failed: {errors[0]}"
            return results

    def _batch(
        self, prompts: list[Prompt], model: str | None, typed: SubcallSchema | None
    ) -> list[RLMChatCompletion]:
        batch, depth, sink, scope = self.pipeline.call_batched, self.depth, self.sink, self.scope
        if typed is None:
            return batch(prompts, model, depth, sink, scope)
        return ask_typed(
            lambda ps, rs: batch(ps, model, depth, sink, scope, schema=rs), prompts, typed
        )


__all__ = ["LMRoute", "preview"]
