"""What a snapshot delta re-pickles after each cell (``Snapshotter.collect``): small
mutable values, to catch in-place edits; never the same immutable object again (a long
session's ``final_answer_N`` strings were re-pickled every cell: quadratic work)."""

from __future__ import annotations

import pickle
from typing import Any

import pytest

from rlm.environments import LocalREPL
from rlm.environments.worker import snapshot
from rlm.environments.worker.snapshot import Snapshotter


def test_immutables_are_not_pickled_again_and_in_place_edits_are_caught(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = LocalREPL()
    try:
        env.execute_code(
            "s = 'x' * 100\nb = b'y'\nn = 7\nitems = [1]\nclass Tag(str): pass\nt = Tag('z')"
        )
        snap = Snapshotter(env, 1 << 30)
        first, _, _ = snap.collect()
        assert {meta["name"] for meta, _ in first} >= {"s", "b", "n", "items", "t"}

        pickled: list[Any] = []
        dumps = pickle.dumps

        def counting(value: Any, *args: Any, **kwargs: Any) -> bytes:
            pickled.append(value)
            return dumps(value, *args, **kwargs)

        monkeypatch.setattr(snapshot.pickle, "dumps", counting)
        again, _, _ = snap.collect()
        assert again == []
        kinds = sorted(type(v).__name__ for v in pickled)
        assert "str" not in kinds and "bytes" not in kinds and "int" not in kinds
        assert "list" in kinds and "Tag" in kinds  # mutable, or a subclass: re-checked

        env.execute_code("items.append(2)\nt.note = 'an attribute'")
        edited, _, _ = snap.collect()
        assert sorted(meta["name"] for meta, _ in edited) == ["items", "t"]
    finally:
        env.cleanup()
