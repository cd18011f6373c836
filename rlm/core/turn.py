"""One turn in flight: performs the loop's effects and closes the turn exactly once.

The sync and async drivers share this object; they differ only in how they wait. A
``Turn`` is made of plain values (the handler, environment, budget node and event scope
of the run, its state and loop configuration); the session that opened it hears of
its end through ``on_close``, called once, before the turn's last event.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rlm.base.checkpoint import Checkpoint
from rlm.base.errors import BudgetExhaustedError, CancellationError, RLMLimitError
from rlm.base.events import RunScope
from rlm.base.ports import SupportsSnapshot
from rlm.base.types import RLMChatCompletion, UsageSummary
from rlm.core.budget import BudgetNode, breach_error
from rlm.core.lm_handler import LMHandler
from rlm.core.loop import (
    CallModel,
    Effect,
    LoopConfig,
    ReadVariable,
    RecordCompaction,
    RunCode,
    TurnResult,
    TurnState,
    run_turn,
)
from rlm.core.prompts import build_metadata_prompt, render_system_prompt
from rlm.core.runtime import run_blocking

if TYPE_CHECKING:
    from rlm.base.types import QueryMetadata
    from rlm.core.config import RLMConfig
    from rlm.environments import BaseEnv

# On cancellation, how long an async turn waits for its running cell to wind down (with
# the tree cancelled its sub-calls fail fast), so children finish before the root does.
# A cell stuck in a blocking call is abandoned after this.
CELL_GRACE = 0.5


def opening_messages(
    cfg: RLMConfig,
    contexts: list[QueryMetadata],
    root_prompt: str | None,
    answers: int,
    note: str | None = None,
) -> list[dict[str, Any]]:
    """A fresh turn's first messages: the system prompt, the contexts' metadata (with
    ``note`` appended), and the user prologue."""
    messages = [
        {
            "role": "system",
            "content": render_system_prompt(cfg.system_prompt, cfg.custom_tools, cfg.orchestrator),
        },
        {"role": "user", "content": build_metadata_prompt(contexts, root_prompt, answers)},
    ]
    if cfg.user_prologue:
        messages.append({"role": "user", "content": cfg.user_prologue})
    if cfg.compaction:
        messages[0]["content"] += (
            "\n\nThe full record of this run (and any summaries) is in the REPL list `history`."
        )
    if note:
        messages[1]["content"] += "\n\n" + note
    return messages


def first_state(
    cfg: RLMConfig,
    contexts: list[QueryMetadata],
    root_prompt: str | None,
    answers: int,
    note: str | None,
    checkpoint: Checkpoint | None,
) -> TurnState:
    """A turn's state before its first iteration: the opening messages of a fresh turn,
    or what ``checkpoint`` saved of a stopped one (``note`` then follows it, once)."""
    if checkpoint is None:
        return TurnState(opening_messages(cfg, contexts, root_prompt, answers, note))
    state = TurnState(
        copy.deepcopy(checkpoint.messages),
        consecutive_errors=checkpoint.consecutive_errors,
        last_error=checkpoint.last_error,
        best_partial=checkpoint.best_partial,
        compactions=checkpoint.compactions,
        completed=checkpoint.iteration,
    )
    if note:
        state.messages.append({"role": "user", "content": note})
        state.committed = len(state.messages)
    return state


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


@dataclass
class Turn:
    prompt: Any
    handler: LMHandler
    env: BaseEnv
    index: int  # the context's index (``context_N``)
    node: BudgetNode
    scope: RunScope
    state: TurnState
    loop_cfg: LoopConfig
    started: float
    # Called once when the turn ends: (turn, result or None, error or None).
    on_close: Callable[[Turn, TurnResult | None, BaseException | None], None]
    model: str | None = None  # the model the run's own calls name (None: the default)
    root_model: str = "unknown"  # the model its result names
    persistent: bool = False
    session_id: str | None = None
    logger: Any | None = None  # records the run; its trajectory is the result's metadata
    detach: Callable[[], None] | None = None  # stops the logger's recording
    resumed: Checkpoint | None = None  # the stopped turn this one continues
    checkpoint: Checkpoint | None = None  # set when the turn ends without an answer
    abandoned: asyncio.Future[Any] | None = None  # a cell left running by a cancel

    def flow(self) -> Generator[Effect, Any, TurnResult]:
        return run_turn(self.state, self.loop_cfg, self.node, self.scope)

    # -- effects -----------------------------------------------------------------------

    def perform(self, effect: Effect) -> Any:
        if isinstance(effect, CallModel):
            return self.handler.call(list(effect.messages), self.model, 0, self.node)
        if isinstance(effect, RunCode):
            return self.env.execute_code(effect.code)
        return self._perform_local(effect)

    async def aperform(self, effect: Effect) -> Any:
        if isinstance(effect, CallModel):
            return await self.handler.acall(list(effect.messages), self.model, 0, self.node)
        if isinstance(effect, RunCode):  # cells block: keep them off the event loop
            cell = run_blocking(self.env.execute_code, effect.code)
            cell.add_done_callback(_retrieve)  # an abandoned cell's error is not "lost"
            try:
                return await asyncio.shield(cell)
            except asyncio.CancelledError:
                self.node.token.cancel()
                await asyncio.wait((cell,), timeout=CELL_GRACE)
                self.abandoned = cell
                raise
        return self._perform_local(effect)

    def _perform_local(self, effect: Effect) -> Any:
        if isinstance(effect, ReadVariable):
            return self.env.lookup_variable(effect.name)
        if isinstance(effect, RecordCompaction):
            record = getattr(self.env, "append_compaction_entry", None)
            if record is not None:
                record(effect.entry)
            return None
        raise TypeError(f"unknown effect {effect!r}")

    # -- closing -----------------------------------------------------------------------

    @property
    def usage(self) -> UsageSummary:
        """What this turn has spent, earlier attempts of a resumed turn included."""
        if self.resumed is None:
            return self.node.usage
        total = UsageSummary()
        total.merge(self.resumed.usage)
        total.merge(self.node.usage)
        return total

    def _checkpoint(self, error: BaseException) -> Checkpoint:
        """The turn at the end of its last completed iteration, with the REPL variables
        (a one-shot run's environment is cleaned up next; another RLM may resume it)."""
        st, persistent = self.state, self.persistent
        snapshot: bytes | None = None
        unsaved: list[str] = []
        running = self.abandoned is not None and not self.abandoned.done()
        if isinstance(self.env, SupportsSnapshot) and not running:  # else: it holds the REPL
            with contextlib.suppress(Exception):  # best effort: the error matters more
                snapshot, unsaved = self.env.snapshot()
        return Checkpoint(
            messages=copy.deepcopy(st.messages[: st.committed]),
            iteration=st.completed,
            consecutive_errors=st.consecutive_errors,
            last_error=st.last_error,
            best_partial=st.best_partial,
            compactions=st.compactions,
            usage=self.usage,
            context_index=self.index if persistent else None,
            root_prompt=self.loop_cfg.root_prompt,
            session_id=self.session_id,
            error=f"{type(error).__name__}: {error}",
            snapshot=snapshot,
            unsaved=list(unsaved),
        )

    def _close(self, result: TurnResult | None, error: BaseException | None) -> None:
        try:
            self.on_close(self, result, error)
        finally:
            self.scope.emit(
                "run_finished",
                response=result.answer if result else None,
                usage=self.node.usage,
                execution_time=time.perf_counter() - self.started,
                error=None if error is None else f"{type(error).__name__}: {error}",
            )
            if self.detach is not None:
                self.detach()

    def fail(self, exc: BaseException) -> BaseException:
        """Close the turn after ``exc``; returns the exception the caller should raise
        (Ctrl-C, task cancellation and ``RLM.cancel()`` become ``CancellationError``; a
        refused reservation becomes the limit error of the limit it hit)."""
        error = exc
        cancelled = isinstance(exc, KeyboardInterrupt | asyncio.CancelledError | CancellationError)
        if cancelled:
            self.node.token.cancel()  # whatever started it, the whole tree stops
        if isinstance(exc, BudgetExhaustedError):
            st = self.state
            exc = error = breach_error(exc.breach, st.best_partial, st.iteration - 1, st.last_error)
        if cancelled and self.scope.parent_id is not None:
            pass  # a child run: re-raise as is, so the whole tree stops (not just the child)
        elif cancelled:
            partial = self.state.best_partial
            error = CancellationError(partial, "Execution cancelled by user")
            self.scope.emit(
                "limit_exceeded", kind="cancelled", message=str(error), partial_answer=partial
            )
        elif isinstance(exc, RLMLimitError):
            self.scope.emit(
                "limit_exceeded",
                kind=type(exc).__name__,
                message=str(exc),
                partial_answer=exc.partial_answer,
            )
        if self.scope.parent_id is None:  # a root run: it can be resumed
            self.checkpoint = self._checkpoint(error)
            if isinstance(error, RLMLimitError):
                error.checkpoint = self.checkpoint
        self._close(None, error)
        return error

    def succeed(self, result: TurnResult) -> RLMChatCompletion:
        self._close(result, None)
        logger = self.logger
        return RLMChatCompletion(
            root_model=self.root_model,
            prompt=self.prompt,
            response=result.answer,
            usage_summary=self.node.usage,
            execution_time=time.perf_counter() - self.started,
            metadata=logger.get_trajectory() if logger is not None else None,
        )
