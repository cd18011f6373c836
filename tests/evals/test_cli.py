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
from conftest import ENVIRONMENT

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
        (["--backend-kwargs", "{oops"], "--backend-kwargs is not JSON"),
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
            "6",
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
    assert report["items"]["planned"] == 6 and 1 <= report["items"]["with_result"] < 6


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
