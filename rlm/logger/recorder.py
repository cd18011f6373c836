"""From run events to log records: what ``RLMLogger.attach`` and ``record_run`` do.

Per run (``run_id``) the recorder writes, through the logger's methods:

- ``run_started``: the run's metadata (first one only) and a ``run_started`` record
  (question, depth, parent); the context too, when the event carries it (``context``);
- ``model_reply``: nothing yet; the root model's usage and duration wait for the
  iteration they belong to, whose line then carries ``usage`` and ``model_time``;
- ``iteration_finished``: the iteration line. An iteration numbered past the run's
  ``max_iterations`` is the "answer now" call made when the turns ran out: it is marked
  ``"final_call": true``;
- ``final_answer`` / ``limit_exceeded``: remembered for the outcome;
- ``run_finished``: the closing ``run_finished`` record (totals and outcome).

A logger without the newer methods (an rlms-style object with only ``log_metadata``
and ``log``) gets the metadata and the iterations, as before.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rlm.base.events import Event, EventBus
from rlm.base.types import RLMIteration, RLMMetadata


@dataclass
class _RunState:
    max_iterations: int | None = None
    usage: dict[str, Any] | None = None  # the pending model_reply's
    model_time: float | None = None
    iterations: int = 0
    final_call: bool = False
    source: str | None = None
    limit: str | None = None


def _usage_dict(usage: Any) -> dict[str, Any] | None:
    to_dict = getattr(usage, "to_dict", None)
    if callable(to_dict):
        data = to_dict()
        return data if isinstance(data, dict) else None
    return dict(usage) if isinstance(usage, dict) else None


def outcome_of(error: str | None, source: str | None, limit: str | None) -> str:
    """``answer`` | ``max_iterations`` (answered by the final call) | ``cancelled`` |
    ``limit`` | ``error``."""
    if error is None:
        return "max_iterations" if source == "default" else "answer"
    if limit == "cancelled" or error.startswith("CancellationError"):
        return "cancelled"
    return "limit" if limit else "error"


class RunRecorder:
    """An event-bus subscriber feeding ``logger``; ``accept`` picks the events."""

    def __init__(self, logger: Any, accept: Callable[[Event], bool] | None = None) -> None:
        self.logger = logger
        self.accept = accept
        self.full = callable(getattr(logger, "log_run_started", None))
        self._runs: dict[str, _RunState] = {}

    def subscribe(self, bus: EventBus) -> Callable[[], None]:
        return bus.subscribe(self)

    def __call__(self, event: Event) -> None:
        if self.accept is not None and not self.accept(event):
            return
        handler = getattr(self, "_on_" + event.type, None)
        if handler is not None:
            handler(event, self._runs.setdefault(event.run_id, _RunState()))

    def _tree(self, event: Event) -> dict[str, Any]:
        return {"depth": event.depth, "run_id": event.run_id, "parent_id": event.parent_id}

    def _on_run_started(self, event: Event, state: _RunState) -> None:
        metadata = event.data.get("metadata")
        if isinstance(metadata, RLMMetadata):
            state.max_iterations = metadata.max_iterations
            self.logger.log_metadata(metadata)
        if not self.full:
            return
        self.logger.log_run_started(
            **self._tree(event),
            question=event.data.get("root_prompt"),
            prompt_preview=event.data.get("prompt_preview"),
            context_count=event.data.get("context_count"),
            session_id=event.session_id,
            turn=event.turn,
        )
        if "context" in event.data:
            self.logger.record_context(event.data["context"], name="context", run_id=event.run_id)

    def _on_model_reply(self, event: Event, state: _RunState) -> None:
        state.usage = _usage_dict(event.data.get("usage"))
        duration = event.data.get("duration")
        state.model_time = float(duration) if isinstance(duration, int | float) else None

    def _on_iteration_finished(self, event: Event, state: _RunState) -> None:
        iteration = event.data.get("iteration_obj")
        if not isinstance(iteration, RLMIteration):
            return
        if not self.full:
            self.logger.log(iteration)
            return
        number = event.data.get("iteration")
        final_call = (
            isinstance(number, int)
            and state.max_iterations is not None
            and number > state.max_iterations
        )
        extra: dict[str, Any] = {}
        if state.usage is not None:
            extra["usage"] = state.usage
        model_time = state.model_time
        if model_time is None and final_call:  # no model_reply: the event's is the call's
            duration = event.data.get("duration")
            model_time = float(duration) if isinstance(duration, int | float) else None
        if model_time is not None:
            extra["model_time"] = model_time
        if final_call:
            extra["final_call"] = True
            state.final_call = True
        else:
            state.iterations += 1
        state.usage, state.model_time = None, None
        self.logger.log(iteration, **self._tree(event), extra=extra)

    def _on_final_answer(self, event: Event, state: _RunState) -> None:
        source = event.data.get("source")
        state.source = source if isinstance(source, str) else None

    def _on_limit_exceeded(self, event: Event, state: _RunState) -> None:
        kind = event.data.get("kind")
        state.limit = str(kind) if kind is not None else "limit"

    def _on_run_finished(self, event: Event, state: _RunState) -> None:
        self._runs.pop(event.run_id, None)
        if not self.full:
            return
        error = event.data.get("error")
        error = str(error) if error is not None else None
        self.logger.log_run_finished(
            **self._tree(event),
            outcome=outcome_of(error, state.source, state.limit),
            answer_source=state.source,
            limit=state.limit,
            iterations=state.iterations,
            final_call=state.final_call,
            usage=_usage_dict(event.data.get("usage")),
            execution_time=event.data.get("execution_time"),
            response=event.data.get("response"),
            error=error,
        )


def record_run(logger: Any, bus: EventBus, run_id: str) -> Callable[[], None]:
    """Feed one run's records into ``logger`` (a trajectory is per completion, as in
    rlms: the in-memory iterations restart). Returns the unsubscribe function."""
    logger.clear_iterations()
    return RunRecorder(logger, lambda event: event.run_id == run_id).subscribe(bus)
