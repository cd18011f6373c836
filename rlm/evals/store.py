"""The results of a run on disk: one JSON row per finished item, appended as it finishes.

``OUT/results.jsonl`` is append-only and each row is flushed and fsynced before the
next item is counted, so a run killed at any moment loses at most the items in
flight; a torn last line (a kill mid-write) is dropped on open. ``OUT/suite.json`` holds
the suite and methods of the latest run. One process writes a directory at a time
(an exclusive ``flock`` where the OS has it).

A stored row counts as done for a ``WorkItem`` when its key and fingerprint both
match (the method or the task changed: the item runs again); rows that failed for
a ``config`` reason never count (fix the setup and resume), and ``retry_failed``
reruns every failed row. The newest row for a key wins.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import TracebackType
from typing import IO, Any

try:
    import fcntl
except ImportError:  # Windows: no advisory lock
    fcntl = None  # type: ignore[assignment]

RESULTS = "results.jsonl"
SUITE = "suite.json"


class StoreLockedError(OSError):
    """Another process is writing the same results directory."""


class ResultStore:
    """Reads and appends ``results.jsonl`` (or ``name``) in ``directory`` (use it as a
    context manager)."""

    def __init__(self, directory: str | Path, name: str = RESULTS) -> None:
        self.directory = Path(directory)
        self.path = self.directory / name
        self._handle: IO[str] | None = None

    def __enter__(self) -> ResultStore:
        self.open()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def open(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._drop_torn_tail()
        self._handle = self._locked(self.path)

    def _locked(self, path: Path) -> IO[str]:
        handle = path.open("a", encoding="utf-8")
        if fcntl is not None:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                handle.close()
                raise StoreLockedError(
                    f"{self.directory} is being written by another run; wait for it or use "
                    "another --out directory"
                ) from None
        return handle

    def replace_with(self, source: Path) -> None:
        """Make ``source`` (a complete file beside this one) the file, atomically, and
        go on appending to it: it is locked before it takes the file's name."""
        if self._handle is None:
            raise RuntimeError("ResultStore.replace_with before open()")
        handle = self._locked(source)
        os.replace(source, self.path)
        self._handle.close()
        self._handle = handle

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def _drop_torn_tail(self) -> None:
        if not self.path.is_file():
            return
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            cut = data.rfind(b"\n") + 1
            with self.path.open("r+b") as handle:
                handle.truncate(cut)

    def rows(self) -> list[dict[str, Any]]:
        """Every complete row, in the order written."""
        if not self.path.is_file():
            return []
        found: list[dict[str, Any]] = []
        with self.path.open(encoding="utf-8") as handle:
            for line in handle:
                if not line.endswith("\n"):
                    break  # torn tail (read while another process writes)
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if isinstance(row, dict) and "key" in row:
                    found.append(row)
        return found

    def latest(self) -> dict[str, dict[str, Any]]:
        """The newest row per key."""
        return {row["key"]: row for row in self.rows()}

    def append(self, row: dict[str, Any]) -> None:
        """Write ``row`` durably (flushed and fsynced)."""
        if self._handle is None:
            raise RuntimeError("ResultStore.append before open()")
        self._handle.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def write_suite(self, suite: dict[str, Any]) -> None:
        target = self.directory / SUITE
        tmp = target.with_suffix(".json.tmp")
        tmp.write_text(
            json.dumps(suite, indent=2, ensure_ascii=False, default=str), encoding="utf-8"
        )
        tmp.replace(target)

    def read_suite(self) -> dict[str, Any] | None:
        target = self.directory / SUITE
        if not target.is_file():
            return None
        data: dict[str, Any] = json.loads(target.read_text(encoding="utf-8"))
        return data


def is_done(row: dict[str, Any] | None, fingerprint: str, retry_failed: bool = False) -> bool:
    """Whether ``row`` finishes the item with ``fingerprint`` (see the module docstring)."""
    if row is None or row.get("fingerprint") != fingerprint:
        return False
    if row.get("status") == "failed":
        return not retry_failed and row.get("error_kind") != "config"
    return True
