"""``rlm replay LOG``: re-run a recorded run with no model and no network.

LOG is a run log written with ``RLM(..., record=True)`` (or a folder: its newest log).
Every model call is answered from the recording, the code runs again, and the command
prints where the new run diverged (``docs/observability.md``, "Record and replay").
Exit codes: 0 the replay did exactly what the recording did, 1 it diverged, 2 LOG is
not a recording (or cannot be replayed as given).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import IO, Any

from rlm.base.errors import ConfigurationError
from rlm.cli.failures import EXIT_ERROR, EXIT_OK, EXIT_USAGE
from rlm.logger.verbose import printable

EXAMPLES = """examples:
  rlm replay logs/rlm_2025-01-01_12-00-00_ab12cd34.jsonl
  rlm replay logs                    # the newest log in logs/
  rlm replay run.jsonl --json        # the report as JSON
  rlm replay run.jsonl --env sandbox # run the recorded code isolated

The recorded code runs again, in the recorded environment (often "local": this
process, with your permissions) unless --env names another. Replay only recordings
you would run yourself.

record a run in Python: RLM(..., logger=RLMLogger(log_dir="logs"), record=True)
exit codes: 0 identical, 1 diverged, 2 not a recording
"""


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "replay",
        help="re-run a recorded run offline and report where it diverged",
        description="Replay a run recorded with RLM(..., record=True): model calls are "
        "answered from the recording (no model, no network), the REPL code runs again, "
        "and every divergence is reported (a cell's output, a model request, the answer).",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("log", metavar="RUN.jsonl|DIR", help="a recorded run log, or its folder")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument(
        "--env",
        metavar="NAME",
        default=None,
        help="the environment the recorded code runs in (default: the recorded one)",
    )
    p.set_defaults(handler=replay)


def _log_path(name: str) -> Path:
    path = Path(name).expanduser()
    if path.is_dir():
        logs = [p for p in path.glob("*.jsonl") if p.is_file()]
        if not logs:
            raise ConfigurationError(f"{name}: no .jsonl run logs in this folder")
        return max(logs, key=lambda p: (p.stat().st_mtime, p.name))
    return path


def _lines(text: str) -> str:
    """``text`` safe for a terminal (``printable``), its own line breaks kept."""
    return "\n".join(printable(line) for line in text.splitlines())


def replay(args: argparse.Namespace, out: IO[str] | None = None, err: IO[str] | None = None) -> int:
    from rlm.core.replay_run import recorded_environment, replay_recording
    from rlm.logger.replay_log import load_recording

    out, err = out or sys.stdout, err or sys.stderr
    env = getattr(args, "env", None)
    overrides = {"environment": env} if env else {}
    try:
        found = load_recording(_log_path(args.log))
        where = env or recorded_environment(found)
        print(f"rlm: the recorded code runs again in the {where!r} environment", file=err)
        report, results = replay_recording(found, **overrides)
    except (ValueError, OSError) as exc:  # RecordingError, ConfigurationError
        print(f"rlm: error: {printable(str(exc))}", file=err, flush=True)
        return EXIT_USAGE
    if args.json:
        print(json.dumps(report.to_dict(), indent=2, default=str), file=out, flush=True)
    else:
        for n, result in enumerate(results, start=1):
            answer = getattr(result, "response", None)
            shown = answer if answer is not None else f"error: {type(result).__name__}: {result}"
            text = _lines(str(shown))
            sep = "\n  " if "\n" in text else " "
            print(f"completion {n}:{sep}{text.replace(chr(10), sep)}", file=out)
        print(_lines(report.summary()), file=out, flush=True)
    return EXIT_OK if report.identical else EXIT_ERROR


__all__ = ["replay"]
