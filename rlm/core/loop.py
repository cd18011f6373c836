"""The one RLM loop, written once as a generator of effects.

``run_turn`` decides; it does no I/O. It yields effects (call the model, run a cell, read
a variable) and receives their results, like httpx's auth flows. ``drive_sync`` performs
the effects in the calling thread; an async driver performs the same effects with
``await``, so ``completion()`` and ``acompletion()`` share every decision. Both drivers
take the call tree's cancel token and check it between effects.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from rlm.base.cancel import CancelToken
from rlm.base.errors import SchemaValidationError
from rlm.base.events import RunScope
from rlm.base.json_schema import ResponseSchema
from rlm.base.types import CodeBlock, REPLResult, RLMChatCompletion, RLMIteration
from rlm.clients.base_lm import CallPurpose
from rlm.clients.tokens import count_tokens, get_context_limit
from rlm.core.budget import BudgetNode, breach_error, find_breach
from rlm.core.output_schema import OutputSchema
from rlm.core.parsing import (
    DEFAULT_MAX_OUTPUT_CHARS,
    find_code_blocks,
    find_final_marker,
    format_iteration,
)
from rlm.core.prompts import (
    COMPACTION_PROMPT,
    FINAL_ANSWER_PROMPT,
    build_compacted_history,
    build_user_prompt,
)

# -- effects -----------------------------------------------------------------------------


class CallModel(NamedTuple):
    """Ask the run's model for a reply to ``messages``, for ``purpose`` (the client may
    shape the call by it: only ``ITERATION`` calls want code), in the provider's
    structured-output mode for ``schema`` if set. Result: ``RLMChatCompletion``."""

    messages: list[dict[str, Any]]
    purpose: CallPurpose = CallPurpose.ITERATION
    schema: ResponseSchema | None = None


class RunCode(NamedTuple):
    """Execute one cell in the environment. Result: ``REPLResult``."""

    code: str


class ReadVariable(NamedTuple):
    """``str()`` of a REPL variable, or ``None``. Used by ``FINAL_VAR(name)``."""

    name: str


class RecordCompaction(NamedTuple):
    """Append an entry to the REPL's compaction history. Result: ignored."""

    entry: Any


class ReopenAnswer(NamedTuple):
    """The REPL's ``answer`` back to ``{"content": "", "ready": False}``: its answer was
    refused by the output schema. Result: ignored."""


Effect = CallModel | RunCode | ReadVariable | RecordCompaction | ReopenAnswer


# -- state and configuration -------------------------------------------------------------


@dataclass(frozen=True)
class LoopConfig:
    max_iterations: int
    root_prompt: str | None = None
    context_count: int = 1
    history_count: int = 0
    model_name: str = "unknown"
    compaction: bool = False
    compaction_threshold_pct: float = 0.85
    max_output_chars: int = DEFAULT_MAX_OUTPUT_CHARS
    output: OutputSchema | None = None  # the answer must match it (``output_schema``)
    # The root model's input limit in tokens, from its client's window (override,
    # provider, table: ``rlm.clients.context_windows``); None: the table by model_name.
    context_window: int | None = None


@dataclass
class TurnState:
    """What a turn has produced so far. Readable after any exception.

    ``completed`` counts the iterations that finished and ``committed`` is the length of
    ``messages`` when the last one did: together they are the checkpoint a stopped turn
    resumes from (a turn built with ``completed=n`` starts at iteration ``n + 1``)."""

    messages: list[dict[str, Any]]
    iteration: int = 0
    consecutive_errors: int = 0
    last_error: str | None = None
    best_partial: str | None = None
    compactions: int = 0
    iterations: list[RLMIteration] = field(default_factory=list)
    completed: int = 0
    committed: int = -1  # -1: all of the initial messages
    repairs: int = 0  # answers refused by the output schema, each followed by a repair

    def __post_init__(self) -> None:
        if self.committed < 0:
            self.committed = len(self.messages)


@dataclass(frozen=True)
class TurnResult:
    answer: str
    source: str  # "answer" | "FINAL" | "FINAL_VAR" | "default"
    iterations: int
    parsed: Any = None  # with an output schema: the validated answer (``answer`` its JSON)


# -- the loop ----------------------------------------------------------------------------


def _should_compact(messages: list[dict[str, Any]], cfg: LoopConfig) -> bool:
    limit = cfg.context_window or get_context_limit(cfg.model_name)
    return count_tokens(messages, cfg.model_name) >= cfg.compaction_threshold_pct * limit


def _cached(reply: RLMChatCompletion) -> dict[str, Any]:
    """``cached=True`` for a reply the call cache answered (``RLM(cache=...)``)."""
    return {"cached": True} if reply.usage_summary.cached_calls else {}


