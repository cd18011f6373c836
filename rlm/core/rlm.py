"""The public ``RLM`` class: configuration in, ``RLMChatCompletion`` out.

It stays thin: arguments are validated into an ``RLMConfig``, turns run in a ``Session``
and everything observable goes through one ``EventBus``. ``get_client`` and
``get_environment`` are looked up in this module at call time, so tests and benchmarks
can patch ``rlm.core.rlm.get_client`` as they do with ``rlms``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

from rlm.base.errors import ConfigurationError
from rlm.base.events import EventBus
from rlm.base.ports import SupportsPersistence
from rlm.base.types import ClientBackend, EnvironmentType, RLMChatCompletion
from rlm.clients import BaseLM, get_client
from rlm.core.callbacks import (
    OnIterationComplete,
    OnIterationStart,
    OnSubcallComplete,
    OnSubcallStart,
    attach_callbacks,
)
from rlm.core.config import RUN_HOOKS, RLMConfig
from rlm.core.governor import Governor
from rlm.core.lm_handler import DEFAULT_MAX_BATCH_SIZE, DEFAULT_MAX_CONCURRENT_LLM_CALLS
from rlm.core.output_schema import OutputSchema, aask_directly, ask_directly
from rlm.core.parsing import DEFAULT_MAX_OUTPUT_CHARS
from rlm.core.replay import Replayer, ReplayReport, open_tape
from rlm.core.resume import Resume
from rlm.core.rlm_durable import DurableSessions
from rlm.core.rlms_hooks import RLMSHooks
from rlm.core.session import Session, SessionParts
from rlm.core.streaming import AsyncEventStream, EventStream
from rlm.environments import (
    ENVIRONMENT_NAMES,
    BaseEnv,
    environment_supports_persistence,
    get_environment,
)
from rlm.environments.host.spares import SpareEnvFactory
from rlm.logger import RLMLogger
from rlm.logger.otel_setup import attach_tracing

if TYPE_CHECKING:  # the store is imported when a session is durable, not by ``import rlm``
    from rlm.core.durable import DurableSession
    from rlm.sessions.store import SessionStore


def _make_client(backend: str, backend_kwargs: dict[str, Any]) -> BaseLM:
    return get_client(backend, backend_kwargs)  # module global: patchable


def _make_environment(name: str, kwargs: dict[str, Any]) -> BaseEnv:
    return get_environment(name, kwargs)  # module global: patchable


# ``RLM(...)`` arguments that are not the run's configuration (``RLMConfig.build``).
_NOT_CONFIG = RUN_HOOKS | {"tracing", "record", "replay"}


def _model_backends(cfg: RLMConfig) -> dict[str, str]:
    """Which backend serves each configured model name (for the spans' provider)."""
    pairs = [(cfg.backend_kwargs.get("model_name"), cfg.backend)]
    pairs += [
        (k.get("model_name"), b)
        for b, k in zip(cfg.other_backends, cfg.other_backend_kwargs, strict=True)
    ]
    return {str(m): b for m, b in reversed(pairs) if m}


def _output(spec: Any, repairs: int | None) -> OutputSchema | None:
    return None if spec is None else OutputSchema.of(spec, repairs=repairs)


class RLM(DurableSessions, RLMSHooks):
    """A Recursive Language Model: answers a query over a context of any length.

    ``completion(prompt, root_prompt=None)`` puts ``prompt`` in a REPL as ``context`` and
    lets the root model write code against it until the code submits an answer.
    With ``persistent=True`` one environment serves every call: each call adds
    ``context_N`` and, when it ends, ``history_N`` and ``final_answer_N``.
    Use ``close()`` or ``with RLM(...) as rlm:`` to release the session.

    Limits hold across the whole call tree (the root and every ``rlm_query`` child):
    ``max_budget`` (USD), ``max_tokens``, ``max_timeout`` (seconds) and ``max_llm_calls``
    are reserved before each LM call, so concurrent children cannot overshoot them; a
    sub-call that does not fit returns ``"Error: budget exhausted ..."`` to the REPL and
    the run then raises its limit error with the best partial answer.

    Concurrency: ``max_inflight_llm_calls`` caps LM calls in flight across the tree
    (``None``: no cap; it still halves on rate limits and recovers step by step);
    ``governor`` (``rlm.core.governor.shared_governor(backend, base_url)``) shares that
    pacing with every RLM given the same one: a 429 then pauses all their trees (each
    keeps its own circuit breaker and child cap; the governor's window is the cap);
    ``max_concurrent_llm_calls`` caps one ``llm_query_batched`` (whose length
    ``max_batch_size`` caps); and ``max_concurrent_subcalls`` caps child RLMs running at
    once, tree-wide. ``cancel()`` stops a run from another thread.

    REPL code may name only the root, ``other_backends`` and ``allowed_models`` models
    (``"*"``: any); under ``max_budget`` an unpriced model is refused (``register_price``).

    Durable sessions (``docs/sessions.md``): with ``persistent=True`` and
    ``session_store`` (a path, ``sqlite:`` URL or ``SessionStore``) or ``durable=True``
    (the default store), every turn is saved, and ``RLM(..., session_id=ID)`` in a later
    process resumes session ``ID``: contexts, histories, answers and REPL variables.
    Without either, ``session_id`` only labels events, as before. A limit error carries
    ``checkpoint``; ``completion(..., resume=checkpoint)`` goes on from there.
    ``fork(new_id)`` branches a durable session.

    Observability (``docs/observability.md``): ``tracing`` (OpenTelemetry GenAI spans:
    ``True``, a ``TracerProvider`` or ``Tracing(...)``; by default only with ``RLM_OTEL``
    or a global provider), ``cache`` (memoised model calls in a SQLite file: ``True``, a
    path, a dict or a ``CallCache``), ``record=True`` (every model call and cell into the
    run log) and ``replay=LOG`` (model calls answered from a recording;
    ``replay_report()`` says where the new run diverged).
    """

    def __init__(
        self,
        backend: ClientBackend | str = "openai",
        backend_kwargs: dict[str, Any] | None = None,
        environment: EnvironmentType | str = "local",
        environment_kwargs: dict[str, Any] | None = None,
        depth: int = 0,
        max_depth: int = 1,
        max_iterations: int = 30,
        max_budget: float | None = None,
        max_timeout: float | None = None,
        max_tokens: int | None = None,
        max_errors: int | None = None,
        custom_system_prompt: str | None = None,
        other_backends: list[ClientBackend | str] | None = None,
        other_backend_kwargs: list[dict[str, Any]] | None = None,
        logger: RLMLogger | None = None,
        verbose: bool = False,
        persistent: bool = False,
        custom_tools: dict[str, Any] | None = None,
        custom_sub_tools: dict[str, Any] | None = None,
        compaction: bool = False,
        compaction_threshold_pct: float = 0.85,
        max_concurrent_subcalls: int = 4,
        on_subcall_start: OnSubcallStart | None = None,
        on_subcall_complete: OnSubcallComplete | None = None,
        on_iteration_start: OnIterationStart | None = None,
        on_iteration_complete: OnIterationComplete | None = None,
        sampling_args: dict[str, Any] | None = None,
        sub_sampling_args: dict[str, Any] | None = None,
        orchestrator: bool = True,
        user_prologue: str | None = None,
        *,
        max_concurrent_llm_calls: int = DEFAULT_MAX_CONCURRENT_LLM_CALLS,
        max_output_chars: int = DEFAULT_MAX_OUTPUT_CHARS,
        session_id: str | None = None,
        max_inflight_llm_calls: int | None = None,
        max_llm_calls: int | None = None,
        session_store: SessionStore | str | os.PathLike[str] | None = None,
        durable: bool = False,
        allowed_models: Sequence[str] | Literal["*"] | None = None,
        max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
        governor: Governor | None = None,
        tracing: Any = None,
        cache: Any = None,
        record: Any = False,
        replay: Any = None,
    ) -> None:
        # Every argument, so fork() can build the same RLM for another session.
        self._init_kwargs = {k: v for k, v in locals().items() if k not in ("self", "__class__")}
        self.config = RLMConfig.build(  # every argument that configures the run
            **{k: v for k, v in self._init_kwargs.items() if k not in _NOT_CONFIG}
        )
        cfg = self.config
        self._set_rlms_attributes()
        # Record and replay (docs/observability.md): model calls into / from a run log.
        self._tape, self.logger = open_tape(record, replay, logger)
        if record and cfg.cache is not None:
            warnings.warn(
                "rlmx: cache= is not used while recording (record=...): a cached call never "
                "reaches the client, so it could not be recorded",
                stacklevel=2,
            )
        self.persistent = persistent
        if cfg.environment not in ENVIRONMENT_NAMES:  # the registry's names, read once
            raise ConfigurationError(
                f"Unknown environment: {cfg.environment!r}. Supported: {list(ENVIRONMENT_NAMES)}"
            )
        self._persistent_env: BaseEnv | None = None
        if persistent:
            self._validate_persistent_environment_support()

        self.session_id = session_id or uuid.uuid4().hex
        self.session_store = session_store
        self.durable = durable or session_store is not None
        self._durable: DurableSession | None = None
        if self.durable:  # fails fast: a locked, foreign, corrupt or newer store
            self._durable = self._open_durable()
        self.events = EventBus()
        if self._tape is not None:
            self._tape.attach(self.events)
        # OpenTelemetry spans (docs/observability.md): subscribed only when tracing is on.
        self._untrace = attach_tracing(
            self.events,
            tracing,
            backend=cfg.backend,
            providers=_model_backends(cfg),
            environment=cfg.environment,
        )
        if verbose:  # the console printer is only made for a verbose RLM
            self.verbose.attach(self.events)
        attach_callbacks(
            self.events,
            on_subcall_start,
            on_subcall_complete,
            on_iteration_start,
            on_iteration_complete,
        )
        self._session: Session | None = None
        # Builds this RLM's environments; a sandbox's warm spare workers live in it.
        self._environments = SpareEnvFactory(_make_environment)

    # -- session -------------------------------------------------------------------------

    def _get_session(self) -> Session:
        if self._session is None:
            if self.durable and self._durable is None:  # used again after close()
                self._durable = self._open_durable()
            parts = SessionParts(
                self._tape.clients(_make_client) if self._tape is not None else _make_client,
                self._environments,
                self.events,
                self.session_id,
                getattr(self.logger, "child_logger", RLMLogger)
                if self.logger is not None
                else None,
            )
            self._session = Session(self.config, parts, logger=self.logger, durable=self._durable)
        return self._session

    def completion(
        self,
        prompt: str | dict[str, Any] | list[Any],
        root_prompt: str | None = None,
        *,
        resume: Resume = None,
        output_schema: Any = None,
        schema_repairs: int | None = None,
    ) -> RLMChatCompletion:
        """Answer ``root_prompt`` (or the task implied by ``prompt``) over ``prompt``.

        Raises the limit errors (``TimeoutExceededError``, ...) with ``partial_answer``
        and ``checkpoint``. ``resume=checkpoint`` goes on from the checkpoint's last
        completed iteration (no model call is made twice); ``resume=True`` from this
        session's stopped last turn. A durable session asked the same again after a
        stop resumes by itself (``resume=False`` starts over).

        ``output_schema`` (a Pydantic model class, a TypedDict, a dataclass or a JSON
        Schema dict; ``docs/structured-output.md``): the answer must match it. A refused
        answer's errors go back to the model, at most ``schema_repairs`` times (default
        3); the result's ``parsed`` is the validated object, ``response`` its JSON. Raises
        ``SchemaValidationError`` (with the last answer) if no valid answer comes.
        """
        session, output = self._begin(prompt, root_prompt, output_schema, schema_repairs)
        if self.config.depth >= self.config.max_depth:
            if output is not None:
                return ask_directly(session.ensure_handler(), prompt, self.config, output)
            return self._fallback_completion(session, prompt)
        try:
            return session.completion(prompt, root_prompt, resume, output)
        finally:
            self._persistent_env = session.env if self.persistent else None

    def _begin(
        self, prompt: Any, root_prompt: Any, output_schema: Any, repairs: int | None
    ) -> tuple[Session, OutputSchema | None]:
        """A completion's start, sync or async: checked input, the schema, the session."""
        self._check_prompt(prompt, root_prompt)
        output = _output(output_schema, repairs)
        self._completion_start_time = time.perf_counter()
        session = self._get_session()
        if self._tape is not None:
            self._tape.began(prompt, root_prompt, output, self.config)
        return session, output

    async def acompletion(
        self,
        prompt: str | dict[str, Any] | list[Any],
        root_prompt: str | None = None,
        *,
        resume: Resume = None,
        output_schema: Any = None,
        schema_repairs: int | None = None,
    ) -> RLMChatCompletion:
        """``completion`` for asyncio, with the same semantics. Model calls use the
        clients' native async methods; REPL cells run on a worker thread. Cancelling
        the awaiting task stops the tree and raises ``asyncio.CancelledError``."""
        session, output = self._begin(prompt, root_prompt, output_schema, schema_repairs)
        if self.config.depth >= self.config.max_depth:
            handler = session.ensure_handler()
            if output is not None:
                return await aask_directly(handler, prompt, self.config, output)
            return await handler.acall(prompt, self.config.model_override, 0, None)
        try:
            return await session.acompletion(prompt, root_prompt, resume, output)
        finally:
            self._persistent_env = session.env if self.persistent else None

    def stream(
        self,
        prompt: str | dict[str, Any] | list[Any],
        root_prompt: str | None = None,
        *,
        resume: Resume = None,
        output_schema: Any = None,
        schema_repairs: int | None = None,
    ) -> EventStream:
        """Run a completion and iterate its events as they happen.

        ``for event in (s := rlm.stream(ctx)): ...`` then ``s.result`` is the completion.
        The run is ``acompletion`` on the stream's own thread and loop, so ``cancel()``
        (or Ctrl-C while iterating) interrupts even an LM call in flight.
        """
        self._check_prompt(prompt, root_prompt)
        output = _output(output_schema, schema_repairs)  # a bad schema fails here
        return EventStream(
            self.events,
            lambda: asyncio.run(
                self.acompletion(prompt, root_prompt, resume=resume, output_schema=output)
            ),
            cancel=self.cancel,
        )

    def astream(
        self,
        prompt: str | dict[str, Any] | list[Any],
        root_prompt: str | None = None,
        *,
        resume: Resume = None,
        output_schema: Any = None,
        schema_repairs: int | None = None,
    ) -> AsyncEventStream:
        """``async for event in rlm.astream(ctx)``: the async form of ``stream``."""
        self._check_prompt(prompt, root_prompt)
        output = _output(output_schema, schema_repairs)
        return AsyncEventStream(
            self.events,
            lambda: self.acompletion(prompt, root_prompt, resume=resume, output_schema=output),
        )

    def replay_report(self) -> ReplayReport:
        """Where this replay (``replay=LOG``) diverged from the recording, so far."""
        if not isinstance(self._tape, Replayer):
            raise ConfigurationError("replay_report() needs an RLM made with replay=LOG")
        return self._tape.report()

    def cancel(self) -> None:
        """Cancel the run in progress, from any thread (a no-op when none is running).

        Children stop, queued and in-flight LM calls are cancelled, and the run raises
        ``CancellationError`` with its best partial answer. A persistent session stays
        usable. ``completion()`` notices between steps and when it next calls a model
        (a blocking call in flight finishes first); ``acompletion()`` and ``stream()``
        are interrupted at once.
        """
        session = self._session
        if session is not None:
            session.cancel()

    @staticmethod
    def _check_prompt(prompt: Any, root_prompt: Any) -> None:
        if prompt is None:
            raise ConfigurationError("completion() needs a prompt (the context); got None")
        if root_prompt is not None and not isinstance(root_prompt, str):
            raise ConfigurationError(
                f"root_prompt must be a str or None, got {type(root_prompt).__name__}"
            )

    def _new_child(self, kwargs: dict[str, Any]) -> RLM:
        """A child RLM for ``_subcall``, made through this module's global ``RLM`` (so
        patching ``rlm.core.rlm.RLM`` captures it, as with ``rlms``)."""
        return RLM(**kwargs)

    def _fallback_completion(self, session: Session, prompt: Any) -> RLMChatCompletion:
        """At ``depth >= max_depth`` the RLM is a plain LM call."""
        return session.ensure_handler().call(prompt, self.config.model_override, 0, None)

    def _validate_persistent_environment_support(self) -> None:
        """Raise ``ValueError`` if the configured environment cannot persist."""
        if not environment_supports_persistence(self.environment_type):
            supported = [n for n in ENVIRONMENT_NAMES if environment_supports_persistence(n)]
            raise ConfigurationError(
                f"persistent=True is not supported for environment '{self.environment_type}'. "
                "Persistent mode needs an environment that implements SupportsPersistence "
                "(update_handler_address, add_context, get_context_count, add_history, "
                f"get_history_count). Supported environments: {supported}"
            )

    @property
    def environment(self) -> BaseEnv | None:
        """The persistent session's environment (``None`` before the first call, after
        ``close()``, and always when ``persistent=False``). A resumed durable session's
        is restored on first access."""
        if self._persistent_env is None and self._durable is not None and self._durable.thread:
            self._persistent_env = self._get_session().ensure_environment()
        return self._persistent_env

    @staticmethod
    def _env_supports_persistence(env: BaseEnv) -> bool:
        return isinstance(env, SupportsPersistence)

    def close(self) -> None:
        """Release the environment, the handler and a durable session's lock. The object
        can be used again after."""
        session, self._session = self._session, None
        durable, self._durable = getattr(self, "_durable", None), None
        self._persistent_env = None
        try:
            if session is not None:
                session.close()
        finally:
            environments = getattr(self, "_environments", None)
            if environments is not None:  # its warm spare workers
                environments.close()
            if durable is not None:
                durable.close()

    def __enter__(self) -> RLM:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()
