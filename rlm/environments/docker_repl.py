"""DockerREPL: the worker in a throwaway container, talking over ``docker run -i``.

A composition: ``WorkerEnv`` (``rlm.environments.host``) driving a worker that
``DockerTransport`` (``rlm.environments.transports.docker``) starts in a container with
no network; ``llm_query`` and friends travel over the same stdin/stdout as everything
else, so the container never sees a credential. Restarts start a new container (files
written in the old one are lost).
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from typing import Any

from rlm.base.errors import EnvironmentError_
from rlm.environments.base_env import IsolatedEnv
from rlm.environments.host.worker_env import WorkerEnv
from rlm.environments.transports.docker import DEFAULT_IMAGE, DockerTransport, limit_args

DOCKER_HINT = (
    "The 'docker' environment needs the docker CLI and a running Docker engine: "
    "install Docker (https://docs.docker.com/engine/install/) or pass "
    "environment_kwargs={'docker_command': '/path/to/docker'}."
)


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
        limits = limit_args(memory, pids_limit, cpus)
        transport = DockerTransport(image, docker, python, [*limits, *run_args])
        super().__init__(transport, **kwargs)
