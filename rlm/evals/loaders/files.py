"""Reading dataset rows from disk: JSON Lines, JSON, Parquet or a directory of them.

``read_rows(path)`` returns a list of dicts. A ``.jsonl`` file has one object per line;
a ``.json`` file holds a list of objects (or ``{"data": [...]}``); ``.parquet`` needs
``pyarrow``; a directory is every such file in it, sorted by name. Errors name the
file and, for JSON Lines, the line.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SUFFIXES = (".jsonl", ".json", ".parquet")


class DatasetError(ValueError):
    """A dataset file is missing, unreadable or not in the documented layout."""


def _jsonl(path: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DatasetError(f"{path}:{number}: not JSON ({exc.msg})") from None
            if not isinstance(row, dict):
                raise DatasetError(f"{path}:{number}: expected a JSON object per line")
            rows.append(row)
    return rows


def _json(path: Path) -> list[dict[str, Any]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{path}: not JSON ({exc.msg} at line {exc.lineno})") from None
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise DatasetError(f"{path}: expected a JSON list of objects (or {{'data': [...]}})")
    return data


def _parquet(path: Path) -> list[dict[str, Any]]:
    try:
        import pyarrow.parquet as pq  # type: ignore[import-untyped, import-not-found, unused-ignore]
    except ImportError:
        raise DatasetError(
            f"{path}: reading Parquet needs pyarrow (pip install pyarrow), or convert the "
            "file to JSON Lines"
        ) from None
    rows: list[dict[str, Any]] = pq.read_table(path).to_pylist()
    return rows


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a dataset file or directory (see the module docstring)."""
    source = Path(path).expanduser()
    if source.is_dir():
        files = sorted(p for p in source.iterdir() if p.suffix in SUFFIXES)
        if not files:
            raise DatasetError(f"{source}: no {', '.join(SUFFIXES)} files in this directory")
        return [row for file in files for row in read_rows(file)]
    if not source.is_file():
        raise DatasetError(f"dataset file not found: {source}")
    readers = {".jsonl": _jsonl, ".json": _json, ".parquet": _parquet}
    reader = readers.get(source.suffix)
    if reader is None:
        raise DatasetError(f"{source}: unknown format (expected {', '.join(SUFFIXES)})")
    return reader(source)


def require(row: dict[str, Any], fields: tuple[str, ...], where: str) -> None:
    """Raise ``DatasetError`` naming the fields ``row`` lacks."""
    missing = [f for f in fields if f not in row]
    if missing:
        raise DatasetError(
            f"{where}: missing field(s) {', '.join(missing)} (has: {', '.join(sorted(row))})"
        )
