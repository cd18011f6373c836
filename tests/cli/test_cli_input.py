"""``rlm run`` never loses input in silence: skipped files are named, and an empty
context or a missing question is exit 2 unless ``--allow-empty`` (real subprocesses,
the scripted backend: no model is paid for)."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from cli_support import answer_code, rlm, scripted

from rlm.cli.config import MAX_SKIPS_LISTED, CLIUsageError, SkipLister, load_context

REPLY = answer_code("f'{type(context).__name__}:{len(context)}'")


def test_a_folder_names_the_files_it_leaves_out(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text("alpha", encoding="utf-8")
    (docs / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    (docs / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    (docs / "utf16.txt").write_bytes("hi".encode("utf-16-le"))  # valid UTF-8, NUL bytes
    proc = rlm("run", "-c", "docs", *scripted(REPLY), "-q", "How many?", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "list:1\n"  # only a.txt reached the model
    skipped = sorted(line for line in proc.stderr.splitlines() if "skipped" in line)
    assert skipped == [
        f"rlm: skipped {os.path.join('docs', 'image.png')}: not a UTF-8 text file",
        f"rlm: skipped {os.path.join('docs', 'latin1.txt')}: not a UTF-8 text file",
        f"rlm: skipped {os.path.join('docs', 'utf16.txt')}: a binary file (it holds NUL bytes)",
    ]


def test_an_empty_file_is_exit_2_unless_allowed(tmp_path: Path) -> None:
    (tmp_path / "empty.txt").write_text("\n  \n", encoding="utf-8")
    proc = rlm("run", "-c", "empty.txt", *scripted(REPLY), "Who?", cwd=tmp_path)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.splitlines() == [
        "rlm: error: --context empty.txt: the file is empty; pass --allow-empty to run anyway"
    ]
    allowed = rlm("run", "-c", "empty.txt", "--allow-empty", *scripted(REPLY), "-q", "Who?",
                  cwd=tmp_path)  # fmt: skip
    assert allowed.returncode == 0, allowed.stderr
    assert allowed.stdout == "str:4\n"


def test_empty_stdin_is_exit_2(tmp_path: Path) -> None:
    proc = rlm("run", "-c", "-", *scripted(REPLY), "Who?", cwd=tmp_path, stdin="")
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.splitlines() == [
        "rlm: error: --context -: stdin is empty (nothing was piped in); pass --allow-empty "
        "to run anyway"
    ]


def test_a_folder_of_empty_files_is_exit_2(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.txt").write_text("", encoding="utf-8")
    (tmp_path / "d" / "b.txt").write_text(" ", encoding="utf-8")
    proc = rlm("run", "-c", "d", *scripted(REPLY), "Who?", cwd=tmp_path)
    assert proc.returncode == 2
    assert "--context d: every file is empty" in proc.stderr


@pytest.mark.parametrize("question", [None, "", "   "])
def test_a_missing_question_is_exit_2_unless_allowed(tmp_path: Path, question: str | None) -> None:
    (tmp_path / "story.txt").write_text("Alice saw a rabbit.", encoding="utf-8")
    args = ["run", "-c", "story.txt", *scripted(REPLY)] + (
        [question] if question is not None else []
    )
    proc = rlm(*args, cwd=tmp_path, console_script=True)
    assert proc.returncode == 2 and proc.stdout == ""
    (line,) = proc.stderr.splitlines()
    assert line.startswith("rlm: error: no question: ") and "--allow-empty" in line
    allowed = rlm(*args, "--allow-empty", "-q", cwd=tmp_path, console_script=True)
    assert allowed.returncode == 0, allowed.stderr
    assert allowed.stdout == "str:19\n"


def test_skip_lister_names_the_first_files_then_counts(tmp_path: Path) -> None:
    for i in range(MAX_SKIPS_LISTED + 3):
        (tmp_path / f"b{i:02}.bin").write_bytes(b"\xff")
    (tmp_path / "ok.txt").write_text("ok", encoding="utf-8")
    err = io.StringIO()
    lister = SkipLister(err)
    assert load_context(str(tmp_path), io.StringIO(), on_skip=lister) == ["ok"]
    lister.finish()
    lines = err.getvalue().splitlines()
    assert len(lines) == MAX_SKIPS_LISTED + 1
    assert lines[-1] == f"rlm: skipped 3 more files ({MAX_SKIPS_LISTED + 3} in all)"
    with pytest.raises(CLIUsageError, match="no readable UTF-8 text files"):
        load_context(str(tmp_path / "*.bin"), io.StringIO(), on_skip=lister)
