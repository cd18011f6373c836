"""Trajectory logger: run metadata + iterations, in memory and optionally as JSONL.

The file format is the one the reference visualizer reads: a ``metadata`` line, then
one ``iteration`` line per iteration. We only ever *add* keys (``depth``, ``run_id``,
``parent_id``), so existing tooling keeps working.
"""

from __future__ import annotations

import json
import os
import threading
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import IO, Any

from rlm.base.events import Event, EventBus
from rlm.base.redact import filter_sensitive_keys
from rlm.base.types import RLMIteration, RLMMetadata, serialize_value


def _json_default(value: Any) -> Any:
    # Prompts and locals can hold arbitrary objects; never let one break a log line.
    return serialize_value(value)


def _dump_line(entry: dict[str, Any]) -> str:
    return json.dumps(entry, default=_json_default) + "\n"


class RLMLogger:
    """Captures the trajectory of a completion; also appends it to a JSONL file when
    ``log_dir`` is given. Safe to share between threads (child runs log concurrently)."""

    def __init__(self, log_dir: str | None = None, file_name: str = "rlm") -> None:
        self.log_dir = log_dir
        self.log_file_path: str | None = None
        if log_dir:
            os.makedirs(log_dir, exist_ok=True)
            stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
            suffix = uuid.uuid4().hex[:8]
            self.log_file_path = os.path.join(log_dir, f"{file_name}_{stamp}_{suffix}.jsonl")

        self._lock = threading.RLock()
        self._file: IO[str] | None = None
        self._run_metadata: dict[str, Any] | None = None
        self._iterations: list[dict[str, Any]] = []
        self._iteration_count = 0

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
            self._write({"type": "metadata", "timestamp": datetime.now().isoformat(), **data})

    def log(
        self,
        iteration: RLMIteration,
        *,
        depth: int | None = None,
        run_id: str | None = None,
        parent_id: str | None = None,
    ) -> None:
        """Record one iteration; the tree keys are added only when known."""
        body = iteration.to_dict()  # serialise outside the lock: it can be large
        extras = {"depth": depth, "run_id": run_id, "parent_id": parent_id}
        with self._lock:
            self._iteration_count += 1
            entry: dict[str, Any] = {
                "type": "iteration",
                "iteration": self._iteration_count,
                "timestamp": datetime.now().isoformat(),
                **body,
            }
            entry.update({k: v for k, v in extras.items() if v is not None})
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

    # -- event bus --------------------------------------------------------------

    def attach(self, bus: EventBus, run_id_filter: str | None = None) -> Callable[[], None]:
        """Log from ``bus`` events; with ``run_id_filter`` only that run's events count
        (child runs then get loggers of their own). Returns the unsubscribe function."""

        def on_event(event: Event) -> None:
            if run_id_filter is not None and event.run_id != run_id_filter:
                return
            if event.type == "run_started":
                metadata = event.data.get("metadata")
                if isinstance(metadata, RLMMetadata):
                    self.log_metadata(metadata)
            elif event.type == "iteration_finished":
                iteration = event.data.get("iteration_obj")
                if isinstance(iteration, RLMIteration):
                    self.log(
                        iteration,
                        depth=event.depth,
                        run_id=event.run_id,
                        parent_id=event.parent_id,
                    )
            # subcall_finished(kind="rlm"): the child's own iterations already arrive
            # as iteration_finished events, so there is nothing extra to store.

        return bus.subscribe(on_event)

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


def record_run(logger: Any, bus: EventBus, run_id: str) -> Callable[[], None]:
    """Feed one run's metadata and iterations into ``logger`` (a trajectory is per
    completion, as in rlms). Returns the unsubscribe function."""
    logger.clear_iterations()

    def on_event(event: Event) -> None:
        if event.run_id != run_id:
            return
        if event.type == "run_started":
            logger.log_metadata(event.data["metadata"])
        elif event.type == "iteration_finished":
            logger.log(event.data["iteration_obj"])

    return bus.subscribe(on_event)
