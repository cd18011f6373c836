"""The Ray engine on a real local Ray cluster (2 workers) started by this module.

Same rows as the local engine, same resume semantics (in both directions and after
an interruption), the LM call cap held across workers by the governor actor, and
``rlm batch`` on Ray. Marked ``slow`` (the cluster takes seconds to start); it needs
``ray`` (``pip install 'rlmx[ray]'``) and is skipped without it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from conftest import ENVIRONMENT, ORACLE, WRONG, methods

from rlm.evals import Suite, build_methods, make_spec, materialize, preset, run_batch, run_eval
from rlm.evals.engines import OnResult
from rlm.evals.engines.ray import RayEngine
from rlm.evals.records import WorkItem

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.slow
FAMILIES = ["niah", "oolong", "pairs", "codeqa"]


@pytest.fixture(scope="module", autouse=True)
def cluster() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    assert ray.cluster_resources()["CPU"] == 2
    yield
    ray.shutdown()


def rows_of(directory: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (directory / "results.jsonl").read_text().splitlines()]


def test_reference_solver_100_and_wrong_0_on_ray(tmp_path: Path) -> None:
    right = run_eval(
        Suite(methods(ORACLE), FAMILIES, [1024], [0, 1]), tmp_path / "r", "ray", quiet=True
    )
    rows = rows_of(tmp_path / "r")
    assert len(rows) == 24 and all(r["score"] == 1.0 and r["engine"] == "ray" for r in rows)
    assert right.facts["engine"] == "ray" and right.facts["workers"] == 2
    assert len({r["worker"] for r in rows}) >= 2  # the items really ran in Ray workers
    wrong = run_eval(
        Suite(methods(WRONG), FAMILIES, [1024], [0, 1]), tmp_path / "w", "ray", quiet=True
    )
    assert all(r["score"] == 0.0 for r in rows_of(tmp_path / "w"))
    assert {m["mean"] for m in wrong.report["methods"]} == {0.0}


def test_ray_rows_equal_local_rows(tmp_path: Path) -> None:
    suite = Suite(methods(ORACLE), ["oolong", "pairs"], [2048], [3])
    run_eval(suite, tmp_path / "local", "local", quiet=True)
    run_eval(suite, tmp_path / "ray", "ray", quiet=True)
    fields = (
        "key",
        "fingerprint",
        "task_hash",
        "answer",
        "expected",
        "score",
        "status",
        "input_tokens",
        "output_tokens",
        "calls",
    )
    local = {r["key"]: {f: r[f] for f in fields} for r in rows_of(tmp_path / "local")}
    remote = {r["key"]: {f: r[f] for f in fields} for r in rows_of(tmp_path / "ray")}
    assert local == remote and len(local) == 6


def test_resume_crosses_engines(tmp_path: Path) -> None:
    first = run_eval(Suite(methods(ORACLE), ["niah"], [1024], [0]), tmp_path, "local", quiet=True)
    assert first.ran == 3
    grown = run_eval(Suite(methods(ORACLE), ["niah"], [1024], [0, 1]), tmp_path, "ray", quiet=True)
    assert (grown.ran, grown.skipped) == (3, 3)
    back = run_eval(Suite(methods(ORACLE), ["niah"], [1024], [0, 1]), tmp_path, "local", quiet=True)
    assert (back.ran, back.skipped) == (0, 6)


class Interrupting:
    """The Ray engine, with Ctrl-C pressed in the driver after ``after`` rows."""

    name = "ray"

    def __init__(self, after: int) -> None:
        self.inner = RayEngine()
        self.after = after

    def run(self, items: Sequence[WorkItem], on_result: OnResult) -> dict[str, Any]:
        seen = 0

        def wrapped(row: dict[str, Any]) -> None:
            nonlocal seen
            on_result(row)
            seen += 1
            if seen == self.after:
                raise KeyboardInterrupt

        return self.inner.run(items, wrapped)


def test_interrupted_ray_run_resumes(tmp_path: Path) -> None:
    suite = Suite(methods({**ORACLE, "latency": 0.1}), ["niah", "oolong"], [1024], [0, 1])
    with pytest.raises(KeyboardInterrupt):
        run_eval(suite, tmp_path, Interrupting(after=4), quiet=True)
    finished = rows_of(tmp_path)
    assert len(finished) == 4
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["items"] == {"planned": 12, "with_result": 4, "missing": 8}
    resumed = run_eval(suite, tmp_path, "ray", quiet=True)
    assert (resumed.ran, resumed.skipped) == (8, 4)
    after = rows_of(tmp_path)
    assert after[:4] == finished and len({r["key"] for r in after}) == 12


def test_lm_call_cap_holds_across_the_cluster(tmp_path: Path) -> None:
    slow = preset("base", "scripted", {**ORACLE, "latency": 0.2})
    suite = Suite([slow], ["niah"], [1024], list(range(6)))
    capped = run_eval(suite, tmp_path / "capped", RayEngine(max_inflight_llm_calls=1), quiet=True)
    assert capped.facts["llm_call_cap"] == 1 and capped.facts["llm_calls_peak"] == 1
    # more than one worker served the items (Ray may start a spare), and still one call
    assert len({r["worker"] for r in rows_of(tmp_path / "capped")}) >= 2
    free = run_eval(suite, tmp_path / "free", RayEngine(max_inflight_llm_calls=4), quiet=True)
    # each worker makes one call at a time: without the cap of 1, calls overlap as far as
    # the workers that served items (2 CPUs, and Ray may start a spare) and the cap of 4
    workers = len({r["worker"] for r in rows_of(tmp_path / "free")})
    assert 2 <= free.facts["llm_calls_peak"] <= min(workers, 4)


def test_batch_on_ray(tmp_path: Path) -> None:
    tasks = [materialize(make_spec("oolong", 1024, s)) for s in range(4)]
    source = tmp_path / "in.jsonl"
    source.write_text(
        "".join(
            json.dumps({"id": f"q{i}", "context": t.context, "question": t.question}) + "\n"
            for i, t in enumerate(tasks)
        ),
        encoding="utf-8",
    )
    (method,) = build_methods(["rlm-d1"], "scripted", ORACLE, {"environment": ENVIRONMENT})
    run = run_batch(source, tmp_path / "out.jsonl", method, "ray", quiet=True)
    assert (run.rows, run.ran, run.failed) == (4, 4, 0)
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert {r["id"]: r["answer"] for r in rows} == {
        f"q{i}": str(t.answer) for i, t in enumerate(tasks)
    }
    assert {r["engine"] for r in rows} == {"ray"}
