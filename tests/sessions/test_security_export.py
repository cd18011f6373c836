"""``rlm sessions export`` never unpickles: a booby-trapped store cannot run code in the
exporting process. Pickled contexts come out as an opaque, base64 marker unless the
caller says it trusts the store (``--trust-pickles``, ``trust_pickles=True``)."""

from __future__ import annotations

import base64
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from rlm.sessions import api
from rlm.sessions.models import TurnWrite
from rlm.sessions.sqlite_store import SQLiteSessionStore

REPO = Path(__file__).resolve().parents[2]


class Trap:
    """Pickles as a call to ``exec``: loading it writes ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


def store_with(path: Path, session_id: str, context: Any) -> None:
    store = SQLiteSessionStore(path)
    try:
        store.ensure_session(session_id, {"backend": "scripted"})
        lock = store.acquire_lock(session_id)
        turn = TurnWrite(
            index=0, status="completed", root_prompt="q", context=context,
            context_meta={"context_type": "dict"}, messages=[{"role": "user", "content": "q"}],
            answer="a", error=None, usage={}, cost=None, iterations=1, execution_time=0.1,
            snapshot=None, checkpoint=None,
        )  # fmt: skip
        store.write_turn(session_id, lock.owner, turn)
        lock.release()
    finally:
        store.close()


def export_cli(store: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "rlm", "sessions", "export", *args, "--store", str(store)],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip


def test_export_does_not_run_a_crafted_pickle(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    store = tmp_path / "s.db"
    store_with(store, "trap", Trap(marker))
    assert not marker.exists()

    proc = export_cli(store, "trap")
    assert proc.returncode == 0, proc.stderr
    assert not marker.exists(), "exporting ran code from the store"
    (turn,) = json.loads(proc.stdout)["turns"]
    context = turn["context"]["pickle"]
    assert context["trusted"] is False and "not unpickled" in context["note"]
    assert base64.b64decode(context["base64"]) == pickle.dumps(Trap(marker), protocol=5)
    assert context["size"] == len(pickle.dumps(Trap(marker), protocol=5))

    out = tmp_path / "export.json"
    assert export_cli(store, "trap", "-o", str(out)).returncode == 0
    data = api.export("trap", str(store))  # the Python API too
    assert not marker.exists()
    assert json.loads(out.read_text("utf-8"))["turns"][0]["context"] == data["turns"][0]["context"]


def test_trusted_export_unpickles_on_request(tmp_path: Path) -> None:
    store = tmp_path / "s.db"
    store_with(store, "notes", {"doc": "more"})
    proc = export_cli(store, "notes", "--trust-pickles")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["turns"][0]["context"] == {"doc": "more"}
    assert api.export("notes", str(store), trust_pickles=True)["turns"][0]["context"] == {
        "doc": "more"
    }


@pytest.mark.parametrize("verb", [["list"], ["show", "trap"]])
def test_inspection_never_unpickles(tmp_path: Path, verb: list[str]) -> None:
    marker = tmp_path / "pwned"
    store = tmp_path / "s.db"
    store_with(store, "trap", Trap(marker))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for extra in ([], ["--json"]):
        proc = subprocess.run(
            [sys.executable, "-m", "rlm", "sessions", *verb, *extra, "--store", str(store)],
            capture_output=True, text=True, env=env, timeout=60,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
    assert not marker.exists()
