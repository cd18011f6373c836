"""One turn in flight: performs the loop's effects and closes the turn exactly once.

The sync and async drivers share this object; they differ only in how they wait. A
``Turn`` is made of plain values (the handler, environment, budget node and event scope
of the run, its state and loop configuration); the session that opened it hears of
its end through ``on_close``, called once, before the turn's last event.

``complete()`` and ``acomplete()`` run it to its end. A root turn with a deadline
(``max_timeout``) is driven on the session's loop even from ``complete()``, so the
deadline stops the model call in flight and the running cell. A cell is stopped by its
environment if it can (``SupportsInterrupt``: LocalREPL raises in the cell's thread, a
worker's cell is interrupted, or its worker replaced), in either driver; the turn waits
``CELL_GRACE`` seconds for it to end, then abandons it. How each way of stopping ends
(``fail``): the deadline raises ``TimeoutExceededError``; ``RLM.cancel()``, Ctrl-C and
cancelling a ``Turn``'s own driving task raise ``CancellationError``; an asyncio
cancellation from outside ``acomplete()`` (``task.cancel()``, ``asyncio.wait_for``,
``asyncio.timeout``, a failing ``TaskGroup``) propagates as ``asyncio.CancelledError``.
All of them cancel the whole tree and leave the checkpoint to resume from.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import functools
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rlm.base.cancel import cancelling_current_task
from rlm.base.checkpoint import Checkpoint
from rlm.base.errors import (
    BudgetExhaustedError,
    CancellationError,
    RLMError,
    RLMLimitError,
    TimeoutExceededError,
)
from rlm.base.events import RunScope
from rlm.base.ports import SupportsInterrupt, SupportsSnapshot
from rlm.base.types import RLMChatCompletion, UsageSummary
from rlm.core.budget import BudgetNode, breach_error
from rlm.core.deadline import CellStopper
from rlm.core.lm_handler import LMHandler
from rlm.core.loop import (
    CallModel,
    Effect,
    LoopConfig,
    ReadVariable,
    RecordCompaction,
    ReopenAnswer,
    RunCode,
    TurnResult,
    TurnState,
    drive_async,
    drive_sync,
    run_turn,
)
from rlm.core.prompts import build_metadata_prompt, render_system_prompt
from rlm.core.runtime import run_blocking

if TYPE_CHECKING:
    from rlm.base.types import QueryMetadata
    from rlm.core.config import RLMConfig
    from rlm.core.deadline import Deadline
    from rlm.core.output_schema import OutputSchema
    from rlm.environments import BaseEnv

# On cancellation, how long an async turn waits for its running cell to wind down (it is
# interrupted if its environment can, and with the tree cancelled its sub-calls fail
# fast), so children finish before the root does. A cell its environment cannot stop
# (no ``SupportsInterrupt``, or stuck in a blocking call) is abandoned after this.
CELL_GRACE = 0.5


def opening_messages(
    cfg: RLMConfig,
    contexts: list[QueryMetadata],
    root_prompt: str | None,
    answers: int,
    note: str | None = None,
    output: OutputSchema | None = None,
) -> list[dict[str, Any]]:
    """A fresh turn's first messages: the system prompt (with what ``output``, the
    answer's schema, asks for), the contexts' metadata (with ``note`` appended), and the
    user prologue."""
    messages = [
        {
            "role": "system",
            "content": render_system_prompt(cfg.system_prompt, cfg.custom_tools, cfg.orchestrator),
        },
        {"role": "user", "content": build_metadata_prompt(contexts, root_prompt, answers)},
    ]
    if cfg.user_prologue:
        messages.append({"role": "user", "content": cfg.user_prologue})
    if output is not None:
        messages[0]["content"] += "\n\n" + output.prompt_section()
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
    output: OutputSchema | None = None,
) -> TurnState:
    """A turn's state before its first iteration: the opening messages of a fresh turn,
    or what ``checkpoint`` saved of a stopped one (``note`` then follows it, once)."""
    if checkpoint is None:
        return TurnState(opening_messages(cfg, contexts, root_prompt, answers, note, output))
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


async def _grace(cell: asyncio.Future[Any]) -> None:
    """Give a cancelled turn's cell up to ``CELL_GRACE`` seconds to end (its sub-calls
    fail fast once the tree is cancelled); a repeated cancellation does not cut it short."""
    loop = asyncio.get_running_loop()
    end = loop.time() + CELL_GRACE
    while not cell.done() and (left := end - loop.time()) > 0:
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait((cell,), timeout=left)


def _cancelled_from_outside() -> bool:
    """True if the running task has a cancellation pending that no token asked for."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


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
    deadline: Deadline | None = None  # a root run's max_timeout, armed while it runs

    def flow(self) -> Generator[Effect, Any, TurnResult]:
        return run_turn(self.state, self.loop_cfg, self.node, self.scope)

    @functools.cached_property
    def interruptible(self) -> bool:
        """Whether the environment can stop a running cell (``SupportsInterrupt``),
        checked once: a protocol ``isinstance`` costs more than a cell's bookkeeping."""
        return isinstance(self.env, SupportsInterrupt)

    # -- driving -----------------------------------------------------------------------

    def complete(self) -> RLMChatCompletion:
        """Run the turn in this thread to its completion, or raise what ``fail`` says."""
        try:
            result = self._run_blocking()
        except BaseException as exc:
            error = self.fail(exc)
            if error is exc:
                raise
            raise error from None
        return self.succeed(result)

    async def acomplete(self, close_off_loop: bool = False) -> RLMChatCompletion:
        """``complete`` on the running loop; ``close_off_loop``: the closing (a durable
        checkpoint) runs on a worker thread and is waited for even if cancelled."""
        try:
            result = await self.adrive()
        except BaseException as exc:
            outside = isinstance(exc, asyncio.CancelledError) and _cancelled_from_outside()
            error = self.fail(exc, outside=outside)
            if error is exc:
                raise
            raise error from None
        if not close_off_loop:
            return self.succeed(result)
        closing = run_blocking(self.succeed, result)
        try:
            return await asyncio.shield(closing)
        except asyncio.CancelledError:
            await asyncio.wait((closing,))  # closed before another turn may start
            raise

    async def adrive(self) -> TurnResult:
        """The loop driven on the running loop: cancelling the tree's token cancels the
        task, hence the effect in flight (and, the tree being ``interruptible``, the
        blocking sub-calls of its cells)."""
        self.node.tree.interruptible = True  # its sub-calls become cancellable too
        with cancelling_current_task(self.node.token):
            return await drive_async(self.flow(), self.aperform, self.node.token)

    def _run_blocking(self) -> TurnResult:
        """A root turn with a deadline is driven on the session's loop (the deadline may
        stop it at any moment); any other turn in this thread, its model calls being
        cancellable anyway if its tree is ``interruptible``."""
        runtime = self.handler.runtime
        if self.deadline is None or runtime.in_loop_thread():
            return drive_sync(self.flow(), self.perform, self.node.token)
        token = self.node.token

        async def driven() -> TurnResult:
            try:
                return await self.adrive()
            except asyncio.CancelledError:  # only the token cancels this task
                raise token.error() from None

        return runtime.run_until_done(driven(), token.cancel)

    # -- effects -----------------------------------------------------------------------

    def perform(self, effect: Effect) -> Any:
        if isinstance(effect, CallModel):
            messages, purpose = list(effect.messages), effect.purpose
            return self.handler.call(
                messages,
                self.model,
                0,
                self.node,
                purpose=purpose,
                scope=self.scope,
                schema=effect.schema,
            )
        if isinstance(effect, RunCode):
            env = self.env
            if not self.interruptible:
                return env.execute_code(effect.code)
            # RLM.cancel() from another thread stops the cell, not just the next step.
            stopper = CellStopper(env)
            unregister = self.node.token.on_cancel(stopper)
            try:
                return env.execute_code(effect.code)
            finally:
                stopper.ended()
                unregister()
        return self._perform_local(effect)

    async def aperform(self, effect: Effect) -> Any:
        if isinstance(effect, CallModel):
            messages, purpose = list(effect.messages), effect.purpose
            return await self.handler.acall(
                messages,
                self.model,
                0,
                self.node,
                purpose=purpose,
                scope=self.scope,
                schema=effect.schema,
            )
        if isinstance(effect, RunCode):  # cells block: keep them off the event loop
            cell = run_blocking(self.env.execute_code, effect.code)
            cell.add_done_callback(_retrieve)  # an abandoned cell's error is not "lost"
            try:
                return await asyncio.shield(cell)
            except asyncio.CancelledError:
                self.abandoned = cell  # first: the checkpoint must not wait for its REPL
                self.node.token.cancel()
                if self.interruptible:  # else: abandoned after grace
                    stopper = CellStopper(self.env)
                    cell.add_done_callback(lambda _: stopper.ended())
                    stopper()
                await _grace(cell)
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
        if isinstance(effect, ReopenAnswer):
            reset = getattr(self.env, "reset_answer", None)
            if reset is not None:
                reset()
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
        if self.deadline is not None:
            self.deadline.stop()
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

    def fail(self, exc: BaseException, *, outside: bool = False) -> BaseException:
        """Close the turn after ``exc``; returns the exception the caller should raise.

        An asyncio cancellation from outside the run (``outside``) is returned as is;
        the deadline's becomes ``TimeoutExceededError``; Ctrl-C, other cancellations and
        ``RLM.cancel()`` become ``CancellationError``; a refused reservation becomes the
        limit error of the limit it hit. Each limit error carries the partial answer and
        (root runs) the checkpoint; so does any other ``RLMError`` a root run raises
        (a provider failing mid-run), which keeps its type."""
        error, st, root = exc, self.state, self.scope.parent_id is None
        cancelled = isinstance(exc, KeyboardInterrupt | asyncio.CancelledError | CancellationError)
        if cancelled:
            self.node.token.cancel()  # whatever started it, the whole tree stops
        if isinstance(exc, BudgetExhaustedError):
            exc = error = breach_error(exc.breach, st.best_partial, st.iteration - 1, st.last_error)
        timed_out = self.deadline is not None and self.deadline.fired and not outside
        if cancelled and not root:
            pass  # a child run: re-raise as is, so the whole tree stops (not just the child)
        elif cancelled and timed_out:
            error = self._timeout_error()
            self._announce(error, type(error).__name__)
        elif cancelled:
            stopped = CancellationError(st.best_partial, "Execution cancelled by user")
            error = exc if outside else stopped
            self._announce(stopped, "cancelled")
        elif isinstance(exc, RLMLimitError):
            self._announce(exc, type(exc).__name__)
        if root:  # a root run: it can be resumed
            self.checkpoint = self._checkpoint(error)
            if isinstance(error, RLMLimitError):
                error.checkpoint = self.checkpoint
            elif isinstance(error, RLMError):  # the error keeps its type and gains both
                failure: Any = error
                failure.partial_answer, failure.checkpoint = st.best_partial, self.checkpoint
        self._close(None, error)
        return error

    def _announce(self, error: RLMLimitError, kind: str) -> None:
        self.scope.emit(
            "limit_exceeded", kind=kind, message=str(error), partial_answer=error.partial_answer
        )

    def _timeout_error(self) -> TimeoutExceededError:
        """The deadline stopped the run during its iteration ``state.iteration``."""
        assert self.deadline is not None and self.deadline.elapsed is not None
        st, limit, elapsed = self.state, self.deadline.limit, self.deadline.elapsed
        where = f"during iteration {st.iteration}" if st.iteration else "before the first iteration"
        return TimeoutExceededError(
            elapsed,
            limit,
            st.best_partial,
            f"Timeout exceeded {where}: {elapsed:.1f}s of {limit:.1f}s limit; "
            "the work in flight was stopped",
        )

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
            parsed=result.parsed,
        )
