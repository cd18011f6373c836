"""``rlm run --cache`` and ``rlm cache stats|clear``: the real ``rlm`` command in a
subprocess, against a loopback OpenAI-compatible upstream that counts its requests."""

from __future__ import annotations

import json
import sqlite3
import stat
from pathlib import Path

import pytest
from cli_support import GOOD_KEY, rlm, upstream

pytest.importorskip("openai")

ZERO = json.dumps({"sampling_args": {"temperature": 0}})


@pytest.fixture
def story(tmp_path: Path) -> Path:
    (tmp_path / "story.txt").write_text("Alice followed the White Rabbit.", encoding="utf-8")
    return tmp_path


def ask(url: str, cwd: Path, *flags: str) -> str:
    proc = rlm("run", "-c", "story.txt", "--base-url", url, "--model", "gpt-4o-mini", "-q",
               *flags, "Who?", cwd=cwd, env={"OPENAI_API_KEY": GOOD_KEY})  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_run_with_cache_then_stats_and_clear(story: Path) -> None:
    path = story / "calls.db"
    with upstream() as server:
        flags = ("--backend-kwargs", ZERO, "--cache-path", str(path))
        assert ask(server.url, story, *flags) == "the White Rabbit\n"
        assert len(server.keys) == 1
        assert ask(server.url, story, *flags) == "the White Rabbit\n"
        assert len(server.keys) == 1  # the second run never reached the upstream

    shown = rlm("cache", "stats", "--cache", str(path), cwd=story)
    assert shown.returncode == 0, shown.stderr
    lines = dict(line.split(":", 1) for line in shown.stdout.splitlines())
    assert lines["cache"].strip() == str(path)
    assert lines["entries"].strip() == "1"
    assert lines["hits"].strip() == "1"
    assert lines["saved"].strip() == "30 input + 5 output tokens"
    assert lines["cost saved"].strip().startswith("$0.0000")
    assert lines["size"].strip().endswith(("KiB", "B"))

    as_json = rlm("cache", "stats", "--cache", str(path), "--json", cwd=story)
    data = json.loads(as_json.stdout)
    assert (data["entries"], data["hits"], data["saved_output_tokens"]) == (1, 1, 5)
    assert data["saved_cost"] > 0 and data["size_bytes"] > 0

    cleared = rlm("cache", "clear", "--cache", str(path), cwd=story)
    assert cleared.returncode == 0, cleared.stderr
    assert cleared.stdout == f"cleared 1 entry from {path}\n"
    after = json.loads(rlm("cache", "stats", "--cache", str(path), "--json", cwd=story).stdout)
    assert (after["entries"], after["hits"]) == (0, 0)


def test_the_default_file_and_sampled_calls(story: Path) -> None:
    default = story / ".cache" / "rlmx" / "calls.db"  # HOME is the test's folder
    with upstream() as server:
        ask(server.url, story, "--cache")  # no temperature: sampled, not cached
        ask(server.url, story, "--cache")
        assert len(server.keys) == 2
        ask(server.url, story, "--cache-sampled")
        ask(server.url, story, "--cache-sampled")
        assert len(server.keys) == 3
    assert stat.S_IMODE(default.stat().st_mode) == 0o600
    assert stat.S_IMODE(default.parent.stat().st_mode) == 0o700
    data = json.loads(rlm("cache", "stats", "--json", cwd=story).stdout)
    assert (data["path"], data["entries"], data["hits"]) == (str(default), 1, 1)


def test_stats_of_a_missing_file_and_errors(story: Path) -> None:
    missing = story / "none.db"
    shown = rlm("cache", "stats", "--cache", str(missing), "--json", cwd=story)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["entries"] == 0
    text = rlm("cache", "stats", "--cache", str(missing), cwd=story)
    assert text.returncode == 0, text.stderr
    assert text.stdout.splitlines()[0] == (
        f"cache:       {missing}  (no such file yet: nothing has been cached there)"
    )
    assert not missing.exists()

    broken = story / "broken.db"
    broken.write_bytes(b"garbage" * 200)
    for verb in ("stats", "clear"):
        proc = rlm("cache", verb, "--cache", str(broken), cwd=story)
        assert proc.returncode == 2
        assert proc.stderr.startswith(f"rlm: error: {broken} is not a usable call cache")
        assert "Traceback" not in proc.stderr
    assert broken.read_bytes() == b"garbage" * 200

    other = story / "notes.db"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE notes (body TEXT)")
    proc = rlm("cache", "clear", "--cache", str(other), cwd=story)
    assert proc.returncode == 2 and "not an rlmx call cache" in proc.stderr

    folder = rlm("cache", "stats", "--cache", str(story), cwd=story)
    assert folder.returncode == 2 and "is a directory" in folder.stderr
    bare = rlm("cache", cwd=story)
    assert bare.returncode == 2 and "stats" in bare.stdout


def test_help_names_the_file_in_use(tmp_path: Path) -> None:
    unset = rlm("cache", "--help", cwd=tmp_path)
    assert "else $RLM_CACHE_PATH (unset), else " in " ".join(unset.stdout.split())
    chosen = tmp_path / "mine.db"
    proc = rlm("cache", "--help", cwd=tmp_path, env={"RLM_CACHE_PATH": str(chosen)})
    assert f"else $RLM_CACHE_PATH (set: {chosen}), else " in " ".join(proc.stdout.split())


class _ClosedPipe:
    """A stdout whose reader has gone (``rlm cache stats | head -0``)."""

    def write(self, text: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")

    def flush(self) -> None:
        raise BrokenPipeError(32, "Broken pipe")


def test_a_closed_stdout_is_a_closed_pipe_not_a_broken_cache(tmp_path: Path) -> None:
    import argparse
    import io

    from rlm.cli.cache_cmd import cmd_stats

    err = io.StringIO()
    args = argparse.Namespace(cache=str(tmp_path / "calls.db"), json=False)
    with pytest.raises(BrokenPipeError):  # main() turns it into exit 141, like every command
        cmd_stats(args, out=_ClosedPipe(), err=err)  # type: ignore[arg-type]
    assert "not a usable call cache" not in err.getvalue()


def test_run_with_cache_says_when_the_model_samples_and_counts_hits(story: Path) -> None:
    path = story / "calls.db"
    with upstream() as server:
        plain = rlm("run", "-c", "story.txt", "--base-url", server.url, "--model",
                    "gpt-4o-mini", "--cache-path", str(path), "Who?", cwd=story,
                    env={"OPENAI_API_KEY": GOOD_KEY})  # fmt: skip
        assert "--cache stores only calls made at temperature 0" in plain.stderr
        flags = ("--backend-kwargs", ZERO, "--cache-path", str(path))
        for _ in range(2):
            done = rlm("run", "-c", "story.txt", "--base-url", server.url, "--model",
                       "gpt-4o-mini", *flags, "Who?", cwd=story,
                       env={"OPENAI_API_KEY": GOOD_KEY})  # fmt: skip
            assert done.returncode == 0, done.stderr
            assert "--cache stores only" not in done.stderr
    usage = [line for line in done.stderr.splitlines() if line.startswith("rlm: usage ")]
    assert usage and "0 calls" in usage[0] and "1 from the cache" in usage[0]
