"""Crash safety: a child running a durable session is killed with SIGKILL at random
points, again and again. After every kill the session reopens, every turn the child
reported complete is stored, no half-written turn is, and the next child resumes it.
On both stores: a SQLite file, and PostgreSQL (where the next child takes the session
over once the killed one's lease has expired)."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from crash_child import context
from session_support import HERE, child_env

from rlm.base.errors import SessionError
from rlm.sessions import show
from rlm.sessions.store import is_postgres_url, open_store

RUNS = 50


def _spawn(store: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(HERE / "crash_child.py"), str(store), "crash"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=child_env(),
    )


def _check_new_turns(store: str, checked: int) -> int:
    """Every stored turn is whole: contiguous, completed, its blobs readable and right."""
    try:
        turns = show("crash", store).turns
    except SessionError:  # killed before it made the store or the session
        return checked
    assert [t.index for t in turns] == list(range(len(turns)))
    opened = open_store(store)
    try:
        for turn in turns[checked:]:
            n = turn.index
            assert (turn.status, turn.answer) == ("completed", f"answer {n}")
            assert opened.read_context(turn) == context(n)
            history = opened.read_history(turn)
            assert "answer" in history[-2]["content"]  # the final assistant message
            assert opened.read_snapshot(turn) is not None
    finally:
        opened.close()
    return len(turns)


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_sigkill_at_random_points_loses_no_completed_turn(store_spec: str, capsys) -> None:
    store, window = store_spec, 0.06  # seconds after READY the kill lands in
    if is_postgres_url(store):
        # A short lease: each child takes the session over once the killed one's expires.
        # A turn takes a few ms more (round trips): a wider window, enough turns per kill.
        store, window = store + "?lease=0.6&heartbeat=0.15&lock_timeout=30", 0.3
    rng = random.Random(int(os.environ.get("RLM_CRASH_SEED", "5")))
    completed = lost = stored = early_kills = 0
    started = time.monotonic()
    for run in range(RUNS):
        child = _spawn(store)
        assert child.stdout is not None
        if run % 5 == 4:  # now and then, anywhere: during start-up or the restore
            time.sleep(rng.uniform(0.0, 0.35))
            early_kills += 1
        else:
            ready = child.stdout.readline()
            assert ready.startswith("READY"), (ready, child.stderr.read() if child.stderr else "")
            time.sleep(rng.uniform(0.0, window))
        child.send_signal(signal.SIGKILL)
        child.wait()
        out = child.stdout.read()
        err = child.stderr.read() if child.stderr else ""
        child.stdout.close()
        if child.stderr:
            child.stderr.close()
        assert "RESUME_BAD" not in out, out
        assert child.returncode == -signal.SIGKILL, (child.returncode, err[-2000:])
        done = {int(line.split()[1]) for line in out.splitlines() if line.startswith("TURN_DONE")}
        if is_postgres_url(store) or Path(store).exists():
            stored = _check_new_turns(store, stored)
        completed += len(done)
        lost += len([n for n in done if n >= stored])
    elapsed = time.monotonic() - started

    if not is_postgres_url(store):
        db = sqlite3.connect(store)
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        db.close()
    kind = "postgres" if is_postgres_url(store) else "sqlite"
    with capsys.disabled():
        print(
            f"\ncrash safety ({kind}): {lost} of {completed} completed turns lost; {stored} turns "
            f"stored ({stored - completed} committed before their TURN_DONE was printed), "
            f"{RUNS} SIGKILLs ({early_kills} at start-up), no half-written turn, {elapsed:.1f}s"
        )
    assert lost == 0
    assert completed >= RUNS  # the kills did land while turns were running
