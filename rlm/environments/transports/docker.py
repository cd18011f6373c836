"""The docker transport: the worker in a throwaway container, over ``docker run -i``.

``DockerTransport`` runs::

    docker run -i --rm --network none --name rlm-<id> [limits] <image> \\
        python -I -c <bootstrap> <worker args>

and the client sends the worker zipapp on stdin first (``bootstrap``), so the image
needs nothing but Python >= 3.9: no volume, no upload, no listening port. The channel
(``llm_query`` and friends included) is that stdin/stdout, so the container has no
network at all (``--network none``) and never sees a credential.

Restarts start a new container (files written in the old one are lost); ``kill`` also
runs ``docker kill``, because killing the ``docker`` client does not stop a container.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import uuid
from collections.abc import Sequence

from rlm.environments.transports.process import SAFE_ENV, SubprocessTransport
from rlm.environments.transports.zipapp import bootstrap_argv

DEFAULT_IMAGE = "python:3.12-slim"
# What the docker CLI needs from the host environment to reach the engine.
_DOCKER_ENV = ("DOCKER_HOST", "DOCKER_CONTEXT", "DOCKER_CONFIG", "DOCKER_CERT_PATH",
               "DOCKER_TLS_VERIFY", "XDG_RUNTIME_DIR", "HOME")  # fmt: skip


class DockerTransport(SubprocessTransport):
    """``docker run -i`` of the worker bootstrap (see the module docstring)."""

    bootstrap = True
    files_survive_restart = False
    close_by_kill = False  # the container outlives the client: ask the worker to exit

    def __init__(
        self,
        image: str = DEFAULT_IMAGE,
        docker: str = "docker",
        python: str = "python",
        run_args: Sequence[str] = (),
    ) -> None:
        super().__init__()
        self.image = image
        self.docker = docker
        self.container_python = python
        self.run_args = list(run_args)
        self.name: str | None = None

    def command(self, worker_args: Sequence[str]) -> list[str]:
        self.name = f"rlm-{uuid.uuid4().hex[:12]}"
        argv = [self.docker, "run", "-i", "--rm", "--network", "none", "--name", self.name]
        argv += [*self.run_args, self.image]
        return argv + bootstrap_argv(self.container_python) + list(worker_args)

    def environment(self) -> dict[str, str]:
        # The CLI may need to find the engine; nothing reaches the container itself.
        passed = {k: os.environ[k] for k in _DOCKER_ENV if k in os.environ}
        return {**SAFE_ENV, "TMPDIR": self.workdir, "HOME": self.workdir, **passed}

    def kill(self) -> None:
        name, self.name = self.name, None
        super().kill()
        if name is not None:
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                subprocess.run(
                    [self.docker, "kill", name],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    env=self.environment(),
                    timeout=30,
                )


def limit_args(memory: str | None, pids_limit: int | None, cpus: float | None) -> list[str]:
    """``docker run`` resource flags (None omits one)."""
    args = []
    if memory is not None:
        args += ["--memory", str(memory), "--memory-swap", str(memory)]
    if pids_limit is not None:
        args += ["--pids-limit", str(pids_limit)]
    if cpus is not None:
        args += ["--cpus", str(cpus)]
    return args
