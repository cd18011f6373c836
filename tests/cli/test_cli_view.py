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

    (tmp_path / "out").mkdir()  # -o never creates folders
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


def write_log(tmp_path: Path, answer: str) -> Path:
    reply = REPLY.replace("f'{n} chars'", repr(answer))
    kwargs = json.dumps({"model_name": "scripted-view", "responses": [reply]})
    (tmp_path / "story.txt").write_text("Alice followed the White Rabbit.", encoding="utf-8")
    before = set((tmp_path / "logs").glob("*.jsonl")) if (tmp_path / "logs").is_dir() else set()
    run = rlm_cli("run", "-c", "story.txt", "--backend", "scripted", "--backend-kwargs", kwargs,
                  "--log-dir", "logs", "-q", "Who?", cwd=tmp_path)  # fmt: skip
    assert run.returncode == 0, run.stderr
    (log,) = set((tmp_path / "logs").glob("*.jsonl")) - before
    return log


def test_a_text_file_or_an_empty_log_is_refused(tmp_path: Path) -> None:
    (tmp_path / "story.txt").write_text("Alice followed the White Rabbit.\n", encoding="utf-8")
    (tmp_path / "empty.jsonl").write_text("", encoding="utf-8")
    (tmp_path / "numbers.jsonl").write_text("[1]\n[2]\n", encoding="utf-8")
    story = rlm_cli("view", "story.txt", "--no-open", cwd=tmp_path)
    assert story.returncode == 2 and story.stdout == ""
    assert story.stderr.splitlines() == [
        "rlm: error: story.txt: not a trajectory log: no run metadata or iterations in it "
        "(rlm run --log-dir DIR writes one)"
    ]
    empty = rlm_cli("view", "empty.jsonl", "--no-open", cwd=tmp_path)
    assert empty.returncode == 2
    assert empty.stderr.splitlines() == [
        "rlm: error: empty.jsonl: an empty log, nothing to show (rlm run --log-dir DIR writes one)"
    ]
    numbers = rlm_cli("view", "numbers.jsonl", "--no-open", cwd=tmp_path)
    assert numbers.returncode == 2 and "not a trajectory log" in numbers.stderr
    assert not list(tmp_path.glob("*.html"))


def test_output_folder_must_exist(tmp_path: Path) -> None:
    log = write_log(tmp_path, "first")
    proc = rlm_cli("view", str(log), "-o", "missing/dir/x.html", "--no-open", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        f"rlm: error: -o missing/dir/x.html: the folder {Path('missing/dir')} does not exist "
        "(create it first)"
    ]
    assert not (tmp_path / "missing").exists()


def test_several_logs_and_a_folder(tmp_path: Path) -> None:
    first = write_log(tmp_path, "first")
    second = write_log(tmp_path, "second")
    os.utime(first, (1_000_000_000, 1_000_000_000))  # second is the newest, whatever the clock
    both = rlm_cli("view", str(first), str(second), "--no-open", cwd=tmp_path)
    assert both.returncode == 0, both.stderr
    assert [Path(line) for line in both.stdout.splitlines()] == [
        Path(f"{first}.html"),
        Path(f"{second}.html"),
    ]
    assert "second" in Path(f"{second}.html").read_text(encoding="utf-8")
    Path(f"{second}.html").unlink()
    folder = rlm_cli("view", "logs", "--no-open", cwd=tmp_path)
    assert folder.returncode == 0, folder.stderr
    assert [tmp_path / line for line in folder.stdout.splitlines()] == [Path(f"{second}.html")]
    one_page = rlm_cli("view", str(first), str(second), "-o", "x.html", "--no-open", cwd=tmp_path)
    assert one_page.returncode == 2 and "-o names one page, but 2 logs" in one_page.stderr
