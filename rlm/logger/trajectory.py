"""Read a JSONL run log back into the in-memory trajectory shape."""

from __future__ import annotations

import json
import os
from typing import Any

# Envelope keys of the metadata line that are not part of ``RLMMetadata.to_dict()``.
_METADATA_ENVELOPE = ("type", "timestamp", "log_version")


def load_trajectory(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Return ``{"run_metadata": dict | None, "iterations": [...]}`` for a log file.

    The last line may be cut short (the run was killed mid-write); it is skipped.
    A malformed line anywhere else means the file is not a run log: ValueError.
    """
    with open(path, encoding="utf-8") as f:
        lines = [line for line in f.read().splitlines() if line.strip()]

    run_metadata: dict[str, Any] | None = None
    iterations: list[dict[str, Any]] = []
    for number, line in enumerate(lines, start=1):
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as exc:
            if number == len(lines):
                break
            raise ValueError(f"{os.fspath(path)}:{number}: not a JSON line ({exc})") from exc
        if not isinstance(entry, dict):
            continue
        kind = entry.get("type")
        if kind == "metadata" and run_metadata is None:
            run_metadata = {k: v for k, v in entry.items() if k not in _METADATA_ENVELOPE}
        elif kind == "iteration":
            iterations.append(entry)
    return {"run_metadata": run_metadata, "iterations": iterations}
