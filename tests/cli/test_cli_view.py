"""``rlm view``: a log written by ``rlm run --log-dir`` becomes one HTML page."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
REPLY = "```repl\nn = len(context)\nanswer['content'] = f'{n} chars'\nanswer['ready'] = True\n```"


def rlm_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("RLM_", "OPENAI_", "ANTHROPIC_"))
    }
    env["PYTHONPATH"] = str(REPO)
    return subprocess.run(
        [sys.executable, "-m", "rlm", *args],
        capture_output=True, text=True, env=env, cwd=cwd, timeout=60,
    )  # fmt: skip


def test_run_log_then_view(tmp_path: Path) -> None:
    (tmp_path / "story.txt").write_text("Alice followed the White Rabbit.", encoding="utf-8")
    kwargs = json.dumps({"model_name": "scripted-view", "responses": [REPLY]})
    run = rlm_cli("run", "-c", "story.txt", "--backend", "scripted", "--backend-kwargs", kwargs,
                  "--log-dir", "logs", "How long?", cwd=tmp_path)  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert run.stdout == "32 chars\n"
    (log,) = (tmp_path / "logs").glob("*.jsonl")
    assert f"rlm: trajectory: logs{os.sep}{log.name}" in run.stderr

    view = rlm_cli("view", str(log), "-o", "out/run.html", "--no-open", cwd=tmp_path)
    assert view.returncode == 0, view.stderr
    page = tmp_path / "out" / "run.html"
    assert view.stdout.strip() == "out/run.html" or Path(view.stdout.strip()) == Path(
        "out/run.html"
    )
    html = page.read_text(encoding="utf-8")
    assert html.lstrip().lower().startswith("<!doctype html")
    assert "scripted-view" in html

    default = rlm_cli("view", str(log), "--no-open", cwd=tmp_path)
    assert default.returncode == 0 and Path(str(log) + ".html").is_file()


def test_view_of_a_missing_file_or_a_directory_is_exit_2(tmp_path: Path) -> None:
    missing = rlm_cli("view", "nope.jsonl", "--no-open", cwd=tmp_path)
    assert missing.returncode == 2 and missing.stderr.startswith("rlm: error: nope.jsonl")
    (tmp_path / "logs").mkdir()
    directory = rlm_cli("view", "logs", "--no-open", cwd=tmp_path)
    assert directory.returncode == 2 and "Traceback" not in directory.stderr
