"""``rlm eval`` and ``rlm batch`` from the command line (``python -m rlm.cli.eval_cmd``
and a parser built the way ``rlm.cli`` builds its own)."""

from __future__ import annotations

import argparse
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ENVIRONMENT, ORACLE, WRONG

from rlm.cli import eval_cmd
from rlm.cli.eval_cmd import main


def run(*argv: str) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser(prog="rlm")
    eval_cmd.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(list(argv))
    out, err = io.StringIO(), io.StringIO()
    code = args.handler(args, out, err)
    return code, out.getvalue(), err.getvalue()


def test_list() -> None:
    code, out, _ = run("eval", "--list")
    assert code == 0
    for name in (
        "niah",
        "oolong",
        "pairs",
        "codeqa",
        "oolong-synth",
        "longbench-v2",
        "browsecomp-plus",
        "mrcr",
        "rlm-d2",
    ):
        assert name in out


def test_self_check_passes(tmp_path: Path) -> None:
    code, out, err = run(
        "eval",
        "--self-check",
        "--families",
        "niah,pairs",
        "--lengths",
        "1k",
        "--seeds",
        "1",
        "--environment",
        ENVIRONMENT,
        "--out",
        str(tmp_path),
        "-q",
    )
    assert code == 0, err
    assert "self-check passed" in out and "scripted backend" in err
    assert (tmp_path / "report.html").is_file()
    code, out, _ = run("eval", "--report-only", "--out", str(tmp_path))
    assert code == 0 and "rlm-d2" in out and "score 1.000" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--families", "nope"], "unknown task family nope"),
        (["--lengths", "8q"], "bad context length '8q'"),
        (["--dataset", "mrcr=/nonexistent.jsonl"], "dataset file not found"),
        (["--dataset", "mrcr"], "use NAME=PATH"),
        (["--methods", "rlm-d9"], "unknown method 'rlm-d9'"),
        (["--backend-kwargs", "{oops"], "--backend-kwargs: not a JSON object"),
        (["--backend-kwargs", "@/nonexistent.json"], "--backend-kwargs: cannot read"),
        (["--config", "/nonexistent.toml"], "config file not found"),
    ],
)
def test_bad_input_exits_2_with_a_clear_message(
    tmp_path: Path, argv: list[str], message: str
) -> None:
    code, _, err = run("eval", "--backend", "scripted", "--out", str(tmp_path), *argv)
    assert code == 2 and message in err, err


def test_report_only_needs_a_run(tmp_path: Path) -> None:
    code, _, err = run("eval", "--report-only", "--out", str(tmp_path))
    assert code == 2 and "no suite.json" in err


