"""Turn whatever the caller has into a flat list of log records.

A *record* is one dict shaped like a line of an ``RLMLogger`` JSONL file: a
``{"type": "metadata", ...}`` line or a ``{"type": "iteration", ...}`` line, plus any
other typed line a newer logger may add (kept, so the model can use what it knows).
Accepted sources:

- a path to a JSONL run log (a whole-file JSON document is accepted too);
- the in-memory trajectory ``{"run_metadata": ..., "iterations": [...]}`` that
  ``RLMLogger.get_trajectory()`` returns and ``RLMChatCompletion.metadata`` holds;
- an ``RLMChatCompletion`` or its ``to_dict()``; its usage and response then describe
  the root run, which a JSONL file alone cannot.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlm.base.types import RLMChatCompletion

Source = str | os.PathLike[str] | Mapping[str, Any] | RLMChatCompletion


@dataclass
class LoadedLog:
    """Records in file order, and what the source said about the root run as a whole."""

    records: list[dict[str, Any]]
    name: str | None = None  # file name, for the page title
    completion: dict[str, Any] = field(default_factory=dict)  # response, usage_summary, ...


def load_source(source: Source) -> LoadedLog:
    """Read ``source`` (see the module docstring) without interpreting it."""
    if isinstance(source, RLMChatCompletion):
        return _from_mapping(source.to_dict())
    if isinstance(source, Mapping):
        return _from_mapping(source)
    path = Path(source)
    log = LoadedLog(_read_lines(path), name=path.name)
    if len(log.records) == 1 and log.records[0].get("type") is None:
        # A pretty-printed trajectory or completion saved as one JSON document.
        whole = _from_mapping(log.records[0])
        whole.name = path.name
        return whole
    return log


def _from_mapping(data: Mapping[str, Any]) -> LoadedLog:
    if "iterations" in data or "run_metadata" in data:
        return LoadedLog(_trajectory_records(data))
    if "usage_summary" in data or "response" in data:  # an RLMChatCompletion dict
        meta = data.get("metadata")
        records = _trajectory_records(meta) if isinstance(meta, Mapping) else []
        summary = {k: v for k, v in data.items() if k != "metadata"}
        return LoadedLog(records, completion=summary)
    raise ValueError(
        "not a trajectory: expected a JSONL path, {'run_metadata', 'iterations'} "
        "or an RLMChatCompletion"
    )


def _trajectory_records(data: Mapping[str, Any]) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    meta = data.get("run_metadata")
    if isinstance(meta, Mapping):
        records.append({"type": "metadata", **meta})
    for entry in data.get("iterations") or []:
        if isinstance(entry, Mapping):
            records.append({"type": "iteration", **entry})
    return records


def _read_lines(path: Path) -> list[dict[str, Any]]:
    """Parse a JSONL file with ``load_trajectory``'s tolerance: a cut-short last line is
    skipped (the run was killed mid-write), anything else malformed is a ValueError."""
    text = path.read_text(encoding="utf-8")
    lines = [line for line in text.splitlines() if line.strip()]
    records: list[dict[str, Any]] = []
    for number, line in enumerate(lines, start=1):
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as exc:
            if number == 1 and text.lstrip().startswith("{"):
                return [_whole_document(path, text)]
            if number == len(lines):
                break
            raise ValueError(f"{path}:{number}: not a JSON line ({exc})") from exc
        if isinstance(entry, dict):
            records.append(entry)
    return records


def _whole_document(path: Path, text: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: neither JSONL nor a JSON document ({exc})") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a JSON document, but not an object")
    return data
