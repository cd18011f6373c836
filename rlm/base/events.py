"""One event envelope for everything that happens in a run.

The loop only *emits*; the JSONL logger, the console printer, the ``on_*`` callbacks,
the server's SSE stream and the viewer all subscribe to the same ``EventBus``. Like
Jupyter's ``parent_header``, ``parent_id`` links a child run's events to the sub-call
that spawned it, so any consumer can rebuild the call tree.

Event types and their ``data`` keys:

=====================  ============================================================
``run_started``        prompt_preview, root_prompt, metadata (RLMMetadata), context_count
``iteration_started``  iteration (1-based); final_call=True on the "answer now" call made
                       when the iterations (or the schema repairs) are used up
``model_reply``        iteration, response, usage (UsageSummary), duration (+ final_call;
                       + cached=True when the call cache answered: ``RLM(cache=...)``)
``code_cell_started``  iteration, index, code
``code_cell_finished`` iteration, index, code, result (REPLResult), duration
``iteration_finished`` iteration, iteration_obj (RLMIteration), duration (+ final_call)
``subcall_started``    kind ("llm"|"rlm"), model, prompt_preview, count (+ child_depth for rlm)
``subcall_finished``   kind, model, duration, usage (UsageSummary|None: an rlm child's is
                       its whole subtree's), error (+ child_depth, child_run_id for rlm);
                       usage.cached_calls: the calls of it the call cache answered
``budget_update``      iteration, spent_usd, tokens, calls, elapsed (this run and its
                       children), remaining ({calls, tokens, usd, seconds}, None = no limit)
``final_answer``       answer, iterations, source ("answer"|"FINAL"|"FINAL_VAR"|"default")
``schema_repair``      iteration, answer, errors (list of str), repair (1-based), repairs
                       (the most allowed): an answer refused by ``output_schema``
``call_retry``         purpose (iteration|final_answer|compaction|subcall), model, attempt
                       (1-based, the one that failed), attempts, error, wait (seconds)
``limit_exceeded``     kind, message, partial_answer
``run_finished``       response, usage (UsageSummary), execution_time, error
=====================  ============================================================
"""

from __future__ import annotations

import itertools
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

EventType = Literal[
    "run_started",
    "iteration_started",
    "model_reply",
    "code_cell_started",
    "code_cell_finished",
    "iteration_finished",
    "subcall_started",
    "subcall_finished",
    "budget_update",
    "final_answer",
    "schema_repair",
    "call_retry",
    "limit_exceeded",
    "run_finished",
]

Subscriber = Callable[["Event"], None]

_ids = itertools.count(1)


def new_event_id() -> str:
    return f"ev{next(_ids)}"


@dataclass(frozen=True, slots=True)
class Event:
    """One thing that happened. ``run_id`` names the run (root or child) that emitted it;
    ``parent_id`` is the ``run_id`` of the run that spawned it (``None`` for a root)."""

    type: EventType
    run_id: str
    parent_id: str | None
    session_id: str | None
    turn: int
    depth: int
    data: dict[str, Any] = field(default_factory=dict)
    id: str = field(default_factory=new_event_id)
    time: float = field(default_factory=time.time)


class EventBus:
    """Fan-out of events to subscribers. Subscriber errors never break a run."""

    def __init__(self) -> None:
        self._subscribers: tuple[Subscriber, ...] = ()
        self._lock = threading.Lock()
        self._warned: set[int] = set()

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """Add ``callback``; returns a function that removes it again."""
        with self._lock:
            self._subscribers = (*self._subscribers, callback)

        def unsubscribe() -> None:
            with self._lock:
                self._subscribers = tuple(s for s in self._subscribers if s is not callback)

        return unsubscribe

    @property
    def active(self) -> bool:
        """True when someone listens; lets the loop skip building event payloads."""
        return bool(self._subscribers)

    def emit(self, event: Event) -> None:
        for callback in self._subscribers:  # tuple snapshot: safe against (un)subscribe
            try:
                callback(event)
            except Exception as exc:
                key = id(callback)
                if key not in self._warned:
                    self._warned.add(key)
                    warnings.warn(
                        f"rlmx: event subscriber {callback!r} raised {exc!r}; "
                        "further errors from it are ignored",
                        stacklevel=2,
                    )


@dataclass
class RunScope:
    """Identity of one run (root or child) for stamping its events."""

    bus: EventBus
    run_id: str
    parent_id: str | None = None
    session_id: str | None = None
    turn: int = 0
    depth: int = 0

    def emit(self, type: EventType, **data: Any) -> None:
        if self.bus.active:
            self.bus.emit(
                Event(
                    type, self.run_id, self.parent_id, self.session_id, self.turn, self.depth, data
                )
            )
