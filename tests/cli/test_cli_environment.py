"""An environment that cannot start, through real ``rlm`` subprocesses: one line naming
the problem and the fix, exit 2 (setup), never the internal class name
``EnvironmentError_``.

The docker CLI is the real one when it is installed, pointed at a socket where no
daemon listens (``DOCKER_HOST``), so the test does not depend on whether this machine
runs Docker; a stand-in ``docker`` that answers as the CLI does without a daemon
covers machines without the CLI."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import pytest
from cli_support import answer_code, rlm, scripted

from rlm.base.errors import EnvironmentError_, WorkerCrashedError
from rlm.cli.failures import EXIT_ERROR, EXIT_USAGE, describe
from rlm.environments.sandbox_repl import BWRAP_INSTALL_HINT

NO_DAEMON = (
    "docker: Cannot connect to the Docker daemon at unix:///run/nowhere/docker.sock. "
    "Is the docker daemon running?\n\nRun 'docker run --help' for more information\n"
)


def standin_docker(folder: Path) -> Path:
    """A ``docker`` that fails as the real CLI does when no daemon is reachable."""
    folder.mkdir(exist_ok=True)
    script = folder / "docker"
    script.write_text(f"#!/bin/sh\ncat >&2 <<'EOF'\n{NO_DAEMON}EOF\nexit 125\n", encoding="utf-8")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return folder


def docker_setups(tmp_path: Path) -> list[tuple[str, dict[str, str]]]:
    setups = [
        (
            "stand-in",
            {"PATH": f"{standin_docker(tmp_path / 'bin')}{os.pathsep}{os.environ['PATH']}"},
        )
    ]
    if shutil.which("docker"):
        sock = tmp_path / "no-daemon.sock"
        setups.append(("real CLI", {"DOCKER_HOST": f"unix://{sock}"}))
    return setups


def assert_one_clear_line(stderr: str) -> str:
    assert "EnvironmentError_" not in stderr and "Traceback" not in stderr
    errors = [line for line in stderr.splitlines() if line.startswith("rlm: error: ")]
    assert len(errors) == 1, stderr
    assert stderr.rstrip("\n").splitlines()[-1] == errors[0]  # nothing after it
    return errors[0]


def test_run_with_docker_and_no_daemon_is_one_line_and_exit_2(tmp_path: Path) -> None:
    context = tmp_path / "story.txt"
    context.write_text("Alice followed the White Rabbit.\n", encoding="utf-8")
    for name, env in docker_setups(tmp_path):
        proc = rlm("run", "--env", "docker", "-c", str(context), *scripted(answer_code("'x'")),
                   "Who?", cwd=tmp_path, env=env)  # fmt: skip
        assert proc.returncode == EXIT_USAGE, (name, proc.stderr)
        line = assert_one_clear_line(proc.stderr)
        assert line.startswith("rlm: error: the 'docker' environment cannot start: no Docker "
                               "daemon is reachable (Cannot connect to the Docker daemon at "
                               "unix://"), (name, line)  # fmt: skip
        assert line.endswith("Start Docker, or pass --env sandbox (isolated, needs bubblewrap) "
                             "or --env local (not isolated)"), (name, line)  # fmt: skip
        assert proc.stdout == ""


def test_chat_turn_with_docker_and_no_daemon_names_the_fix(tmp_path: Path) -> None:
    env = docker_setups(tmp_path)[0][1]
    proc = rlm("chat", "--env", "docker", *scripted(answer_code("'x'")), "-q", cwd=tmp_path,
               stdin="hello\n", env={**env, "TERM": "dumb"})  # fmt: skip
    assert proc.returncode == 0, proc.stderr  # the chat goes on; the turn failed
    assert "EnvironmentError_" not in proc.stderr
    assert "rlm: the 'docker' environment cannot start: no Docker daemon is reachable" in (
        proc.stderr
    )


def test_environment_messages_name_the_fix_not_python() -> None:
    from rlm.cli.failures import environment_message

    no_bwrap = environment_message(EnvironmentError_(BWRAP_INSTALL_HINT), "sandbox")
    assert no_bwrap == (
        "the 'sandbox' environment cannot start: bubblewrap (bwrap) is not installed. Install "
        "it (sudo apt-get install bubblewrap, or dnf install bubblewrap), or pass --env docker "
        "or --env local (not isolated)"
    )
    from rlm.environments.docker_repl import DOCKER_HINT

    no_cli = environment_message(EnvironmentError_(DOCKER_HINT), "docker")
    assert no_cli.startswith("the 'docker' environment cannot start: the docker command is not "
                             "installed. Install Docker")  # fmt: skip
    assert "environment_kwargs" not in no_bwrap + no_cli  # Python, not the command line
    # Setup failures are exit 2; a worker that crashed mid-run is another rlmx error.
    assert describe(EnvironmentError_(DOCKER_HINT), env="docker")[0] == EXIT_USAGE
    code, message = describe(WorkerCrashedError("the worker died while running cell 2"))
    assert (code, message) == (
        EXIT_ERROR,
        "WorkerCrashedError: the worker died while running cell 2",
    )
    code, message = describe(
        EnvironmentError_("SandboxREPL: could not start\n  the worker"), env="x"
    )
    assert code == EXIT_USAGE and "\n" not in message and "EnvironmentError" not in message


@pytest.mark.parametrize("secret", ["sk-abcdef0123456789abcdef", "hunter2-pw"])
def test_environment_message_redacts(secret: str) -> None:
    from rlm.cli.failures import environment_message

    exc = EnvironmentError_(f"could not start: docker -H tcp://user:{secret}@host:2376 failed")
    assert secret not in environment_message(exc, "docker")
