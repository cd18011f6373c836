"""Durable deltas of the worker environments (``snapshot_delta``/``restore_parts``):
a turn that leaves a large variable alone gives the store no body; the digests are
the host's own; a fresh worker restored from parts keeps its inputs and gives nothing
again. Real workers (sandbox, process, docker CLI) on every transport."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from worker_env_support import WORKER_TRANSPORTS, env_of

from rlm.environments.host.state import WorkerState

BIG = "big = [str(i) * 20 for i in range(20_000)]\nsmall = {'n': 1}"


def _by_name(metas: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {str(m["name"]): m for m in metas}


@pytest.mark.parametrize("kind", WORKER_TRANSPORTS)
def test_a_turn_that_leaves_a_value_alone_gives_no_body(kind: str) -> None:
    with env_of(kind, persistent=True) as env:
        env.add_context("a context that is not part of the delta")
        assert env.execute_code(BIG).stderr == ""
        metas, bodies, unsaved = env.snapshot_delta()
        entries = _by_name(metas)
        assert set(entries) == {"answer", "big", "small"}  # no inputs: the store has them
        assert unsaved == {}
        big_digest = entries["big"]["digest"]
        assert hashlib.sha256(bodies[big_digest]).hexdigest() == big_digest
        assert len(bodies[big_digest]) > 400_000

        assert env.execute_code("small['n'] = 2\nn_1 = len(context_0)").stderr == ""
        metas, bodies, _ = env.snapshot_delta()
        entries = _by_name(metas)
        assert entries["big"]["digest"] == big_digest
        assert big_digest not in bodies  # unchanged: given once, only named again
        assert set(bodies) == {entries["small"]["digest"], entries["n_1"]["digest"]}

        env.snapshot_reset()  # the store lost that delta: the next gives every body
        metas, bodies, _ = env.snapshot_delta()
        assert {m["digest"] for m in metas} == set(bodies)


@pytest.mark.parametrize("kind", WORKER_TRANSPORTS)
def test_parts_restore_into_a_fresh_worker_and_keep_its_inputs(kind: str) -> None:
    with env_of(kind, persistent=True) as env:
        assert env.execute_code(BIG + "\ndef f(x):\n    return x + small['n']").stderr == ""
        metas, bodies, _ = env.snapshot_delta()
    loaded: list[str] = []

    def load(digest: str) -> bytes:
        loaded.append(digest)
        return bodies[digest]

    with env_of(kind, persistent=True) as fresh:
        fresh.add_context("context of the fresh worker")
        assert fresh.restore_parts(metas, load) == []
        assert sorted(loaded) == sorted(bodies)
        out = fresh.execute_code("print(len(big), f(1), context_0)").stdout
        assert out == "20000 2 context of the fresh worker\n"
        again, new_bodies, _ = fresh.snapshot_delta()
        assert new_bodies == {}  # what was loaded is what the store holds
        assert _by_name(again)["big"]["digest"] == _by_name(metas)["big"]["digest"]


@pytest.mark.parametrize("kind", WORKER_TRANSPORTS[:1])
def test_a_body_that_cannot_be_loaded_is_reported_and_the_rest_restored(kind: str) -> None:
    with env_of(kind, persistent=True) as env:
        assert env.execute_code("a = [1, 2]\nb = 'kept'").stderr == ""
        metas, bodies, _ = env.snapshot_delta()
    broken = _by_name(metas)["a"]["digest"]

    def load(digest: str) -> bytes:
        if digest == broken:
            raise KeyError(f"blob {digest[:12]} is missing")
        return bodies[digest]

    with env_of(kind, persistent=True) as fresh:
        assert fresh.restore_parts(metas, load) == ["a"]
        assert fresh.execute_code("print(b, 'a' in dir())").stdout == "kept False\n"


def test_a_digest_a_worker_sends_is_never_taken() -> None:
    # Entry metadata comes from the worker, which is untrusted: a "digest" in it could
    # name another session's blob in a shared store, to be loaded on resume.
    state = WorkerState(False, 1 << 30)
    foreign = "0" * 64
    state.stage({"op": "entry", "name": "x", "kind": "pickle", "digest": foreign, "body": b"v"})
    state.stage({"op": "entry", "name": "y", "kind": "pickle", "digest": foreign})
    state.commit({"op": "snapshot", "deleted": [], "unsaved": {}, "after_cell": 1})
    metas, bodies, _ = state.delta()
    entries = _by_name(metas)
    assert entries["x"]["digest"] == hashlib.sha256(b"v").hexdigest()
    assert "digest" not in entries["y"]
    assert foreign not in bodies and all(m.get("digest") != foreign for m in metas)