def run_turn(
    st: TurnState, cfg: LoopConfig, node: BudgetNode, scope: RunScope
) -> Generator[Effect, Any, TurnResult]:
    """Iterate until the code submits an answer, a limit breaks, or turns run out."""
    limits = node.limits
    # Limits never change during a turn: with none that a count can break, the checks
    # below read no counter and call nothing (a refused sub-call is still seen).
    checked = limits.reservable or limits.max_errors is not None
    bus = scope.bus  # each event's payload is built only while someone listens
    stop_at = cfg.max_iterations  # the iteration the final call follows
    for i in range(st.completed, cfg.max_iterations):
        st.iteration = number = i + 1
        # ``refused``: a sub-call's reservation hit this run's limit during the last cell.
        breach = node.refused or (checked and find_breach(limits, elapsed=node.elapsed))
        if breach:
            raise breach_error(breach, st.best_partial, i)

        if cfg.compaction and _should_compact(st.messages, cfg):
            summary = yield CallModel(
                [*st.messages, {"role": "user", "content": COMPACTION_PROMPT}],
                CallPurpose.COMPACTION,
            )
            st.compactions += 1
            yield RecordCompaction({"type": "summary", "content": summary.response})
            st.messages[:] = build_compacted_history(st.messages, summary.response, st.compactions)
            st.committed = len(st.messages)  # the summary replaces what came before

        st.messages.append(
            build_user_prompt(
                cfg.root_prompt, i, cfg.context_count, cfg.history_count, cfg.max_iterations
            )
        )
        if bus.active:
            scope.emit("iteration_started", iteration=number)
        started = time.perf_counter()
        reply: RLMChatCompletion = yield CallModel(st.messages)
        text = reply.response or ""
        if bus.active:
            scope.emit(
                "model_reply",
                iteration=number,
                response=text,
                usage=reply.usage_summary,
                duration=reply.execution_time,
                **_cached(reply),
            )

        blocks: list[CodeBlock] = []
        final: str | None = None
        source = ""
        error: str | None = None  # the last stderr of the iteration's cells
        for index, code in enumerate(find_code_blocks(text)):
            if bus.active:
                scope.emit("code_cell_started", iteration=number, index=index, code=code)
            cell_started = time.perf_counter()
            result: REPLResult = yield RunCode(code)
            blocks.append(CodeBlock(code, result))
            if result.stderr:
                error = result.stderr
            if bus.active:
                scope.emit(
                    "code_cell_finished",
                    iteration=number,
                    index=index,
                    code=code,
                    result=result,
                    duration=time.perf_counter() - cell_started,
                )
            if result.final_answer is not None:
                final, source = result.final_answer, "answer"
                break  # later blocks could make LM calls after the answer

        if final is None:
            marker = find_final_marker(text)
            if marker is not None:
                kind, arg = marker
                value = arg if kind == "FINAL" else (yield ReadVariable(arg))
                if value is not None:
                    final, source = value, kind

        parsed, refused = None, None  # with a schema: the answer typed, or why not
        if final is not None and cfg.output is not None:
            parsed, refused = cfg.output.check(final)
        iteration = RLMIteration(
            prompt=list(st.messages),
            response=text,
            code_blocks=blocks,
            final_answer=None if refused else final,  # a refused answer did not end it
            iteration_time=time.perf_counter() - started,
            schema_errors=refused or None,
        )
        st.iterations.append(iteration)
        if error:
            st.consecutive_errors += 1
            st.last_error = error
        else:
            st.consecutive_errors = 0
        if text.strip():
            st.best_partial = text
        new_messages = format_iteration(iteration, cfg.max_output_chars)
        repairing = False
        if refused and cfg.output is not None:  # the errors are the iteration's REPL output
            repairing = _refuse(st, cfg.output, new_messages, final, refused, scope, number)
            if repairing:  # a refused answer is not left standing as "ready"
                yield ReopenAnswer()
        st.messages.extend(new_messages)
        if bus.active:
            scope.emit(
                "iteration_finished",
                iteration=number,
                iteration_obj=iteration,
                duration=iteration.iteration_time,
            )
            # The report reads the tree's counters: only for a listener.
            scope.emit("budget_update", iteration=number, **node.report())
        if cfg.compaction:
            yield RecordCompaction(new_messages)
        st.completed, st.committed = number, len(st.messages)

        if final is not None and not refused:  # an answer wins over a limit broken with it
            if cfg.output is not None:
                final = cfg.output.dump(parsed)
            scope.emit("final_answer", answer=final, iterations=number, source=source)
            return TurnResult(final, source, number, parsed)
        if refused and not repairing:  # no repair left: the final call
            stop_at = number
            break

        # Each counter takes the tree's lock: read only those a limit needs.
        if node.refused is not None or checked:
            breach = node.refused or find_breach(
                limits,
                elapsed=node.elapsed,
                spent_usd=node.spent_usd if limits.max_budget is not None else 0.0,
                tokens=node.tokens if limits.max_tokens is not None else 0,
                consecutive_errors=st.consecutive_errors,
                calls=node.calls if limits.max_llm_calls is not None else 0,
            )
            if breach:
                raise breach_error(breach, st.best_partial, number, st.last_error)

    # Out of iterations (or schema repairs): one last call that asks for the answer outright,
    # in the provider's structured-output mode when there is a schema.
    output = cfg.output
    ask = FINAL_ANSWER_PROMPT if output is None else output.final_prompt()
    prompt = [*st.messages, {"role": "user", "content": ask}]
    scope.emit("iteration_started", iteration=stop_at + 1, final_call=True)
    schema = None if output is None else output.response_schema()
    reply = yield CallModel(prompt, CallPurpose.FINAL_ANSWER, schema)
    text = reply.response or ""
    scope.emit(
        "model_reply",
        iteration=stop_at + 1,
        response=text,
        usage=reply.usage_summary,
        duration=reply.execution_time,
        final_call=True,
        **_cached(reply),
    )
    answer, submitted = text, False
    last_blocks: list[CodeBlock] = []
    for code in find_code_blocks(text):  # a reply that submits through code still counts
        result = yield RunCode(code)
        last_blocks.append(CodeBlock(code, result))
        if result.final_answer is not None:
            answer, submitted = result.final_answer, True
            break
    marker = None if submitted else find_final_marker(text)
    if marker is not None:
        kind, arg = marker
        value = arg if kind == "FINAL" else (yield ReadVariable(arg))
        if value is not None:
            answer = value
    parsed, refused = output.check(answer) if output is not None else (None, None)
    st.messages.extend(prompt[-1:])
    st.messages.append({"role": "assistant", "content": text})
    last = RLMIteration(
        prompt=prompt,
        response=text,
        code_blocks=last_blocks,
        final_answer=answer,
        schema_errors=refused or None,
    )
    st.iterations.append(last)
    scope.emit(
        "iteration_finished",
        iteration=stop_at + 1,
        iteration_obj=last,
        duration=reply.execution_time,
        final_call=True,
    )
    if output is not None:
        if refused:
            st.best_partial = answer or st.best_partial
            raise SchemaValidationError(answer, refused, output.name, st.repairs)
        answer = output.dump(parsed)
    scope.emit("final_answer", answer=answer, iterations=stop_at, source="default")
    return TurnResult(answer, "default", stop_at, parsed)


