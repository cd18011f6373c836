"""One ``llm_query_batched``, bounded: a length cap, calls counted before any work, and a
fixed pool of workers.

* A batch longer than ``max_batch_size`` is refused at once (``BatchTooLargeError``).
* With a budget, the batch first asks its node how many calls fit
  (``BudgetNode.admit``): the excess fails at once, with the budget's error, and no
  work (no task, no client) is made for it. With no call left, no client is made.
* The admitted prompts are pulled, in order, by at most ``batch_max_concurrent`` worker
  tasks; no task is made per prompt. Each prompt is one call of the pipeline
  (``rlm.core.lm_pipeline.charged``): it reserves its own estimate and runs through the
  governor; its failure becomes that prompt's ``error`` (a prompt too long for the
  model's context window fails alone, before anything is sent; the model's window is
  resolved once, off the loop, before the first call).
* An auth or quota error stops the batch: prompts not yet done fail with the circuit
  breaker's error.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from rlm.base.errors import CircuitOpenError, ConfigurationError
from rlm.base.types import Prompt, RLMChatCompletion
from rlm.clients.context_windows import awindow_of
from rlm.core.error_kinds import is_fatal
from rlm.core.lm_call import charged, failed_completion
from rlm.core.reservation import require_price

if TYPE_CHECKING:
    from rlm.base.events import RunScope
    from rlm.base.json_schema import ResponseSchema
    from rlm.core.budget import BudgetNode
    from rlm.core.lm_pipeline import CallPipeline
    from rlm.core.lm_router import Route

# Most prompts one llm_query_batched may carry; RLM(max_batch_size=...) sets it.
DEFAULT_MAX_BATCH_SIZE = 10_000


class BatchTooLargeError(ConfigurationError):
    """A batch has more prompts than ``max_batch_size`` allows."""

    def __init__(self, size: int, limit: int) -> None:
        self.size, self.limit = size, limit
        super().__init__(
            f"llm_query_batched got {size:,} prompts, more than max_batch_size={limit:,} "
            "allows in one batch; nothing was sent. Split the prompts into smaller batches "
            "(the operator sets the cap with RLM(max_batch_size=...))."
        )


def check_batch_size(size: int, limit: int) -> None:
    if size > limit:
        raise BatchTooLargeError(size, limit)


async def run_batch(
    pipeline: CallPipeline,
    prompts: list[Prompt],
    model: str | None,
    depth: int,
    sink: BudgetNode | None,
    scope: RunScope | None = None,
    schema: ResponseSchema | None = None,
) -> list[RLMChatCompletion]:
    """``pipeline.acall_batched``: see the module docstring. ``scope`` is the run that
    asked (its events announce the calls' retries); ``schema``: structured output."""
    check_batch_size(len(prompts), pipeline.max_batch_size)
    if not prompts:
        return []
    results: list[RLMChatCompletion | None] = [None] * len(prompts)
    admitted = len(prompts)
    name = model or pipeline.router.name(depth)
    if sink is not None and sink.guarded:
        admitted, refusal = sink.admit(len(prompts))
        if refusal is not None:
            now = time.perf_counter()
            for i in range(admitted, len(prompts)):
                results[i] = failed_completion(name, prompts[i], refusal, now)
    if admitted:
        try:
            route = pipeline.router.route(model, depth)
            name = route.name
            if sink is not None:
                require_price(sink, route.client, name)
            await awindow_of(route.client)  # once per client, off the loop
        except Exception as exc:  # no client, or no price under max_budget
            now = time.perf_counter()
            for i in range(admitted):
                results[i] = failed_completion(name, prompts[i], exc, now)
        else:
            await _pool(pipeline, route, prompts[:admitted], sink, results, scope, schema)
    return [r for r in results if r is not None]


async def _pool(
    pipeline: CallPipeline,
    route: Route,
    prompts: list[Prompt],
    sink: BudgetNode | None,
    results: list[RLMChatCompletion | None],
    scope: RunScope | None,
    schema: ResponseSchema | None = None,
) -> None:
    """Fill ``results[:len(prompts)]``, at most ``batch_max_concurrent`` calls at once."""
    order = iter(range(len(prompts)))  # shared: each worker pulls the next prompt

    async def worker() -> None:
        for i in order:
            started = time.perf_counter()
            try:
                flow = charged(route, prompts[i], sink, scope=scope, schema=schema)
                results[i] = await pipeline.adrive(flow)
            except BaseException as exc:
                if isinstance(exc, Exception):
                    results[i] = failed_completion(route.name, prompts[i], exc, started)
                if not isinstance(exc, Exception) or is_fatal(exc):
                    raise  # cancellation, or a doomed batch (see below)

    workers = [
        asyncio.ensure_future(worker())
        for _ in range(min(pipeline.batch_max_concurrent, len(prompts)))
    ]
    try:
        _, pending = await asyncio.wait(workers, return_when=asyncio.FIRST_EXCEPTION)
        if pending:  # an auth/quota error: every other call would fail the same way
            for task in pending:
                task.cancel()
            await asyncio.wait(pending)
    except BaseException:
        for task in workers:
            task.cancel()
        raise
    for task in workers:  # retrieved, so a worker's error is never "never retrieved"
        if not task.cancelled():
            task.exception()
    cause = pipeline.governor.tripped(route.client)
    error: BaseException = (
        CircuitOpenError(cause) if cause is not None else asyncio.CancelledError()
    )
    now = time.perf_counter()
    for i, prompt in enumerate(prompts):
        if results[i] is None:
            results[i] = failed_completion(route.name, prompt, error, now)


__all__ = ["DEFAULT_MAX_BATCH_SIZE", "BatchTooLargeError", "check_batch_size", "run_batch"]
