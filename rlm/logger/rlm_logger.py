"""Trajectory logger: a run's records, in memory and optionally as JSONL.

The file is the one the reference visualizer reads: a ``metadata`` line, then one
``iteration`` line per iteration, in ``RLMIteration.to_dict()``'s layout. Keys are only
ever *added* to those lines, and newer record types are added beside them, so existing
tooling keeps working. Format version 2 (``"log_version": 2`` on the metadata line):

``metadata``      the run configuration (secrets dropped), once per file
``run_started``   run_id, parent_id, depth, session_id, turn, question (the
                  ``root_prompt``, or null), prompt_preview, context_count
``context``       run_id, name, summary (see below); ``value`` only with
                  ``log_context=True``, and only the first time a content is logged
``iteration``     iteration, timestamp, the iteration (see ``entries``), and when known
                  depth, run_id, parent_id, ``usage`` (the root model's own call in this
                  iteration, ``UsageSummary.to_dict()``), ``model_time`` (seconds) and
                  ``final_call`` (the "answer now" call made when the turns ran out)
``run_finished``  run_id, outcome (answer | max_iterations | limit | cancelled |
                  error), answer_source, limit, iterations (final call not counted),
                  final_call, execution_time, usage_summary (the run and everything it
                  spawned), total_calls, input_tokens, output_tokens, total_tokens,
                  total_cost, response, error
``recorded_*``    a recording's lines, only with ``RLM(..., record=True)``
                  (``replay_log`` lists them; ``write_record`` writes them)

Values never reach the log whole: each REPL variable is a summary (type, length, a
preview of ``preview_chars`` characters, the SHA-256 of the whole value), and a context
is described once per run by a ``context`` record whose ``summary.sha256`` is the one
the variables bound to it carry. Long stdout/stderr and sub-call prompts/responses are
cut to ``max_text_chars`` (head and tail). A log therefore grows with the number of
iterations, not with the size of the data.
"""

from __future__ import annotations

import json
import os
import threading
import uuid
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import IO, Any

from rlm.base.events import EventBus
from rlm.base.redact import filter_sensitive_keys, redact_text
from rlm.base.types import RLMIteration, RLMMetadata, serialize_value
from rlm.logger.entries import EntryBuilder
from rlm.logger.recorder import RunRecorder, record_run
from rlm.logger.summary import DEFAULT_PREVIEW_CHARS, ValueHasher, clip_text, summarize

LOG_VERSION = 2
DEFAULT_MAX_TEXT_CHARS = 100_000

__all__ = ["DEFAULT_MAX_TEXT_CHARS", "LOG_VERSION", "RLMLogger", "record_run"]


def _json_default(value: Any) -> Any:
    # Prompts can hold arbitrary objects; never let one break a log line.
    return serialize_value(value)


def _dump_line(entry: dict[str, Any]) -> str:
    return json.dumps(entry, default=_json_default) + "\n"


def _now() -> str:
    return datetime.now().isoformat()


def _tree(depth: int | None, run_id: str | None, parent_id: str | None) -> dict[str, Any]:
    keys = {"depth": depth, "run_id": run_id, "parent_id": parent_id}
    return {k: v for k, v in keys.items() if v is not None}


