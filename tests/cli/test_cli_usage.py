"""Usage errors say what is wrong in the command's own words, help lists the choices,
and ``rlm ... | head`` exits quietly (real subprocesses)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from cli_support import answer_code, clean_env, rlm, scripted

from rlm.clients.registry import backend_names
from rlm.environments import environment_names


@pytest.mark.parametrize(
    ("args", "usage"),
    [
        (["run", "-c", "x.txt", "--bogus", "Q?"], "usage: rlm run "),
        (["run", "-c", "x.txt", "Q?", "extra words"], "usage: rlm run "),
        (["sessions", "list", "--bogus"], "usage: rlm sessions list "),
        (["view", "a.jsonl", "--bogus"], "usage: rlm view "),
        (["serve", "--bogus"], "usage: rlm serve "),
    ],
)
def test_an_unknown_argument_prints_the_subcommands_usage(
    tmp_path: Path, args: list[str], usage: str
) -> None:
    proc = rlm(*args, cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.startswith(usage), proc.stderr
    assert "usage: rlm [-h]" not in proc.stderr
    assert proc.stderr.splitlines()[-1].endswith("unrecognized arguments: " + args[-1]) or (
        "unrecognized arguments: --bogus" in proc.stderr
    )


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("{bad", "not a JSON object: Expecting property name enclosed in double quotes at "
                 "line 1 column 2"),
        ("[1, 2]", "not a JSON object: got an array"),
        ('"text"', "not a JSON object: got a string"),
    ],
)  # fmt: skip
def test_backend_kwargs_errors_say_what_is_wrong(tmp_path: Path, value: str, problem: str) -> None:
    flag = rlm("run", "-c", "x.txt", "--backend-kwargs", value, "Q?", cwd=tmp_path)
    assert flag.returncode == 2
    last = flag.stderr.splitlines()[-1]
    assert last == (
        f"rlm run: error: argument --backend-kwargs: {problem} (the value is not shown: it "
        "may hold secrets)"
    )
    assert "_json_object" not in flag.stderr
    env = rlm("run", "-c", "x.txt", "Q?", cwd=tmp_path, env={"RLM_BACKEND_KWARGS": value})
    assert env.returncode == 2
    assert env.stderr.splitlines() == [f"rlm: error: RLM_BACKEND_KWARGS: {problem} (the value "
                                       "is not shown: it may hold secrets)"]  # fmt: skip


@pytest.mark.parametrize(
    ("flag", "value", "problem"),
    [
        ("--max-iterations", "0", "must be at least 1 (got '0')"),
        ("--max-depth", "two", "expected a whole number (got 'two')"),
        ("--max-budget", "-1", "must be greater than 0 (got '-1')"),
    ],
)
def test_number_flags_say_what_is_wrong(
    tmp_path: Path, flag: str, value: str, problem: str
) -> None:
    proc = rlm("run", "-c", "x.txt", flag, value, "Q?", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.splitlines()[-1] == f"rlm run: error: argument {flag}: {problem}"


def test_help_lists_environments_and_backends(tmp_path: Path) -> None:
    proc = rlm("run", "--help", cwd=tmp_path, env={"COLUMNS": "400"})
    assert proc.returncode == 0
    lines = proc.stdout.splitlines()
    env_help = next(line for line in lines if line.strip().startswith("--env"))
    backend_help = next(line for line in lines if line.strip().startswith("--backend NAME"))
    assert f"one of: {', '.join(environment_names())} (default: local)" in env_help
    assert f"one of: {', '.join(backend_names())} (default:" in backend_help
    bad = rlm("run", "-c", "x.txt", "--env", "sandbx", "Q?", cwd=tmp_path)
    assert bad.returncode == 2
    assert "argument --env: invalid choice: 'sandbx' (choose from 'local'" in bad.stderr
    from_env = rlm("run", "-c", "x.txt", "Q?", cwd=tmp_path, env={"RLM_ENV": "sandbx"})
    assert from_env.returncode == 2
    assert from_env.stderr.splitlines() == [
        f"rlm: error: RLM_ENV: invalid value 'sandbx' (not an environment; choose from "
        f"{', '.join(environment_names())})"
    ]


def closed_stdout(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> tuple[int, str]:
    """Run ``rlm ARGS`` whose stdout reader has gone before it writes (as ``| head`` does
    once it has its lines); its exit code and stderr."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "rlm", *args],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env=clean_env(cwd, env), cwd=cwd, text=True,
    )  # fmt: skip
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # the reader is gone: the first write gets EPIPE
    stderr = proc.stderr.read()
    proc.stderr.close()
    return proc.wait(timeout=120), stderr


