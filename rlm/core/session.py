"""A session: one handler, one (possibly persistent) environment, and the turns run on them.

The root ``RLM`` owns one ``Session``; every child RLM spawned by ``rlm_query`` is a
short-lived ``Session`` that shares its parent's handler (hence its governor), event bus
and budget tree (hence its cancel token). The handler lives as long as the session, so a
turn starts and ends at no cost. Each root turn gets a fresh budget tree and cancel
token, so a cancelled or exhausted turn leaves the session usable.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rlm.base.cancel import acquire_lock
from rlm.base.checkpoint import Checkpoint
from rlm.base.errors import BudgetExhaustedError, ContextWindowExceededError
from rlm.base.events import EventBus, RunScope
from rlm.base.ports import SupportsPersistence
from rlm.base.types import QueryMetadata, RLMChatCompletion
from rlm.clients.base_lm import BaseLM
from rlm.clients.context_windows import input_window
from rlm.core.budget import BudgetNode
from rlm.core.child_slots import ChildSlot
from rlm.core.config import RLMConfig, build_handler
from rlm.core.deadline import Deadline
from rlm.core.lm_handler import LMHandler, LMRoute
from rlm.core.loop import LoopConfig, TurnResult, TurnState
from rlm.core.resume import Resume, restore_note, restore_one_shot, resume_point
from rlm.core.runtime import run_blocking
from rlm.core.subcalls import checked_subcall, error_completion, new_run_id, preview, run_child
from rlm.core.turn import Turn, first_state
from rlm.logger.rlm_logger import record_run

if TYPE_CHECKING:
    from rlm.core.durable import DurableSession
    from rlm.core.output_schema import OutputSchema
    from rlm.environments import BaseEnv

ClientFactory = Callable[[str, dict[str, Any]], BaseLM]
EnvFactory = Callable[[str, dict[str, Any]], "BaseEnv"]

# Every environment gets a direct route to the handler: in-process ones call it, and
# worker-based ones relay their worker's sub-calls to it over the worker's own channel
# (no socket). Environments not listed here also get the loopback socket's address.
ROUTED_ENVIRONMENTS = frozenset(
    {"local", "sandbox", "docker", "ipython", "modal", "e2b", "daytona", "prime"}
)


@dataclass(frozen=True)
class SessionParts:
    """What every session of one RLM's call tree is made with; children share it.

    ``make_client`` / ``make_env`` build clients and environments by name (the ``RLM``
    passes functions that look up ``rlm.core.rlm.get_client`` / ``get_environment`` at
    call time, so patching those reaches every session). ``child_logger``, if set,
    makes the logger of each child run."""

    make_client: ClientFactory
    make_env: EnvFactory
    bus: EventBus
    session_id: str | None = None
    child_logger: Callable[[], Any] | None = None


@dataclass(frozen=True)
class Lineage:
    """A child session's place in its call tree: its parent's handler (hence governor),
    the parent run's scope and budget node, its slot in the tree's child gate, and the
    run id its ``subcall_started`` event announced."""

    handler: LMHandler
    scope: RunScope
    node: BudgetNode
    slot: ChildSlot
    run_id: str


class Session:
    """Runs turns for one RLM (root or child)."""

    def __init__(
        self,
        config: RLMConfig,
        parts: SessionParts,
        *,
        logger: Any | None = None,
        durable: DurableSession | None = None,
        lineage: Lineage | None = None,
    ) -> None:
        self.config = config
        self.parts = parts
        self.bus = parts.bus
        self.session_id = parts.session_id
        self.lineage = lineage  # None for the root session
        self.handler = lineage.handler if lineage is not None else None
        self.logger = logger  # an RLMLogger that records this session's runs
        self.env: BaseEnv | None = None  # the persistent environment, once created
        self._route: LMRoute | None = None
        self._contexts: list[QueryMetadata] = []
        self._answers = 0
        self._turns = 0
        self._active: tuple[BudgetNode, RunScope] | None = None
        self._turn_lock = threading.Lock()
        self.node: BudgetNode | None = None  # the last turn's budget node (its spending)
        self.durable = durable  # the store side of a durable root session
        self._note: str | None = None  # told to the model once, after a resume
        self._pending: Checkpoint | None = None  # the last turn's, if it stopped
        self._stopped_index: int | None = None  # its context index (persistent)

    # -- resources -----------------------------------------------------------------------

    def ensure_handler(self) -> LMHandler:
        if self.handler is None:
            self.handler = build_handler(self.config, self.parts.make_client)
        return self.handler

    def child(
        self, config: RLMConfig, scope: RunScope, node: BudgetNode, slot: ChildSlot, run_id: str
    ) -> Session:
        """A child session for ``rlm_query``, spawned by the run of ``scope`` and drawing
        from its budget ``node``: this session's parts and handler, a logger of its own
        (when runs are logged), ``slot`` in the tree's child gate, and ``run_id``."""
        new_logger = self.parts.child_logger
        lineage = Lineage(self.ensure_handler(), scope, node, slot, run_id)
        logger = new_logger() if new_logger is not None else None
        return Session(config, self.parts, logger=logger, lineage=lineage)

    def _env_kwargs(self, handler: LMHandler) -> dict[str, Any]:
        cfg = self.config
        kwargs = dict(cfg.environment_kwargs)
        kwargs["depth"] = cfg.depth + 1
        kwargs["max_concurrent_subcalls"] = cfg.max_concurrent_subcalls
        if cfg.persistent:
            kwargs["persistent"] = True
        if cfg.custom_tools is not None:
            kwargs["custom_tools"] = cfg.custom_tools
        if cfg.custom_sub_tools is not None:
            kwargs["custom_sub_tools"] = cfg.custom_sub_tools
        if cfg.compaction:
            kwargs["compaction"] = True
        if cfg.max_depth > 1:  # rlm_query: the model code names is checked first
            kwargs["subcall_fn"] = checked_subcall(self._subcall, handler.model_policy, cfg)
        self._route = handler.route(cfg.depth + 1)
        self._route.model = cfg.model_override  # budget() reports this run's model's window
        kwargs["lm_route"] = self._route
        if cfg.environment not in ROUTED_ENVIRONMENTS:
            kwargs["lm_handler_address"] = handler.start()
            kwargs["lm_handler_token"] = handler.token
        return kwargs

    def ensure_environment(self) -> BaseEnv:
        """The persistent environment, made on first use; a durable session's is first
        restored from the store (variables, then contexts, histories and answers)."""
        if self.env is None:
            handler = self.ensure_handler()
            self.env = self.parts.make_env(self.config.environment, self._env_kwargs(handler))
            if self.durable is not None:
                restored = self.durable.restore(self.env)
                self._contexts = list(restored.contexts)
                self._answers = self._turns = restored.turns
                self._stopped_index = restored.stopped_index
                self._note = restore_note(restored.lost, "this session was resumed from storage")
        return self.env

    def _open_environment(
        self, prompt: Any, handler: LMHandler, index: int | None = None
    ) -> tuple[BaseEnv, int]:
        """The turn's environment with ``prompt`` bound (at ``index``: a resumed turn's
        own slot), and the context's index."""
        if not self.config.persistent:
            kwargs = self._env_kwargs(handler)
            kwargs["context_payload"] = prompt
            return self.parts.make_env(self.config.environment, kwargs), 0
        env = self.ensure_environment()
        if not isinstance(env, SupportsPersistence):
            raise RuntimeError(
                f"Environment {type(env).__name__} does not implement SupportsPersistence"
            )
        index = env.add_context(prompt, index)
        env.reset_answer()
        return env, index

    def _turn_state(
        self, root_prompt: str | None, checkpoint: Checkpoint | None, output: OutputSchema | None
    ) -> TurnState:
        note, self._note = self._note, None  # e.g. which variables a resume lost
        return first_state(
            self.config, self._contexts, root_prompt, self._answers, note, checkpoint, output
        )

    def close(self) -> None:
        """Release the environment and, if this session created it, the handler."""
        env, self.env = self.env, None
        if env is not None:
            env.cleanup()
        handler = self.handler
        if handler is not None and self.lineage is None:  # a child's is its parent's
            self.handler = None
            handler.close()

    # -- turns ---------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """Whether a turn is in progress."""
        return self._active is not None

    def cancel(self) -> None:
        """Cancel the turn in progress, if any (from any thread)."""
        active = self._active
        if active is not None:
            active[0].token.cancel()

    def completion(
        self,
        prompt: Any,
        root_prompt: str | None = None,
        resume: Resume = None,
        output: OutputSchema | None = None,
    ) -> RLMChatCompletion:
        """Run one turn to an answer (matching ``output``, if set). Turns of one session
        never overlap."""
        with self._turn_lock:
            return self._begin(prompt, root_prompt, resume, output).complete()

    async def acompletion(
        self,
        prompt: Any,
        root_prompt: str | None = None,
        resume: Resume = None,
        output: OutputSchema | None = None,
    ) -> RLMChatCompletion:
        """``completion`` for asyncio: the same turn, with effects awaited. The turn's
        token (``cancel()``) stops it with ``CancellationError``, its deadline with
        ``TimeoutExceededError``; cancelling the awaiting task stops the tree and
        raises ``asyncio.CancelledError`` (``Turn.fail``)."""
        await acquire_lock(self._turn_lock)
        try:
            begin = run_blocking(self._begin, prompt, root_prompt, resume, output)
            try:
                turn = await asyncio.shield(begin)
            except asyncio.CancelledError as exc:  # let the turn open, then close it properly
                (await begin).fail(exc, outside=True)
                raise
            # A durable turn's checkpoint is written off the loop.
            return await turn.acomplete(close_off_loop=self.durable is not None)
        finally:
            self._turn_lock.release()

    def _begin(
        self,
        prompt: Any,
        root_prompt: str | None,
        resume: Resume = None,
        output: OutputSchema | None = None,
    ) -> Turn:
        """Open the turn: budget node, event scope, environment with the context bound."""
        cfg = self.config
        started = time.perf_counter()
        meta = QueryMetadata(prompt)  # raises ValueError for a missing payload
        handler = self.ensure_handler()
        histories = 0
        if cfg.persistent:  # a durable session's thread is back before we look
            persistent = self.ensure_environment()
            if isinstance(persistent, SupportsPersistence):
                histories = persistent.get_history_count()
        checkpoint = resume_point(resume, self._pending, self.durable, prompt, root_prompt)
        slot = None  # a resumed stopped turn keeps its context_N if it was the last turn
        if checkpoint is not None:
            root_prompt = root_prompt if root_prompt is not None else checkpoint.root_prompt
            last = len(self._contexts) - 1
            if cfg.persistent and checkpoint.context_index == self._stopped_index == last:
                slot = last
        lineage = self.lineage
        node = lineage.node.child(cfg.limits) if lineage else BudgetNode(cfg.limits)
        parent = lineage.scope if lineage else None
        scope = RunScope(
            self.bus,
            run_id=lineage.run_id if lineage else new_run_id(),
            parent_id=parent.run_id if parent else None,
            session_id=self.session_id,
            turn=parent.turn if parent else self._turns,
            depth=cfg.depth,
        )
        env, index = self._open_environment(prompt, handler, slot)
        # Another session's stopped turn brings its variables along, into a fresh REPL.
        if checkpoint is not None and checkpoint.session_id != self.session_id and index == 0:
            self._note = restore_one_shot(env, checkpoint, owned=not cfg.persistent)
        if cfg.persistent:
            del self._contexts[index:]
            self._contexts.append(meta)
        else:
            self._contexts = [meta]
        self._active = (node, scope)
        self.node = node
        turn = Turn(
            prompt=prompt,
            handler=handler,
            env=env,
            index=index,
            node=node,
            scope=scope,
            state=self._turn_state(root_prompt, checkpoint, output),
            loop_cfg=LoopConfig(
                max_iterations=cfg.max_iterations,
                root_prompt=root_prompt,
                context_count=len(self._contexts),
                history_count=histories,
                model_name=cfg.root_model,
                compaction=cfg.compaction,
                compaction_threshold_pct=cfg.compaction_threshold_pct,
                context_window=(
                    input_window(handler.get_client(cfg.model_override)) if cfg.compaction else None
                ),
                max_output_chars=cfg.max_output_chars,
                output=output,
            ),
            started=started,
            on_close=self._end_turn,
            model=cfg.model_override,
            root_model=cfg.result_model(handler.default_client.model_name),
            persistent=cfg.persistent,
            session_id=self.session_id,
            logger=self.logger,
            resumed=checkpoint,
        )
        try:  # from here on, a failure must still close the turn (env, alignment, events)
            limit = node.limits.max_timeout
            if limit is not None and lineage is None:  # the root's covers the whole tree
                turn.deadline = Deadline(node.token, limit, node.started).start()
            if self._route is not None:
                self._route.sink, self._route.scope = node, scope
            if self.logger is not None:
                turn.detach = record_run(self.logger, self.bus, scope.run_id)
            if self.bus.active:  # the run's metadata is only built for someone listening
                scope.emit(
                    "run_started",
                    prompt_preview=preview(prompt),
                    root_prompt=root_prompt,
                    metadata=cfg.metadata(turn.root_model),
                    context_count=turn.loop_cfg.context_count,
                )
        except BaseException as exc:
            raise turn.fail(exc) from None
        return turn

    def _end_turn(
        self, turn: Turn, result: TurnResult | None, error: BaseException | None = None
    ) -> None:
        """Called once per turn, success or not, before the turn's last event."""
        self._active = None
        self._turns += 1
        self._pending = None if result is not None else turn.checkpoint
        if self.config.persistent:
            self._close_turn(turn.env, turn.index, turn.state, result)
            self._stopped_index = None if result is not None else turn.index
        else:
            turn.env.cleanup()
        if self.durable is not None and self.lineage is None:
            self.durable.record_turn(turn, result, error)

    def _close_turn(
        self, env: BaseEnv, index: int, state: TurnState, result: TurnResult | None
    ) -> None:
        """Store the turn's history and answer at the context's index, even on failure,
        so context_N, history_N and final_answer_N stay aligned."""
        assert isinstance(env, SupportsPersistence)
        env.add_history(state.messages, index)
        answer = result.answer if result is not None else None
        env.set_variable(f"final_answer_{index}", answer)
        self._answers = max(self._answers, index + 1)

    # -- sub-calls -----------------------------------------------------------------------

    def _subcall(self, prompt: str, model: str | None = None) -> RLMChatCompletion:
        """``rlm_query``: a child RLM, or a plain LM call at the depth limit. A child
        draws from this run's budget and holds one of the tree's child slots; this run
        lends its own slot (if it is a child itself) while it waits."""
        active = self._active
        if active is None:
            raise RuntimeError("rlm_query called outside a running turn")
        node, scope = active
        cfg = self.config
        handler = self.ensure_handler()
        node.token.raise_if_cancelled()
        try:
            if cfg.depth + 1 >= cfg.max_depth:
                return handler.call(prompt, model, 1, node)
            node.ensure_room()  # a child could not make even its first call
        except (BudgetExhaustedError, ContextWindowExceededError) as exc:
            return error_completion(cfg, prompt, f"Error: {exc}", time.perf_counter())
        lineage = self.lineage
        with lineage.slot.lent() if lineage is not None else contextlib.nullcontext():
            return run_child(self, prompt, model, node, scope, handler)
