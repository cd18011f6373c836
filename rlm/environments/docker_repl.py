"""DockerREPL: the worker in a throwaway container, talking over ``docker run -i``.

``DockerTransport`` runs::

    docker run -i --rm --network none --name rlm-<id> [limits] <image> \\
        python -I -c <bootstrap> <worker args>

and the client sends the worker zipapp on stdin first (``bootstrap``), so the image
needs nothing but Python >= 3.9: no volume, no upload, no listening port. ``llm_query``
and friends travel over the same stdin/stdout as everything else, so the container
has no network at all (``--network none``) and never sees a credential.

Restarts start a new container (files written in the old one are lost); ``kill`` also
runs ``docker kill``, because killing the ``docker`` client does not stop a container.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import uuid
from collections.abc import Sequence
from typing import Any

from rlm.base.errors import EnvironmentError_
from rlm.environments.base_env import IsolatedEnv
from rlm.environments.process_transport import SAFE_ENV, SubprocessTransport
from rlm.environments.worker.zipapp import bootstrap_argv
from rlm.environments.worker_env import WorkerEnv

DEFAULT_IMAGE = "python:3.12-slim"
DOCKER_HINT = (
    "The 'docker' environment needs the docker CLI and a running Docker engine: "
    "install Docker (https://docs.docker.com/engine/install/) or pass "
    "environment_kwargs={'docker_command': '/path/to/docker'}."
)
# What the docker CLI needs from the host environment to reach the engine.
_DOCKER_ENV = ("DOCKER_HOST", "DOCKER_CONTEXT", "DOCKER_CONFIG", "DOCKER_CERT_PATH",
               "DOCKER_TLS_VERIFY", "XDG_RUNTIME_DIR", "HOME")  # fmt: skip


class DockerTransport(SubprocessTransport):
    """``docker run -i`` of the worker bootstrap (see the module docstring)."""

    bootstrap = True
    files_survive_restart = False

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


def _limit_args(memory: str | None, pids_limit: int | None, cpus: float | None) -> list[str]:
    args = []
    if memory is not None:
        args += ["--memory", str(memory), "--memory-swap", str(memory)]
    if pids_limit is not None:
        args += ["--pids-limit", str(pids_limit)]
    if cpus is not None:
        args += ["--cpus", str(cpus)]
    return args


class DockerREPL(WorkerEnv, IsolatedEnv):
    """A persistent REPL whose code runs in a Docker container.

    Keyword arguments (``environment_kwargs``), besides WorkerEnv's (``cell_timeout``
    120 s, ``interrupt_grace`` 2 s, ``output_limit``, ``snapshot_limit_mb``...):

    * ``image``: the image to run (default ``python:3.12-slim``; any image with
      Python >= 3.9 as ``python`` works, see ``python``);
    * ``memory`` (e.g. ``"2g"``, default ``"4g"``), ``pids_limit`` (256), ``cpus``
      (None: no cap): passed as ``--memory``/``--pids-limit``/``--cpus``; None omits one;
    * ``run_args``: extra ``docker run`` arguments (e.g. ``["--read-only"]``);
    * ``python``: the interpreter inside the image (default ``python``);
    * ``docker_command``: the docker CLI (default: ``docker`` on ``PATH``).
    """

    def __init__(
        self,
        image: str = DEFAULT_IMAGE,
        memory: str | None = "4g",
        pids_limit: int | None = 256,
        cpus: float | None = None,
        run_args: Sequence[str] = (),
        python: str = "python",
        docker_command: str | None = None,
        **kwargs: Any,
    ) -> None:
        docker = docker_command or shutil.which("docker")
        if docker is None:
            raise EnvironmentError_(DOCKER_HINT)
        self.image = image
        limits = _limit_args(memory, pids_limit, cpus)
        transport = DockerTransport(image, docker, python, [*limits, *run_args])
        super().__init__(transport, **kwargs)
