"""A run's recording in its JSONL log: the entries written, and reading them back.

A recorded run (``RLM(..., record=True)``) adds these lines to the trajectory log,
beside the ones ``rlm_logger`` documents (old readers skip types they do not know):

``recorded_input``   turn, prompt (the completion's context), root_prompt,
                     output_schema (JSON Schema or null), settings (what a replay needs
                     to build the same RLM: depth, iterations, prompts, limits, ...)
``recorded_client``  backend, model_name, structured_output, reports_cost,
                     context_window: one per client the run made
``recorded_window``  model_name, window: what the provider reported as its window
``recorded_call``    seq, request {model, purpose, messages | prompt, schema},
                     response {text, model, usage} or error {type, message, status,
                     retryable}, duration (seconds)
``recorded_run``     run_id, parent_id, depth, turn, prompt_preview, root_prompt
``recorded_cell``    run_id, depth, iteration, index, code, stdout, stderr (each cut
                     to the logger's ``max_text_chars``), stdout_sha256, stderr_sha256
                     (of the whole text), duration
``recorded_result``  run_id, response, error

Every string that reaches these lines went through ``redact_secrets`` first. ``RunTape``
is the event-bus subscriber that builds the run and cell records (a replay uses it too,
in memory, to compare); ``load_recording`` reads a log back, refusing a file that is
not a recording with ``RecordingError`` (what is wrong, and where).
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rlm.base.events import Event, EventBus
from rlm.base.redact import redact_secrets, redact_text

Entry = dict[str, Any]
RECORD_TYPES = frozenset(
    {
        "recorded_input",
        "recorded_client",
        "recorded_window",
        "recorded_call",
        "recorded_run",
        "recorded_cell",
        "recorded_result",
    }
)


class RecordingError(ValueError):
    """A file that cannot be replayed: not JSONL, or no recorded calls."""


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _clip(text: str, limit: int | None) -> str:
    if limit is None or len(text) <= limit:
        return text
    half = max(limit // 2, 1)
    return f"{text[:half]}\n… [{len(text) - 2 * half:,} characters not recorded] …\n{text[-half:]}"


@dataclass
class CellRecord:
    run_id: str
    iteration: int
    index: int
    code: str
    stdout: str
    stderr: str
    stdout_sha256: str
    stderr_sha256: str
    duration: float | None = None

    @property
    def key(self) -> tuple[int, int]:
        return (self.iteration, self.index)

    @property
    def signature(self) -> tuple[str, str, str]:
        return (self.code, self.stdout_sha256, self.stderr_sha256)


@dataclass
class RunRecord:
    run_id: str
    parent_id: str | None
    depth: int
    turn: int
    prompt_preview: str | None
    root_prompt: str | None
    order: int = 0
    cells: list[CellRecord] = field(default_factory=list)
    finished: bool = False
    response: str | None = None
    error: str | None = None

    @property
    def group(self) -> tuple[str | None, str | None]:
        """What tells sibling runs apart without their ids."""
        return (self.prompt_preview, self.root_prompt)


class RunTape:
    """Event-bus subscriber: every run's record and its cells (with ``sink``, each also
    written as a ``recorded_*`` entry). ``max_text_chars`` cuts recorded outputs."""

    def __init__(
        self, sink: Callable[[Entry], None] | None = None, max_text_chars: int | None = 100_000
    ) -> None:
        self.sink = sink
        self.max_text_chars = max_text_chars
        self.runs: dict[str, RunRecord] = {}
        self._lock = threading.Lock()

    def subscribe(self, bus: EventBus) -> Callable[[], None]:
        return bus.subscribe(self)

    def __call__(self, event: Event) -> None:
        if event.type == "run_started":
            self._started(event)
        elif event.type == "code_cell_finished":
            self._cell(event)
        elif event.type == "run_finished":
            self._finished(event)

    def _started(self, event: Event) -> None:
        preview, question = event.data.get("prompt_preview"), event.data.get("root_prompt")
        run = RunRecord(
            event.run_id,
            event.parent_id,
            event.depth,
            event.turn,
            redact_text(preview) if isinstance(preview, str) else None,
            redact_text(question) if isinstance(question, str) else None,
        )
        with self._lock:
            run.order = len(self.runs)
            self.runs[event.run_id] = run
        if self.sink is not None:
            self.sink(
                {
                    "type": "recorded_run",
                    "run_id": run.run_id,
                    "parent_id": run.parent_id,
                    "depth": run.depth,
                    "turn": run.turn,
                    "prompt_preview": run.prompt_preview,
                    "root_prompt": run.root_prompt,
                }
            )

    def _cell(self, event: Event) -> None:
        result = event.data.get("result")
        stdout = redact_text(str(getattr(result, "stdout", "") or ""))
        stderr = redact_text(str(getattr(result, "stderr", "") or ""))
        duration = event.data.get("duration")
        cell = CellRecord(
            event.run_id,
            int(event.data.get("iteration") or 0),
            int(event.data.get("index") or 0),
            redact_text(str(event.data.get("code") or "")),
            _clip(stdout, self.max_text_chars),
            _clip(stderr, self.max_text_chars),
            _sha(stdout),
            _sha(stderr),
            float(duration) if isinstance(duration, int | float) else None,
        )
        with self._lock:
            run = self.runs.get(event.run_id)
            if run is not None:
                run.cells.append(cell)
        if self.sink is not None:
            self.sink({"type": "recorded_cell", "depth": event.depth, **cell.__dict__})

    def _finished(self, event: Event) -> None:
        response, error = event.data.get("response"), event.data.get("error")
        response = redact_text(str(response)) if response is not None else None
        error = redact_text(str(error)) if error is not None else None
        with self._lock:
            run = self.runs.get(event.run_id)
            if run is not None:
                run.finished, run.response, run.error = True, response, error
        if self.sink is not None:
            self.sink(
                {
                    "type": "recorded_result",
                    "run_id": event.run_id,
                    "response": response,
                    "error": error,
                }
            )


def redacted_input(
    turn: int, prompt: Any, root_prompt: str | None, output_schema: Any, settings: dict[str, Any]
) -> Entry:
    """The ``recorded_input`` entry of one completion."""
    return {
        "type": "recorded_input",
        "turn": turn,
        "prompt": json.loads(json.dumps(redact_secrets(prompt), default=str)),
        "root_prompt": redact_text(root_prompt) if root_prompt is not None else None,
        "output_schema": output_schema,
        "settings": redact_secrets(settings),
    }


@dataclass
class Recording:
    """A recording read back from its log."""

    path: str
    metadata: dict[str, Any] | None
    inputs: list[Entry]
    clients: list[Entry]
    windows: dict[str, Any]  # tokens, or a Window's fields
    calls: list[Entry]
    runs: dict[str, RunRecord]

    def client_for(self, backend: str, model_name: str | None) -> Entry | None:
        """The recorded client a replay's ``(backend, model_name)`` stands for: the one
        with that model name, else (no name given) the first of that backend."""
        for client in self.clients:
            if model_name and client.get("model_name") == model_name:
                return client
        if model_name:
            return None
        for client in self.clients:
            if client.get("backend") == backend:
                return client
        return self.clients[0] if self.clients else None


def _entries(path: str) -> list[Entry]:
    try:
        with open(path, encoding="utf-8") as f:
            lines = [line for line in f.read().splitlines() if line.strip()]
    except FileNotFoundError:
        raise RecordingError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise RecordingError(f"{path}: a folder, not a run log (.jsonl)") from None
    except UnicodeDecodeError:
        raise RecordingError(f"{path}: not a text file (a run log is JSON lines)") from None
    entries: list[Entry] = []
    for number, line in enumerate(lines, start=1):
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as exc:
            if number == len(lines) and number > 1:  # cut short by a killed run
                break
            raise RecordingError(f"{path}:{number}: not a JSON line ({exc.msg})") from None
        if not isinstance(entry, dict) or not isinstance(entry.get("type"), str):
            raise RecordingError(f'{path}:{number}: not a log entry (no "type")')
        entries.append(entry)
    return entries


def _cell_of(entry: Entry) -> CellRecord:
    duration = entry.get("duration")
    return CellRecord(
        str(entry.get("run_id")),
        int(entry.get("iteration") or 0),
        int(entry.get("index") or 0),
        str(entry.get("code") or ""),
        str(entry.get("stdout") or ""),
        str(entry.get("stderr") or ""),
        str(entry.get("stdout_sha256") or ""),
        str(entry.get("stderr_sha256") or ""),
        float(duration) if isinstance(duration, int | float) else None,
    )


def _run_of(entry: Entry) -> RunRecord:
    return RunRecord(
        str(entry.get("run_id")),
        entry.get("parent_id") if isinstance(entry.get("parent_id"), str) else None,
        int(entry.get("depth") or 0),
        int(entry.get("turn") or 0),
        entry.get("prompt_preview"),
        entry.get("root_prompt"),
    )


def load_recording(path: str | os.PathLike[str]) -> Recording:
    """Read the recording in the run log at ``path``; ``RecordingError`` if it is not one."""
    where = os.fspath(path)
    entries = _entries(where)
    found = Recording(where, None, [], [], {}, [], {})
    for number, entry in enumerate(entries, start=1):
        kind = entry["type"]
        if kind == "metadata" and found.metadata is None:
            found.metadata = entry
        elif kind == "recorded_input":
            found.inputs.append(entry)
        elif kind == "recorded_client":
            found.clients.append(entry)
        elif kind == "recorded_window" and isinstance(entry.get("window"), int | dict):
            found.windows[str(entry.get("model_name"))] = entry["window"]
        elif kind == "recorded_call":
            request = entry.get("request")
            if not isinstance(request, dict) or not (
                isinstance(entry.get("response"), dict) or isinstance(entry.get("error"), dict)
            ):
                raise RecordingError(
                    f"{where}:{number}: a recorded call without its request or response"
                )
            found.calls.append(entry)
        elif kind == "recorded_run":
            run = _run_of(entry)
            run.order = len(found.runs)
            found.runs[run.run_id] = run
        elif kind == "recorded_cell":
            owner = found.runs.get(str(entry.get("run_id")))
            if owner is not None:
                owner.cells.append(_cell_of(entry))
        elif kind == "recorded_result":
            owner = found.runs.get(str(entry.get("run_id")))
            if owner is not None:
                owner.finished, owner.response, owner.error = (
                    True,
                    entry.get("response"),
                    entry.get("error"),
                )
    if not found.calls and not found.inputs:
        hint = "record one with RLM(..., record=True, logger=RLMLogger(log_dir=...))"
        raise RecordingError(f"{where}: not a recorded run (no recorded model calls; {hint})")
    return found


__all__ = [
    "RECORD_TYPES",
    "CellRecord",
    "Recording",
    "RecordingError",
    "RunRecord",
    "RunTape",
    "load_recording",
    "redacted_input",
]