def test_a_missing_api_key_is_one_line_before_any_item(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    for command in (["eval", "--out", str(tmp_path / "e")], ["batch", str(tmp_path / "q.jsonl")]):
        (tmp_path / "q.jsonl").write_text('{"id": "a", "context": "x", "question": "q"}\n')
        code, _, err = run(*command, "--backend", "openai", "--model", "gpt-5-mini")
        assert code == 2, err
        assert err.strip().splitlines()[-1].startswith("rlm: error: ") and "OPENAI_API_KEY" in err
        assert not (tmp_path / "e" / "results.jsonl").exists()  # nothing ran


def test_setup_failures_exit_1(tmp_path: Path) -> None:
    code, _, err = run(
        "eval",
        "--backend",
        "openai",
        "--model",
        "x",
        "--backend-kwargs",
        '{"api_key": "sk-test-not-used"}',
        "--methods",
        "rlms",
        "--rlms-python",
        "/nonexistent/python",
        "--families",
        "niah",
        "--lengths",
        "1k",
        "--seeds",
        "1",
        "--out",
        str(tmp_path),
        "-q",
    )
    assert code == 1 and "could not run" in err


def test_bad_toml_exits_2(tmp_path: Path) -> None:
    config = tmp_path / "e.toml"
    config.write_text("[suite]\nlengths = [", encoding="utf-8")
    code, _, err = run("eval", "--config", str(config), "--out", str(tmp_path / "o"))
    assert code == 2 and "not valid TOML" in err


def test_batch(tmp_path: Path) -> None:
    source = tmp_path / "q.jsonl"
    text = "The special magic number for red-fox-123 is: 7654321.\n\nOther text."
    question = "What is the special magic number for red-fox-123 mentioned in the text? Reply with the number."
    source.write_text(
        json.dumps({"id": "x", "context": text, "question": question}) + "\n", encoding="utf-8"
    )
    kwargs = json.dumps({"responder": "rlm.evals.oracle:respond"})
    code, out, err = run(
        "batch",
        str(source),
        "--backend",
        "scripted",
        "--backend-kwargs",
        kwargs,
        "--environment",
        ENVIRONMENT,
        "-q",
    )
    assert code == 0, err
    (row,) = [json.loads(line) for line in (tmp_path / "q.answers.jsonl").read_text().splitlines()]
    assert (row["id"], row["answer"], row["status"]) == ("x", "7654321", "ok")
    assert "1 rows: 1 answered now" in out
    code, _, err = run("batch", str(tmp_path / "none.jsonl"), "--backend", "scripted")
    assert code == 2 and "input file not found" in err


def test_ctrl_c_keeps_finished_items_and_exits_130(tmp_path: Path) -> None:
    out = tmp_path / "out"
    kwargs = json.dumps({"responder": "rlm.evals.oracle:respond", "latency": 0.3})
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "rlm.cli.eval_cmd",
            "eval",
            "--backend",
            "scripted",
            "--backend-kwargs",
            kwargs,
            "--families",
            "niah",
            "--lengths",
            "1k",
            "--seeds",
            "40",  # 12 s of work: Ctrl-C lands mid-run even on a loaded machine
            "--methods",
            "base",
            "--concurrency",
            "1",
            "--out",
            str(out),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # a background job's children inherit SIGINT ignored (then Python never raises
        # KeyboardInterrupt): give the command the Ctrl-C a terminal would
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    results = out / "results.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if results.is_file() and results.read_text().count("\n") >= 1:
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted; finished items are kept" in err
    report = json.loads((out / "report.json").read_text())
    assert report["items"]["planned"] == 40 and 1 <= report["items"]["with_result"] < 40


def test_main_usage_errors() -> None:
    assert main(["eval", "--seeds", "x"]) == 2
    assert main([]) == 2


def test_importing_evals_never_imports_ray() -> None:
    code = (
        "import sys; import rlm.evals, rlm.evals.runner, rlm.cli.eval_cmd, rlm.evals.engines.local; "
        "assert 'ray' not in sys.modules, 'ray was imported'"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_ray_engine_without_ray_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    code, _, err = run("eval", "--self-check", "--engine", "ray", "--out", str(tmp_path), "-q")
    assert code == 2 and "pip install 'rlmx[ray]'" in err


# -- rlm batch reruns: one row per id, conflicts named, --overwrite replaces -----------------


def rlm_batch(cwd: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    """``rlm batch ...`` in a subprocess (``python -m rlm``, as a user runs it)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RLM_", "OPENAI_"))}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])  # this checkout's rlm
    return subprocess.run(
        [sys.executable, "-m", "rlm", "batch", *argv],
        capture_output=True, text=True, cwd=cwd, env=env, timeout=300,
    )  # fmt: skip


def batch_rows(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_batch_reruns_never_write_an_id_twice(tmp_path: Path) -> None:
    from rlm.evals import make_spec, materialize

    tasks = [materialize(make_spec("niah", 512, seed)) for seed in range(2)]
    source = tmp_path / "q.jsonl"
    rows = [
        {"id": rid, "context": t.context, "question": t.question}
        for rid, t in zip("ab", tasks, strict=True)
    ]
    source.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    output = tmp_path / "q.answers.jsonl"
    oracle = ["--backend", "scripted", "--backend-kwargs", json.dumps(ORACLE)]
    wrong = ["--backend", "scripted", "--backend-kwargs", json.dumps(WRONG)]
    common = ["--method", "base", "--environment", "local", "-q"]

    first = rlm_batch(tmp_path, "q.jsonl", *oracle, *common)
    assert first.returncode == 0, first.stderr
    answers = {r["id"]: r["answer"] for r in batch_rows(output)}  # in the order they finished
    assert answers == {"a": tasks[0].answer, "b": tasks[1].answer}
    assert {r["method"] for r in batch_rows(output)} == {"base"}
    before = output.read_bytes()

    # The same settings: nothing runs, nothing is written.
    same = rlm_batch(tmp_path, "q.jsonl", *oracle, *common)
    assert same.returncode == 0, same.stderr
    assert "2 rows: 0 answered now, 2 before, 0 failed" in same.stdout
    assert output.read_bytes() == before

    # Other settings, another method, a changed row: exit 2 naming them, before anything
    # runs, the output untouched.
    changed = rlm_batch(tmp_path, "q.jsonl", *wrong, *common)
    assert changed.returncode == 2, changed.stderr
    assert changed.stderr.splitlines()[-1] == (
        "rlm: error: q.answers.jsonl already holds answers for 2 of these rows ('a', 'b') that "
        "this run cannot reuse: made with other settings (backend, model, limits or method "
        "options). Pass --overwrite to answer them again and replace those rows, or -o "
        "NEW.jsonl to write elsewhere"
    )
    method = rlm_batch(tmp_path, "q.jsonl", *oracle, *common[2:], "--method", "rlm-d1")
    assert method.returncode == 2
    assert "made with method 'base', this run uses 'rlm-d1'" in method.stderr
    edited = [rows[0], {**rows[1], "question": rows[1]["question"] + " Be brief."}]
    source.write_text("".join(json.dumps(r) + "\n" for r in edited), encoding="utf-8")
    row_changed = rlm_batch(tmp_path, "q.jsonl", *oracle, *common)
    assert row_changed.returncode == 2
    assert "1 of these rows ('b')" in row_changed.stderr
    assert "their input row changed since (context or question)" in row_changed.stderr
    assert output.read_bytes() == before
    source.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")

    # --overwrite answers them again; each id is still there once, with the new answer.
    again = rlm_batch(tmp_path, "q.jsonl", *wrong, *common, "--overwrite")
    assert again.returncode == 0, again.stderr
    assert "2 rows: 2 answered now (2 replacing older answers), 0 before" in again.stdout
    after = batch_rows(output)
    assert sorted((str(r["id"]), r["answer"]) for r in after) == [
        ("a", "I do not know."),
        ("b", "I do not know."),
    ]

    # A run killed before it tidied up (a row appended, the old one still there): the
    # next run keeps the newest row per id.
    stale = {**after[0], "answer": "stale"}
    output.write_text("".join(json.dumps(r) + "\n" for r in [stale, *after]), encoding="utf-8")
    tidy = rlm_batch(tmp_path, "q.jsonl", *wrong, *common)
    assert tidy.returncode == 0, tidy.stderr
    tidied = batch_rows(output)
    assert [r["id"] for r in tidied] == [r["id"] for r in after]  # each id once, in place
    assert {r["answer"] for r in tidied} == {"I do not know."}  # the newest row won


def test_batch_help_says_what_a_rerun_does(tmp_path: Path) -> None:
    done = rlm_batch(tmp_path, "--help")
    assert done.returncode == 0
    text = " ".join(done.stdout.split())
    assert "--overwrite" in text
    assert "rerunning over the same output writes each id once" in text


def test_eval_checks_every_argument_before_any_note(tmp_path: Path) -> None:
    # No model given: the embedded one, whose note ("scores mean nothing") must not come
    # before an error in the arguments.
    for argv, message in [
        (["--families", "nosuch"], "unknown task family nosuch"),
        (["--lengths", "0"], "a context length must be positive"),
        (["--seeds", "0,1", "--families", "niah,bogus"], "unknown task family bogus"),
    ]:
        code, _, err = run("eval", "--out", str(tmp_path / "e"), *argv)
        assert code == 2, err
        assert err.splitlines() == [
            f"rlm: error: {err.splitlines()[-1].removeprefix('rlm: error: ')}"
        ]
        assert message in err and "note" not in err and "embedded" not in err, err
    assert not (tmp_path / "e").exists()  # nothing ran, nothing was written


def test_batch_takes_backend_kwargs_from_a_file_and_env_like_every_command(
    tmp_path: Path,
) -> None:
    """``--backend-kwargs @FILE`` and ``--env`` work in ``rlm batch`` as in ``rlm run``."""
    from rlm.evals import make_spec, materialize

    task = materialize(make_spec("niah", 512, 0))
    source = tmp_path / "q.jsonl"
    row = {"id": "a", "context": task.context, "question": task.question}
    source.write_text(json.dumps(row) + "\n", encoding="utf-8")
    kwargs = tmp_path / "kwargs.json"
    kwargs.write_text(json.dumps(ORACLE), encoding="utf-8")
    done = rlm_batch(
        tmp_path, "q.jsonl", "--backend", "scripted", "--backend-kwargs", f"@{kwargs}",
        "--method", "base", "--env", "local", "-q",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert [r["answer"] for r in batch_rows(tmp_path / "q.answers.jsonl")] == [task.answer]


def test_self_check_keeps_out_of_a_real_runs_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    code, out, _ = run(
        "eval", "--self-check", "--families", "niah", "--lengths", "1k", "--seeds", "1",
        "--environment", "local", "-q",
    )  # fmt: skip
    assert code == 0, out
    assert (tmp_path / "rlm-eval-selfcheck" / "report.json").is_file()
    assert not (tmp_path / "rlm-eval").exists()