class RLMLogger:
    """Captures the trajectory of a completion; also appends it to a JSONL file when
    ``log_dir`` is given. Safe to share between threads (child runs log concurrently).

    ``log_context=True`` writes each context's whole value into its ``context`` record
    (once per content per file); by default a log holds only its summary and digest.
    ``preview_chars`` bounds each variable's preview; ``max_text_chars`` (None: no
    bound) bounds each stdout/stderr and each sub-call prompt/response.
    """

    def __init__(
        self,
        log_dir: str | None = None,
        file_name: str = "rlm",
        *,
        log_context: bool = False,
        preview_chars: int = DEFAULT_PREVIEW_CHARS,
        max_text_chars: int | None = DEFAULT_MAX_TEXT_CHARS,
    ) -> None:
        self.log_dir = log_dir
        self.log_file_path: str | None = None
        if log_dir:
            os.makedirs(log_dir, exist_ok=True)
            stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
            suffix = uuid.uuid4().hex[:8]
            self.log_file_path = os.path.join(log_dir, f"{file_name}_{stamp}_{suffix}.jsonl")
        self.log_context = log_context
        self._hasher = ValueHasher()
        self._builder = EntryBuilder(max(preview_chars, 0), max_text_chars, self._hasher)

        self._lock = threading.RLock()
        self._file: IO[str] | None = None
        self._run_metadata: dict[str, Any] | None = None
        self._iterations: list[dict[str, Any]] = []
        self._iteration_count = 0
        self._contexts_logged: set[tuple[str, str]] = set()  # (run_id or "", sha256)
        self._values_logged: set[str] = set()  # sha256 of contexts written in full

    def child_logger(self) -> RLMLogger:
        """A memory-only logger with this one's settings, for a child run: its
        trajectory is nested in the parent's sub-call, so it needs no file of its own."""
        return RLMLogger(
            log_context=self.log_context,
            preview_chars=self._builder.preview_chars,
            max_text_chars=self._builder.max_text_chars,
        )

    # -- rlms API ---------------------------------------------------------------

    def log_metadata(self, metadata: RLMMetadata) -> None:
        """Record the run configuration; only the first call counts."""
        with self._lock:
            if self._run_metadata is not None:
                return
            data = metadata.to_dict()
            for key in ("backend_kwargs", "environment_kwargs"):
                if isinstance(data.get(key), dict):
                    data[key] = filter_sensitive_keys(data[key])
            self._run_metadata = data
            self._write(
                {"type": "metadata", "timestamp": _now(), **data, "log_version": LOG_VERSION}
            )

    def log(
        self,
        iteration: RLMIteration,
        *,
        depth: int | None = None,
        run_id: str | None = None,
        parent_id: str | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        """Record one iteration; the tree keys are added only when known, ``extra``
        keys (``usage``, ``model_time``, ``final_call``) after them. A context variable
        not yet described for this run gets its ``context`` record first."""
        body, contexts = self._builder.iteration(iteration)  # outside the lock: O(size)
        with self._lock:
            for seen in contexts:
                self._log_context(seen.value, seen.summary, seen.name, run_id)
            self._iteration_count += 1
            entry: dict[str, Any] = {
                "type": "iteration",
                "iteration": self._iteration_count,
                "timestamp": _now(),
                **body,
                **_tree(depth, run_id, parent_id),
                **(extra or {}),
            }
            self._iterations.append(entry)
            self._write(entry)

    def clear_iterations(self) -> None:
        """Start a new per-completion trajectory (the file keeps everything)."""
        with self._lock:
            self._iterations = []
            self._iteration_count = 0

    def get_trajectory(self) -> dict[str, Any] | None:
        """``{"run_metadata": ..., "iterations": [...]}``, or None before any metadata."""
        with self._lock:
            if self._run_metadata is None:
                return None
            return {"run_metadata": self._run_metadata, "iterations": list(self._iterations)}

    @property
    def iteration_count(self) -> int:
        return self._iteration_count

    # -- run records --------------------------------------------------------------

    def log_run_started(
        self,
        *,
        run_id: str,
        parent_id: str | None = None,
        depth: int | None = None,
        question: Any = None,
        prompt_preview: Any = None,
        context_count: Any = None,
        session_id: str | None = None,
        turn: int | None = None,
    ) -> None:
        """The ``run_started`` record: who the run is and what it was asked."""
        limit = self._builder.max_text_chars
        record: dict[str, Any] = {
            "type": "run_started",
            "timestamp": _now(),
            **_tree(depth, run_id, parent_id),
            "session_id": session_id,
            "turn": turn,
            "question": None if question is None else clip_text(str(question), limit)[0],
            "prompt_preview": None if prompt_preview is None else str(prompt_preview),
            "context_count": context_count if isinstance(context_count, int) else None,
        }
        with self._lock:
            self._write(record)

    def record_context(
        self, value: Any, *, name: str = "context", run_id: str | None = None
    ) -> None:
        """Describe a run's context (a ``context`` record), unless this run already
        has one for the same content."""
        summary = summarize(value, self._builder.preview_chars, self._hasher)
        with self._lock:
            self._log_context(value, summary, name, run_id)

    def _log_context(
        self, value: Any, summary: dict[str, Any], name: str, run_id: str | None
    ) -> None:
        # Caller holds the lock.
        key = (run_id or "", str(summary["sha256"]))
        if key in self._contexts_logged:
            return
        self._contexts_logged.add(key)
        record: dict[str, Any] = {"type": "context", "timestamp": _now()}
        if run_id is not None:
            record["run_id"] = run_id
        record.update(name=name, summary=summary)
        if self.log_context and key[1] not in self._values_logged:
            self._values_logged.add(key[1])
            record["value"] = value if isinstance(value, str) else serialize_value(value)
        self._write(record)

    def log_run_finished(
        self,
        *,
        run_id: str,
        parent_id: str | None = None,
        depth: int | None = None,
        outcome: str,
        answer_source: str | None = None,
        limit: str | None = None,
        iterations: int = 0,
        final_call: bool = False,
        usage: Mapping[str, Any] | None = None,
        execution_time: Any = None,
        response: Any = None,
        error: str | None = None,
    ) -> None:
        """The closing ``run_finished`` record: outcome and totals. Also lets go of the
        values cached for hashing."""
        models = (usage or {}).get("model_usage_summaries") or {}
        models = models.values() if isinstance(models, Mapping) else []
        tokens_in = sum(int(m.get("total_input_tokens") or 0) for m in models)
        tokens_out = sum(int(m.get("total_output_tokens") or 0) for m in models)
        record: dict[str, Any] = {
            "type": "run_finished",
            "timestamp": _now(),
            **_tree(depth, run_id, parent_id),
            "outcome": outcome,
            "answer_source": answer_source,
            "limit": limit,
            "iterations": iterations,
            "final_call": final_call,
            "execution_time": execution_time if isinstance(execution_time, int | float) else None,
            "usage_summary": dict(usage) if usage is not None else None,
            "total_calls": sum(int(m.get("total_calls") or 0) for m in models),
            "input_tokens": tokens_in,
            "output_tokens": tokens_out,
            "total_tokens": tokens_in + tokens_out,
            "total_cost": (usage or {}).get("total_cost"),
            "response": None if response is None else str(response),
            "error": None if error is None else redact_text(error),
        }
        with self._lock:
            self._write(record)
        self._hasher.clear()

    def write_record(self, entry: Mapping[str, Any]) -> None:
        """Append a line of another kind to the file (a recording's ``recorded_*``
        lines: ``rlm.logger.replay_log``); it is not kept in memory."""
        with self._lock:
            self._write({"timestamp": _now(), **entry})

    # -- event bus --------------------------------------------------------------

    def attach(self, bus: EventBus, run_id_filter: str | None = None) -> Callable[[], None]:
        """Log from ``bus`` events (see ``recorder``); with ``run_id_filter`` only that
        run's events count (child runs then get loggers of their own). Returns the
        unsubscribe function."""
        if run_id_filter is None:
            return RunRecorder(self).subscribe(bus)
        return RunRecorder(self, lambda event: event.run_id == run_id_filter).subscribe(bus)

    # -- file handling ----------------------------------------------------------

    def _write(self, entry: dict[str, Any]) -> None:
        # Caller holds the lock. One handle, opened lazily, flushed per line so a
        # crash loses at most the line being written.
        if self.log_file_path is None:
            return
        if self._file is None or self._file.closed:
            self._file = open(self.log_file_path, "a", encoding="utf-8")  # noqa: SIM115
        self._file.write(_dump_line(entry))
        self._file.flush()

    def close(self) -> None:
        """Close the log file (a later write reopens it in append mode)."""
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None

    def __enter__(self) -> RLMLogger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        # A plain try (not contextlib.suppress): at shutdown module globals may be gone.
        try:  # noqa: SIM105
            self.close()
        except Exception:
            pass

    def __repr__(self) -> str:
        return (
            f"RLMLogger(log_file_path={self.log_file_path!r}, iterations={self._iteration_count})"
        )
