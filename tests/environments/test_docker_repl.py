"""DockerREPL specifics. The conformance and recovery suites run on it too (kind
"docker"): through the real engine where one runs, else through ``fake_docker.py``,
which execs the worker command locally so DockerREPL's own code still runs."""

from __future__ import annotations

from pathlib import Path

import pytest
from worker_env_support import FAST, env_of, fake_docker, needs_docker_engine

from rlm.base.errors import EnvironmentError_
from rlm.environments import environment_supports_persistence
from rlm.environments.docker_repl import DockerREPL
from rlm.environments.transports.docker import DockerTransport
from rlm.environments.transports.zipapp import BOOTSTRAP


def test_command_line() -> None:
    transport = DockerTransport("img:1", "/bin/docker", "python3", ["--memory", "1g"])
    try:
        argv = transport.command(["--output-limit", "10"])
        name = transport.name
    finally:
        transport.close()
    assert name is not None and name.startswith("rlm-")
    assert argv == [
        "/bin/docker", "run", "-i", "--rm", "--network", "none", "--name", name,
        "--memory", "1g", "img:1", "python3", "-I", "-c", BOOTSTRAP, "--output-limit", "10",
    ]  # fmt: skip
    assert transport.bootstrap and not transport.files_survive_restart


def _calls() -> list[str]:
    log = Path(fake_docker()).with_name("calls.log")
    return log.read_text().splitlines() if log.exists() else []


def test_limits_restart_and_kill_go_through_the_docker_cli() -> None:
    before = len(_calls())
    env = DockerREPL(
        image="my/image",
        memory="512m",
        pids_limit=64,
        cpus=1.5,
        docker_command=fake_docker(),
        **FAST,
    )
    try:
        env.execute_code("x = 1")
        result = env.execute_code("import os\nos._exit(1)")
        assert "Files written to the working directory were lost." in result.stderr
        assert env.execute_code("print(x)").stdout == "1\n"
    finally:
        env.cleanup()
    calls = _calls()[before:]
    runs = [c for c in calls if c.startswith("run ")]
    assert len(runs) == 2
    assert runs[0].startswith("run -i --rm --network none --name rlm-")
    assert runs[0].endswith(
        "--memory 512m --memory-swap 512m --pids-limit 64 --cpus 1.5 my/image python -I -c"
    )
    names = [run.split()[6] for run in runs]
    assert [c for c in calls if c.startswith("kill ")] == [f"kill {n}" for n in names]


def test_missing_docker_cli(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("shutil.which", lambda name: None)
    with pytest.raises(EnvironmentError_, match="needs the docker CLI"):
        DockerREPL()
    assert environment_supports_persistence("docker")


@needs_docker_engine
def test_real_container_is_offline_and_keeps_the_session() -> None:
    with env_of("docker") as env:
        env.execute_code("kept = 'yes'")
        result = env.execute_code(
            "import socket\nsocket.create_connection(('1.1.1.1', 80), timeout=2)"
        )
        assert "OSError" in result.stderr or "gaierror" in result.stderr
        assert env.execute_code("import os\nos._exit(1)").stderr.startswith("WorkerCrashedError")
        assert env.execute_code("print(kept)").stdout == "yes\n"
