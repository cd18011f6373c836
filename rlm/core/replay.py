"""Record a run, replay it, and say where the replay diverged.

``RLM(..., record=True)`` (with a logger that writes a file) or ``record=DIR`` (a new
``RLMLogger(log_dir=DIR)``) makes a ``Recorder``: every client the run makes is a
``RecordingLM`` (``rlm.clients.replay``), a ``RunTape`` writes each run's cells and
result, and each completion's input is written first (``rlm.logger.replay_log`` lists
the lines). ``RLM(..., replay=LOG)`` makes a ``Replayer``: every client is a
``ReplayLM`` answering from LOG, so no model or network is used, while the code
really runs again; ``RLM.replay_report()`` then compares the new run with the
recording (``compare_runs``) and adds the book's call divergences.

Runs are matched without their ids (which differ each time): root runs by order, a
run's ``rlm_query`` children by (prompt preview, question), and among siblings with
the same preview (a batch) first by identical cells and answer, then by order. A run's
children are compared before its own cells (a child runs inside its parent's cell, so
its divergence comes first), then its answer; the model-call divergences follow.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import zip_longest
from typing import TYPE_CHECKING, Any

from rlm.base.errors import ConfigurationError
from rlm.base.events import EventBus
from rlm.clients.base_lm import BaseLM
from rlm.clients.replay import CallDivergence, RecordedCall, ReplayBook, recording, replay_client
from rlm.logger.replay_log import (
    Recording,
    RecordingError,
    RunRecord,
    RunTape,
    load_recording,
    redacted_input,
)
from rlm.logger.rlm_logger import RLMLogger

if TYPE_CHECKING:
    from rlm.core.config import RLMConfig

ClientFactory = Callable[[str, dict[str, Any]], BaseLM]
SHOWN = 2000  # characters of a recorded or new value a divergence shows


def _shown(value: Any) -> Any:
    if isinstance(value, str) and len(value) > SHOWN:
        return value[:SHOWN] + f" … [{len(value) - SHOWN:,} more characters]"
    return value


@dataclass(frozen=True)
class Divergence:
    """Where a replay did not do what the recording did.

    ``kind``: ``cell_output`` (a cell printed something else), ``cell_code`` (a cell
    ran other code), ``cell_missing`` / ``cell_extra``, ``answer_differs``,
    ``run_missing`` / ``run_extra`` (an ``rlm_query`` child), ``request_differs`` (a
    model call asked something else; answered with the recorded reply),
    ``unrecorded_call`` (a model call the recording does not hold; it failed),
    ``unused_call`` (a recorded call the replay never made)."""

    kind: str
    where: str
    recorded: Any = None
    new: Any = None

    def __str__(self) -> str:
        return f"{self.kind} at {self.where}: recorded {self.recorded!r}, new {self.new!r}"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "where": self.where, "recorded": self.recorded, "new": self.new}


@dataclass
class ReplayReport:
    """What a replay found: ``identical`` when nothing diverged."""

    divergences: list[Divergence]
    calls_recorded: int
    calls_answered: int
    answers: list[tuple[str | None, str | None]] = field(default_factory=list)

    @property
    def identical(self) -> bool:
        return not self.divergences

    def summary(self) -> str:
        head = f"{self.calls_answered} of {self.calls_recorded} recorded model calls replayed; " + (
            "identical" if self.identical else f"{len(self.divergences)} divergence(s)"
        )
        lines = [head]
        for d in self.divergences:
            lines.append(f"- {d.kind} at {d.where}")
            if d.recorded is not None or d.new is not None:
                lines.append(f"    recorded: {d.recorded!r}")
                lines.append(f"    new:      {d.new!r}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "identical": self.identical,
            "calls_recorded": self.calls_recorded,
            "calls_answered": self.calls_answered,
            "answers": [{"recorded": r, "new": n} for r, n in self.answers],
            "divergences": [d.to_dict() for d in self.divergences],
        }


# -- comparing runs --------------------------------------------------------------------


def _children(runs: dict[str, RunRecord], parent: str | None) -> list[RunRecord]:
    return sorted((r for r in runs.values() if r.parent_id == parent), key=lambda r: r.order)


def _signature(run: RunRecord) -> tuple[Any, ...]:
    return (tuple(c.signature for c in run.cells), run.response)


class _Comparison:
    def __init__(self, recorded: dict[str, RunRecord], new: dict[str, RunRecord]) -> None:
        self.recorded, self.new = recorded, new
        self.found: list[Divergence] = []

    def run(self, a: RunRecord | None, b: RunRecord | None, label: str) -> None:
        if b is None:
            assert a is not None
            self.found.append(Divergence("run_missing", label, a.prompt_preview, None))
            return
        if a is None:
            self.found.append(Divergence("run_extra", label, None, b.prompt_preview))
            return
        self.children(a, b, label)  # first: a child runs inside its parent's cell
        self.cells(a, b, label)
        if a.response != b.response or (a.error is None) != (b.error is None):
            recorded = a.response if a.error is None else f"error: {a.error}"
            new = b.response if b.error is None else f"error: {b.error}"
            self.found.append(Divergence("answer_differs", label, _shown(recorded), _shown(new)))

    def cells(self, a: RunRecord, b: RunRecord, label: str) -> None:
        theirs = {c.key: c for c in a.cells}
        ours = {c.key: c for c in b.cells}
        for key in sorted(set(theirs) | set(ours)):
            where = f"{label}, iteration {key[0]}, cell {key[1] + 1}"
            rc, nc = theirs.get(key), ours.get(key)
            if nc is None:
                assert rc is not None
                self.found.append(Divergence("cell_missing", where, _shown(rc.code), None))
            elif rc is None:
                self.found.append(Divergence("cell_extra", where, None, _shown(nc.code)))
            elif rc.code != nc.code:
                self.found.append(Divergence("cell_code", where, _shown(rc.code), _shown(nc.code)))
            elif rc.stdout_sha256 != nc.stdout_sha256:
                self.found.append(
                    Divergence("cell_output", where, _shown(rc.stdout), _shown(nc.stdout))
                )
            elif rc.stderr_sha256 != nc.stderr_sha256:
                self.found.append(
                    Divergence(
                        "cell_output", where + " (stderr)", _shown(rc.stderr), _shown(nc.stderr)
                    )
                )

    def children(self, a: RunRecord, b: RunRecord, label: str) -> None:
        theirs = _children(self.recorded, a.run_id)
        ours = _children(self.new, b.run_id)
        groups: dict[Any, tuple[list[RunRecord], list[RunRecord]]] = {}
        for run in theirs:
            groups.setdefault(run.group, ([], []))[0].append(run)
        for run in ours:
            groups.setdefault(run.group, ([], []))[1].append(run)
        for (preview, _), (recorded, new) in groups.items():
            pairs: list[tuple[RunRecord | None, RunRecord | None]] = []
            left = list(recorded)
            rest = []
            for run in new:  # identical siblings first: a batch's order is not fixed
                twin = next((r for r in left if _signature(r) == _signature(run)), None)
                if twin is None:
                    rest.append(run)
                else:
                    left.remove(twin)
                    pairs.append((twin, run))
            pairs += list(zip_longest(left, rest))
            for n, (x, y) in enumerate(pairs, start=1):
                depth = (x or y).depth if (x or y) is not None else 0  # type: ignore[union-attr]
                tag = f" #{n}" if len(pairs) > 1 else ""
                self.run(x, y, f"{label} > rlm_query {preview!r}{tag} (depth {depth})")


def compare_runs(recorded: dict[str, RunRecord], new: dict[str, RunRecord]) -> list[Divergence]:
    """The divergences between a recording's runs and a replay's (see the docstring)."""
    comparison = _Comparison(recorded, new)
    pairs = zip_longest(_children(recorded, None), _children(new, None))
    for n, (a, b) in enumerate(pairs, start=1):
        comparison.run(a, b, f"completion {n}")
    return comparison.found


def _last_message(request: dict[str, Any] | None) -> Any:
    if request is None:
        return None
    messages = request.get("messages")
    if isinstance(messages, list) and messages:
        last = messages[-1]
        return last.get("content") if isinstance(last, dict) else last
    return request.get("prompt")


def _call_where(call: RecordedCall | None, request: dict[str, Any] | None) -> str:
    source = request if request is not None else (call.request if call is not None else {})
    what = f"{source.get('purpose') or 'model'} call to {source.get('model')!r}"
    return f"{what} (recorded call #{call.index + 1})" if call is not None else what


def call_divergence(d: CallDivergence) -> Divergence:
    where = _call_where(d.recorded, d.request)
    if d.kind == "request_differs" and d.recorded is not None and d.request is not None:
        at = d.first_difference or 0
        theirs = d.recorded.request.get("messages") or []
        ours = d.request.get("messages") or []

        def pick(m: list[Any]) -> Any:
            return m[at].get("content") if at < len(m) and isinstance(m[at], dict) else None

        where += f", message {at + 1}"
        return Divergence(d.kind, where, _shown(pick(theirs)), _shown(pick(ours)))
    if d.kind == "unused_call":
        return Divergence(
            d.kind, where, _shown(_last_message(d.recorded.request if d.recorded else None))
        )
    return Divergence(d.kind, where, None, _shown(_last_message(d.request)))


# -- the two tapes ---------------------------------------------------------------------


def replay_settings(cfg: RLMConfig) -> dict[str, Any]:
    """What a replay needs to build the same RLM (secrets are dropped by the caller)."""
    from rlm.core.prompts import RLM_SYSTEM_PROMPT

    limits = cfg.limits
    return {
        "backend": cfg.backend,
        "model_name": cfg.backend_kwargs.get("model_name"),
        "environment": cfg.environment,
        "environment_kwargs": cfg.environment_kwargs,
        "max_depth": cfg.max_depth,
        "max_iterations": cfg.max_iterations,
        "custom_system_prompt": None
        if cfg.system_prompt == RLM_SYSTEM_PROMPT
        else cfg.system_prompt,
        "other_backends": list(cfg.other_backends),
        "other_models": [k.get("model_name") for k in cfg.other_backend_kwargs],
        "persistent": cfg.persistent,
        "compaction": cfg.compaction,
        "compaction_threshold_pct": cfg.compaction_threshold_pct,
        "max_concurrent_subcalls": cfg.max_concurrent_subcalls,
        "orchestrator": cfg.orchestrator,
        "user_prologue": cfg.user_prologue,
        "max_output_chars": cfg.max_output_chars,
        "max_budget": getattr(limits, "max_budget", None),
        "max_timeout": getattr(limits, "max_timeout", None),
        "max_tokens": getattr(limits, "max_tokens", None),
        "max_errors": getattr(limits, "max_errors", None),
        "max_llm_calls": getattr(limits, "max_llm_calls", None),
        "custom_tools": sorted(cfg.custom_tools or {}),
    }


class Recorder:
    """``record=``: writes a run's recording into ``logger``'s file."""

    def __init__(self, logger: RLMLogger) -> None:
        self.logger = logger
        self._lock = threading.Lock()
        self._calls = 0
        self._turns = 0
        self.max_text_chars = getattr(getattr(logger, "_builder", None), "max_text_chars", 100_000)

    def sink(self, entry: dict[str, Any]) -> None:
        if entry.get("type") == "recorded_call":
            with self._lock:
                self._calls += 1
                entry = {"type": "recorded_call", "seq": self._calls, **entry}
        self.logger.write_record(entry)

    def clients(self, make: ClientFactory) -> ClientFactory:
        def make_recorded(backend: str, kwargs: dict[str, Any]) -> BaseLM:
            return recording(make(backend, kwargs), self.sink, backend)

        return make_recorded

    def attach(self, bus: EventBus) -> None:
        RunTape(self.sink, self.max_text_chars).subscribe(bus)

    def began(self, prompt: Any, root_prompt: str | None, output: Any, cfg: RLMConfig) -> None:
        schema = getattr(output, "json_schema", None)
        with self._lock:
            turn, self._turns = self._turns, self._turns + 1
        self.sink(redacted_input(turn, prompt, root_prompt, schema, replay_settings(cfg)))

    @property
    def path(self) -> str | None:
        return self.logger.log_file_path


class Replayer:
    """``replay=``: every client answers from ``recording``; ``report()`` compares."""

    def __init__(self, found: Recording) -> None:
        self.recording = found
        self.book = ReplayBook.of(found.calls)
        self.tape = RunTape()

    def clients(self, make: ClientFactory) -> ClientFactory:
        found, book = self.recording, self.book

        def make_replay(backend: str, kwargs: dict[str, Any]) -> BaseLM:
            name = kwargs.get("model_name")
            client = found.client_for(backend, name if isinstance(name, str) else None) or {}
            model = str(client.get("model_name") or name or "unknown")
            window = kwargs.get("context_window") or client.get("context_window")
            return replay_client(
                book,
                model,
                structured=client.get("structured_output") is True,
                window=found.windows.get(model),
                reports_cost=client.get("reports_cost") is True,
                context_window=window if isinstance(window, int) else None,
            )

        return make_replay

    def attach(self, bus: EventBus) -> None:
        self.tape.subscribe(bus)

    def began(self, prompt: Any, root_prompt: str | None, output: Any, cfg: RLMConfig) -> None:
        return None

    def report(self) -> ReplayReport:
        found = compare_runs(self.recording.runs, self.tape.runs)
        found += [call_divergence(d) for d in list(self.book.divergences)]
        found += [
            call_divergence(CallDivergence("unused_call", None, c)) for c in self.book.unused()
        ]
        roots = zip_longest(_children(self.recording.runs, None), _children(self.tape.runs, None))
        answers = [(a.response if a else None, b.response if b else None) for a, b in roots]
        return ReplayReport(found, len(self.book.calls), self.book.answered, answers)


Tape = Recorder | Replayer


def open_tape(record: Any, replay: Any, logger: Any) -> tuple[Tape | None, Any]:
    """The tape for ``RLM(record=..., replay=...)``, and the RLM's logger (``record=DIR``
    makes one). Raises ``ConfigurationError`` for a combination that cannot work and
    for a ``replay`` log that is not a recording."""
    recording_on = record is not None and record is not False
    if recording_on and replay is not None:
        raise ConfigurationError(
            "record= and replay= cannot be combined: replay a recording, then record anew"
        )
    if replay is not None:
        if isinstance(replay, Recording):
            return Replayer(replay), logger
        if not isinstance(replay, str | os.PathLike):
            raise ConfigurationError(
                f"replay must be a run log's path, got {type(replay).__name__}"
            )
        try:
            return Replayer(load_recording(replay)), logger
        except RecordingError as exc:
            raise ConfigurationError(f"replay: {exc}") from None
    if not recording_on:
        return None, logger
    if record is True:
        if not isinstance(logger, RLMLogger) or logger.log_file_path is None:
            raise ConfigurationError(
                "record=True records into the run log: pass logger=RLMLogger(log_dir=...), "
                "or record='DIR' to write a new log in DIR"
            )
        return Recorder(logger), logger
    if isinstance(record, str | os.PathLike):
        if logger is not None:
            raise ConfigurationError(
                "record=DIR makes its own logger: pass record=True with logger="
            )
        made = RLMLogger(log_dir=os.fspath(record))
        return Recorder(made), made
    raise ConfigurationError(f"record must be True, False or a folder, got {record!r}")


__all__ = [
    "Divergence",
    "Recorder",
    "ReplayReport",
    "Replayer",
    "compare_runs",
    "open_tape",
    "replay_settings",
]