def test_run_json_into_a_closed_pipe_exits_quietly(tmp_path: Path) -> None:
    (tmp_path / "story.txt").write_text("Alice.", encoding="utf-8")
    reply = answer_code("'x' * 200_000")
    code, stderr = closed_stdout(
        ["run", "-c", "story.txt", *scripted(reply), "--json", "-q", "Q?"], tmp_path
    )
    assert "Traceback" not in stderr and "BrokenPipeError" not in stderr, stderr
    assert stderr == ""
    assert code == 141


def test_sessions_export_into_head_exits_quietly(tmp_path: Path) -> None:
    store = tmp_path / "s.db"
    reply = answer_code("'noted'")
    made = rlm("chat", "--session", "notes", "--store", str(store), *scripted(reply), "-q",
               cwd=tmp_path, stdin="x" * 300_000 + "\n/quit\n", env={"TERM": "dumb"})  # fmt: skip
    assert made.returncode == 0, made.stderr
    shell = subprocess.run(
        ["bash", "-c", f'set -o pipefail; "$RLM" sessions export notes --store {store} | head -c 100'],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
        env=clean_env(tmp_path, {"RLM": str(Path(sys.executable).with_name("rlm"))}),
    )  # fmt: skip
    assert len(shell.stdout) == 100
    assert "Traceback" not in shell.stderr and "BrokenPipe" not in shell.stderr, shell.stderr
    assert shell.stderr == ""
    assert shell.returncode == 141  # pipefail: rlm's status, as a tool killed by SIGPIPE
    code, stderr = closed_stdout(["sessions", "export", "notes", "--store", str(store)], tmp_path)
    assert (code, stderr) == (141, "")
    assert (
        json.loads(rlm("sessions", "export", "notes", "--store", str(store), cwd=tmp_path).stdout)[
            "session"
        ]["id"]
        == "notes"
    )


def test_sessions_export_to_an_unwritable_path_is_one_line(tmp_path: Path) -> None:
    store = tmp_path / "s.db"
    made = rlm("chat", "--session", "notes", "--store", str(store), *scripted(answer_code("'ok'")),
               "-q", cwd=tmp_path, stdin="hello\n/quit\n", env={"TERM": "dumb"})  # fmt: skip
    assert made.returncode == 0, made.stderr
    for target in ("nodir/out.json", str(tmp_path)):  # a missing folder; a folder
        proc = rlm("sessions", "export", "notes", "--store", str(store), "-o", target, cwd=tmp_path)
        assert proc.returncode == 2, proc.stderr
        assert "Traceback" not in proc.stderr
        assert proc.stderr.startswith("rlm: error: cannot write ") and proc.stderr.count("\n") == 1


def test_a_missing_session_or_store_is_exit_2_as_the_table_says(tmp_path: Path) -> None:
    # The table (rlm --help, docs/surfaces.md, rlm.cli.failures): a session or store
    # that does not exist is bad input, 2; a session in use is 1 (test_cli_session_lock).
    help_text = rlm("--help", cwd=tmp_path).stdout
    assert "exit codes (every command):" in help_text
    assert "no such session or store" in help_text
    store = tmp_path / "s.db"
    missing_store = [
        ["show", "nosuch"], ["rm", "nosuch"], ["export", "nosuch"], ["fork", "nosuch", "new"],
    ]  # fmt: skip
    for verb in missing_store:
        proc = rlm("sessions", *verb, "--store", str(store), cwd=tmp_path)
        assert proc.returncode == 2, (verb, proc.stderr)
        assert proc.stderr == f"rlm: error: no session store at {store}\n"
    made = rlm("chat", "--session", "notes", "--store", str(store), *scripted(answer_code("'ok'")),
               "-q", cwd=tmp_path, stdin="hello\n/quit\n", env={"TERM": "dumb"})  # fmt: skip
    assert made.returncode == 0, made.stderr
    for verb in (["show", "nosuch"], ["rm", "nosuch"], ["export", "nosuch"],
                 ["fork", "nosuch", "new"], ["show", "nosuch", "--json"]):  # fmt: skip
        proc = rlm("sessions", *verb, "--store", str(store), cwd=tmp_path)
        assert proc.returncode == 2, (verb, proc.stderr)
        assert proc.stderr == f"rlm: error: no session 'nosuch' in {store}\n", verb
    taken = rlm("sessions", "fork", "notes", "notes", "--store", str(store), cwd=tmp_path)
    assert taken.returncode == 2
    assert taken.stderr == "rlm: error: cannot fork to 'notes': that session already exists\n"
    bad_url = rlm("sessions", "list", "--store", f"sqlite:///{store}?bogus=1", cwd=tmp_path)
    assert bad_url.returncode == 2 and "unknown session store URL option" in bad_url.stderr
    # Nothing was lost on the way.
    shown = rlm("sessions", "show", "notes", "--store", str(store), cwd=tmp_path)
    assert shown.returncode == 0 and shown.stdout.startswith("session notes · 1 turn · ")
