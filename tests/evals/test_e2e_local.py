"""End to end on the local engine: real RLM runs on the scripted backend, in the sandbox.

The reference solver's replies are real code run in the REPL: the harness must score
it 100 %; a model that never knows must score 0 %. A run killed mid-way resumes
without redoing finished items.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ENVIRONMENT, ORACLE, WRONG, methods

from rlm.evals import (
    Suite,
    build_methods,
    make_spec,
    materialize,
    preset,
    rlms_method,
    run_batch,
    run_eval,
)
from rlm.evals.engines.local import LocalEngine

FAMILIES = ["niah", "oolong", "pairs", "codeqa"]


def rows_of(directory: Path) -> list[dict]:  # type: ignore[type-arg]
    return [json.loads(line) for line in (directory / "results.jsonl").read_text().splitlines()]


def test_reference_solver_scores_100_percent(tmp_path: Path) -> None:
    suite = Suite(methods(ORACLE), FAMILIES, [1024, 4096], [0, 1])
    run = run_eval(suite, tmp_path, quiet=True)
    rows = rows_of(tmp_path)
    assert len(rows) == run.planned == 48 and run.ran == 48
    assert {r["status"] for r in rows} == {"ok"}, [
        (r["key"], r["error"]) for r in rows if r["error"]
    ]
    assert all(r["score"] == 1.0 for r in rows), [r for r in rows if r["score"] != 1.0][:2]
    assert {c["mean"] for c in run.report["cells"]} == {1.0}
    rlm_rows = [r for r in rows if r["method"] != "base"]
    assert all(r["calls"] >= 1 and r["input_tokens"] > 0 for r in rlm_rows)
    assert (tmp_path / "report.html").read_text().count('<svg class="plot"') == 5


def test_a_model_that_never_knows_scores_0(tmp_path: Path) -> None:
    run = run_eval(Suite(methods(WRONG), FAMILIES, [1024], [0, 1]), tmp_path, quiet=True)
    rows = rows_of(tmp_path)
    assert len(rows) == 24 and all(r["score"] == 0.0 and r["status"] == "ok" for r in rows)
    assert {c["mean"] for c in run.report["methods"]} == {0.0}


def test_resume_runs_only_what_is_missing_or_changed(tmp_path: Path) -> None:
    suite = Suite(methods(ORACLE), ["niah", "oolong"], [1024], [0, 1])
    first = run_eval(suite, tmp_path, quiet=True)
    assert (first.ran, first.skipped) == (12, 0)
    again = run_eval(suite, tmp_path, quiet=True)
    assert (again.ran, again.skipped) == (0, 12)
    more = Suite(methods(ORACLE), ["niah", "oolong"], [1024], [0, 1, 2])
    grown = run_eval(more, tmp_path, quiet=True)
    assert (grown.ran, grown.skipped) == (6, 12)
    changed = Suite(methods(ORACLE, max_iterations=5), ["niah", "oolong"], [1024], [0, 1, 2])
    rerun = run_eval(changed, tmp_path, quiet=True)
    assert (rerun.ran, rerun.skipped) == (12, 6)  # rlm-d1 and rlm-d2 changed; base did not
    keys = [r["key"] for r in rows_of(tmp_path)]
    assert len(keys) == 30 and len(set(keys)) == 18
    assert rerun.report["items"] == {"planned": 18, "with_result": 18, "missing": 0}


def test_killed_run_resumes_without_redoing_finished_items(tmp_path: Path) -> None:
    out = tmp_path / "out"
    kwargs = json.dumps({**ORACLE, "latency": 0.25})
    command = [
        sys.executable,
        "-m",
        "rlm.cli.eval_cmd",
        "eval",
        "--backend",
        "scripted",
        "--backend-kwargs",
        kwargs,
        "--families",
        "niah,oolong",
        "--lengths",
        "1k",
        "--seeds",
        "5",
        "--methods",
        "base,rlm-d1",
        "--concurrency",
        "1",
        "--environment",
        ENVIRONMENT,
        "--out",
        str(out),
    ]
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
    )
    results = out / "results.jsonl"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if results.is_file() and results.read_text().count("\n") >= 3:
                break
            time.sleep(0.05)
        assert proc.poll() is None, proc.communicate()
        os.killpg(proc.pid, signal.SIGKILL)  # the hardest stop: no cleanup at all
    finally:
        proc.wait(timeout=30)
    before = [json.loads(line) for line in results.read_text().splitlines() if line.endswith("}")]
    assert 3 <= len(before) < 20
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"({len(before)} already done, {20 - len(before)} to run)" in done.stderr
    after = rows_of(out)
    assert after[: len(before)] == before  # finished rows untouched, nothing redone
    assert len(after) == 20 and len({r["key"] for r in after}) == 20
    assert all(r["score"] == 1.0 for r in after)


def test_torn_last_line_is_dropped(tmp_path: Path) -> None:
    run_eval(Suite(methods(ORACLE)[:1], ["niah"], [1024], [0, 1]), tmp_path, quiet=True)
    results = tmp_path / "results.jsonl"
    text = results.read_text()
    results.write_text(text + text.splitlines()[0][:40])  # a kill mid-write
    again = run_eval(Suite(methods(ORACLE)[:1], ["niah"], [1024], [0, 1, 2]), tmp_path, quiet=True)
    assert (again.ran, again.skipped) == (1, 2)
    assert all(line.endswith("}") for line in results.read_text().splitlines())


def test_lm_calls_are_capped_across_threads(tmp_path: Path) -> None:
    suite = Suite(
        [preset("base", "scripted", {**ORACLE, "latency": 0.05})], ["niah"], [1024], list(range(8))
    )
    engine = LocalEngine(concurrency=4, max_inflight_llm_calls=1)
    run = run_eval(suite, tmp_path / "one", engine, quiet=True)
    assert run.facts["llm_call_cap"] == 1 and run.facts["llm_calls_peak"] == 1
    free = LocalEngine(concurrency=4, max_inflight_llm_calls=8)
    run = run_eval(suite, tmp_path / "eight", free, quiet=True)
    assert 1 < run.facts["llm_calls_peak"] <= 4  # the cap is not what limited it
    assert {c["mean"] for c in run.report["cells"]} == {1.0}


def test_setup_failures_are_reported_and_retried(tmp_path: Path) -> None:
    broken = rlms_method("/nonexistent/python", "openai", {"model_name": "x"}, {})
    run = run_eval(Suite([broken], ["niah"], [1024], [0]), tmp_path, quiet=True)
    (row,) = rows_of(tmp_path)
    assert (row["status"], row["error_kind"], row["score"]) == ("failed", "config", None)
    assert "no Python interpreter" in row["error"] and run.failed_config == 1
    assert run.report["cells"][0]["mean"] is None
    assert run_eval(Suite([broken], ["niah"], [1024], [0]), tmp_path, quiet=True).ran == 1


def test_limit_errors_keep_the_partial_answer(tmp_path: Path) -> None:
    looping = {"responses": ["```repl\nx = 1\n```"]}
    method = preset("rlm-d1", "scripted", looping, {"environment": ENVIRONMENT, "max_llm_calls": 2})
    run_eval(Suite([method], ["niah"], [1024], [0]), tmp_path, quiet=True)
    (row,) = rows_of(tmp_path)
    assert row["error_kind"] == "limit" and row["error_type"] == "LLMCallLimitExceededError"
    assert row["status"] in ("partial", "failed")
    assert (row["score"] is None) == (row["status"] == "failed")


def test_batch_answers_rows_and_resumes(tmp_path: Path) -> None:
    tasks = [materialize(make_spec("niah", 1024, s)) for s in range(3)]
    source = tmp_path / "in.jsonl"
    (tmp_path / "doc.txt").write_text(tasks[2].context, encoding="utf-8")
    source.write_text(
        "\n".join(
            [
                json.dumps({"id": "a", "context": tasks[0].context, "question": tasks[0].question}),
                json.dumps({"id": "b", "context": tasks[1].context, "question": tasks[1].question}),
                json.dumps({"id": "c", "context_file": "doc.txt", "question": tasks[2].question}),
            ]
        )
        + "\n",
        encoding="utf-8",
    )
    (method,) = build_methods(["rlm-d1"], "scripted", ORACLE, {"environment": ENVIRONMENT})
    run = run_batch(source, tmp_path / "out.jsonl", method, quiet=True)
    assert (run.rows, run.ran, run.failed) == (3, 3, 0)
    answers = {
        r["id"]: r["answer"]
        for r in map(json.loads, (tmp_path / "out.jsonl").read_text().splitlines())
    }
    assert answers == {"a": tasks[0].answer, "b": tasks[1].answer, "c": tasks[2].answer}
    again = run_batch(source, tmp_path / "out.jsonl", method, quiet=True)
    assert (again.ran, again.skipped) == (0, 3)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{oops}\n", "in.jsonl:1: not JSON"),
        ('{"context": "x"}\n', "needs a string 'question'"),
        ('{"question": "q"}\n', "needs 'context'"),
        ('{"question": "q", "context_file": "no.txt"}\n', "context_file not found"),
        (
            '{"id": 1, "question": "q", "context": "x"}\n{"id": 1, "question": "q", "context": "y"}\n',
            "duplicate id '1'",
        ),
    ],
)
def test_batch_input_errors(tmp_path: Path, text: str, message: str) -> None:
    from rlm.evals.batch import BatchInputError

    source = tmp_path / "in.jsonl"
    source.write_text(text, encoding="utf-8")
    with pytest.raises(BatchInputError, match=message):
        run_batch(source, tmp_path / "out.jsonl", preset("base", "scripted", ORACLE), quiet=True)


def test_base_cuts_the_context_to_the_window_and_says_so(tmp_path: Path) -> None:
    from rlm.base.errors import ProviderError
    from rlm.evals import MethodSpec
    from rlm.evals.oracle import prompt_text, respond

    def small_model(prompt: object) -> str:  # a provider whose window is 6,000 characters
        if len(prompt_text(prompt)) > 6000:
            raise ProviderError("This prompt does not fit the model's context window")
        return respond(prompt)

    method = MethodSpec("base", "base", "scripted", {"responder": small_model}, context_window=4000)
    run = run_eval(Suite([method], ["niah"], [4096], [0]), tmp_path, quiet=True)
    (row,) = rows_of(tmp_path)
    fit = row["notes"]["window"]
    assert fit["truncated"] and fit["how"] == "middle" and fit["attempts"] >= 2
    assert fit["window_tokens"] == 4000 and fit["kept_chars"] < 6000 < fit["total_chars"]
    assert row["status"] == "ok" and run.report["cells"][0]["n_truncated"] == 1
    assert "1/1" in (tmp_path / "report.html").read_text()


def test_one_writer_per_directory(tmp_path: Path) -> None:
    from rlm.evals.store import ResultStore, StoreLockedError

    with ResultStore(tmp_path), pytest.raises(StoreLockedError, match="another run"):
        run_eval(Suite(methods(ORACLE)[:1], ["niah"], [1024], [0]), tmp_path, quiet=True)