def _refuse(
    st: TurnState,
    output: OutputSchema,
    new_messages: list[dict[str, Any]],
    answer: str | None,
    errors: list[str],
    scope: RunScope,
    iteration: int,
) -> bool:
    """An answer the schema refused: its errors become the iteration's REPL output and,
    while repairs are left, a ``schema_repair`` event (``st.repairs`` counts them).
    False when none is left: the loop then goes to its final call."""
    granted = st.repairs < output.repairs
    if granted:
        st.repairs += 1
        note = output.repair_note(errors, st.repairs, output.repairs)
        scope.emit(
            "schema_repair",
            iteration=iteration,
            answer=answer,
            errors=list(errors),
            repair=st.repairs,
            repairs=output.repairs,
        )
    else:
        shown = "\n".join(f"- {e}" for e in errors[:20])
        note = f'Schema check failed ("{output.name}"), and no repairs are left:\n{shown}'
    last = new_messages[-1]
    if len(new_messages) > 1 and last["role"] == "user":
        last["content"] = f"{last['content']}\n\n{note}"
    else:
        new_messages.append({"role": "user", "content": f"REPL output:\n{note}"})
    return granted


# -- the sync driver ---------------------------------------------------------------------


def drive_sync(
    flow: Generator[Effect, Any, TurnResult],
    perform: Callable[[Effect], Any],
    cancel: CancelToken | None = None,
) -> TurnResult:
    """Run ``flow`` to completion, performing each effect in this thread. Once ``cancel``
    is set, the next effect is not performed: ``CancellationError`` goes into the flow."""
    value: Any = None
    error: BaseException | None = None
    while True:
        try:
            effect = flow.send(value) if error is None else flow.throw(error)
        except StopIteration as stop:
            done: TurnResult = stop.value
            return done
        if cancel is not None and cancel.cancelled:
            value, error = None, cancel.error()
            continue
        try:
            value, error = perform(effect), None
        except BaseException as exc:  # delivered into the flow, which decides
            value, error = None, exc


async def drive_async(
    flow: Generator[Effect, Any, TurnResult],
    perform: Callable[[Effect], Awaitable[Any]],
    cancel: CancelToken | None = None,
) -> TurnResult:
    """Run ``flow`` to completion, awaiting each effect (checking ``cancel`` between)."""
    value: Any = None
    error: BaseException | None = None
    while True:
        try:
            effect = flow.send(value) if error is None else flow.throw(error)
        except StopIteration as stop:
            done: TurnResult = stop.value
            return done
        if cancel is not None and cancel.cancelled:
            value, error = None, cancel.error()
            continue
        try:
            value, error = await perform(effect), None
        except BaseException as exc:
            value, error = None, exc
