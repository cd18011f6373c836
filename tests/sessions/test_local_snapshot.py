"""LocalREPL's ``SupportsSnapshot``, built on the worker's snapshot code: what comes
back, what is reported instead, and the deltas a durable store writes per turn."""

from __future__ import annotations

import importlib.util
import pickle

import pytest

from rlm.environments import LocalREPL, SupportsSnapshot
from rlm.environments.host.state import WorkerState

CELL = """
import json
numbers = [1, 2, 3]
settings = {"depth": 2}
def double(v):
    return 2 * v + len(numbers)   # still sees the namespace's globals after a restore
class Box:
    def __init__(self, v):
        self.v = v
handle = open("notes.txt", "w")
import threading
guard = threading.Lock()
gen = (i for i in range(3))
"""
UNPICKLABLE = {"handle", "guard", "gen"}


@pytest.fixture
def repl():
    env = LocalREPL()
    env.add_context("the context")
    result = env.execute_code(CELL)
    assert result.stderr == ""
    yield env
    env.cleanup()


def test_local_repl_implements_snapshot(repl: LocalREPL) -> None:
    assert isinstance(repl, SupportsSnapshot)


def test_unpicklable_variables_are_reported_not_fatal(repl: LocalREPL) -> None:
    data, unsaved = repl.snapshot()
    assert set(unsaved) == UNPICKLABLE
    fresh = LocalREPL()
    lost = fresh.restore(data)
    assert set(lost) == UNPICKLABLE
    out = fresh.execute_code("print(double(10), Box(4).v, json.dumps(settings), numbers)")
    assert out.stdout.strip() == '23 4 {"depth": 2} [1, 2, 3]', out.stderr
    assert "handle" not in fresh.locals and "context" not in fresh.locals  # inputs: not saved
    # A function rebuilt from its cell keeps its traceback lines.
    err = fresh.execute_code("double(None)").stderr
    assert "return 2 * v + len(numbers)" in err
    fresh.cleanup()


def test_restore_replaces_the_namespace(repl: LocalREPL) -> None:
    data, _ = repl.snapshot()
    other = LocalREPL()
    other.add_context("kept")
    other.execute_code("stale = True")
    other.restore(data)
    assert "stale" not in other.locals
    assert other.locals["context_0"] == "kept"  # inputs belong to the owner
    other.cleanup()


def test_instances_of_cell_classes_come_back_or_are_reported(repl: LocalREPL) -> None:
    repl.execute_code("box = Box(7)\nsquare = lambda v: v * v")
    data, unsaved = repl.snapshot()
    fresh = LocalREPL()
    lost = fresh.restore(data)
    if importlib.util.find_spec("cloudpickle") is not None:  # pickled by value
        assert fresh.execute_code("print(box.v, square(3))").stdout.strip() == "7 9"
    else:
        assert {"box", "square"} <= set(unsaved) and {"box", "square"} <= set(lost)
    fresh.cleanup()


def test_the_blob_is_the_worker_format(repl: LocalREPL) -> None:
    data, _ = repl.snapshot()
    state = WorkerState.from_blob(data, False, 1 << 30)
    assert {"numbers", "double", "Box", "json", "answer"} <= set(state.entries)
    assert state.entries["double"][0]["kind"] == "source"
    assert state.entries["json"][0]["kind"] == "module"
    # A worker's blob (with its inputs) restores into LocalREPL too.
    state.inputs.add_context("from a worker", 0)
    fresh = LocalREPL()
    fresh.restore(state.to_blob())
    assert fresh.locals["context"] == "from a worker"
    fresh.cleanup()


def test_deltas_carry_only_what_changed(repl: LocalREPL) -> None:
    metas, bodies, unsaved = repl.snapshot_delta()
    assert set(unsaved) == UNPICKLABLE
    assert {m["name"] for m in metas} >= {"numbers", "settings", "double", "Box", "json"}
    assert all(pickle.loads(b) is not None for b in bodies.values())
    assert repl.snapshot_delta()[1] == {}  # nothing changed: no bodies
    repl.execute_code("numbers.append(4)\nbig = 'x' * 200_000")
    metas, bodies, unsaved = repl.snapshot_delta()
    assert sorted(pickle.loads(b) for b in bodies.values() if len(b) < 1000) == [[1, 2, 3, 4]]
    assert any(len(b) > 200_000 for b in bodies.values())
    assert set(unsaved) == UNPICKLABLE  # still reported while they exist
    repl.execute_code("del handle, guard, gen")
    assert repl.snapshot_delta()[2] == {}
    repl.snapshot_reset()  # the last delta was not stored: the next carries everything
    metas, bodies, _ = repl.snapshot_delta()
    assert len(bodies) == len([m for m in metas if m.get("digest")])


def test_restore_parts_round_trip(repl: LocalREPL) -> None:
    metas, bodies, _ = repl.snapshot_delta()
    fresh = LocalREPL()
    assert fresh.restore_parts(metas, bodies.__getitem__) == []
    assert fresh.execute_code("print(double(1))").stdout.strip() == "5"
    # What was restored is what the store holds: at most `answer` (a dict that became
    # the REPL's answer object) is sent again, and the store already has its bytes.
    metas_after, bodies_after, _ = fresh.snapshot_delta()
    resent = {m["name"] for m in metas_after if m.get("digest") in bodies_after}
    assert resent <= {"answer"} and set(bodies_after) <= set(bodies)
    missing = [dict(metas[0], digest="0" * 64)]
    assert fresh.restore_parts(missing, bodies.__getitem__) == [metas[0]["name"]]
    fresh.cleanup()
