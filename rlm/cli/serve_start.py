"""What ``rlm serve`` does before it serves: bind the port, check the model, set up logs.

- ``bind_listener`` binds and listens on the port itself, before anything is printed:
  a port in use is one line ("port 8000 is in use; pass --port ...") and exit 2, never
  the token banner followed by uvicorn's error. uvicorn then serves on that socket
  (a client that connects before it starts waits in the backlog).
- ``check_model`` builds the root model's client once (``preload_client``): a missing
  extra or API key is exit 2 at start-up, and the embedded GGUF model is loaded now,
  with a line saying so, instead of silently by the first request.
- ``log_to`` prints the server's log lines on stderr as ``rlm: ...``: one access line
  per request (``rlm.server.access_log``) and a line when the model provider fails.
"""

from __future__ import annotations

import errno
import logging
import socket
from typing import IO

from rlm.base.errors import RLMError
from rlm.cli.config import CLIUsageError
from rlm.cli.factory import ModelSetup, preload_client
from rlm.cli.failures import describe

SERVER_LOGGERS = ("rlm.server",)  # rlm.server.access is a child
BACKLOG = 2048  # uvicorn's default


def bind_listener(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` (as uvicorn binds it); raises
    ``CLIUsageError`` naming the fix when it cannot be bound."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family=family, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise CLIUsageError(f"port {port} is in use; pass --port to choose another "
                                "(--port 0 picks a free one)") from None  # fmt: skip
        if exc.errno in (errno.EACCES, errno.EPERM):
            raise CLIUsageError(f"port {port}: permission denied (ports below 1024 need "
                                "privileges); pass --port") from None  # fmt: skip
        if isinstance(exc, socket.gaierror) or exc.errno == errno.EADDRNOTAVAIL:
            raise CLIUsageError(f"--host {host}: not an address of this machine "
                                f"({exc.strerror or exc})") from None  # fmt: skip
        raise CLIUsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.listen(BACKLOG)  # connections made before uvicorn starts wait, not fail
    sock.set_inheritable(True)
    return sock


def check_model(setup: ModelSetup, err: IO[str]) -> int | None:
    """Build the model's client once; ``None`` when it works, else the exit code
    after printing the one-line reason."""
    loading = setup.backend == "llama_cpp"
    if loading:
        print(f"rlm: loading the model ({setup.label}) now, not on the first request…",
              file=err, flush=True)  # fmt: skip
    try:
        seconds = preload_client(setup)
    except RLMError as exc:
        code, message = describe(exc)
        print(f"rlm: error: {message}", file=err, flush=True)
        return code
    if loading:
        print(f"rlm: model loaded in {seconds:.1f}s", file=err, flush=True)
    return None


class _StreamHandler(logging.StreamHandler[IO[str]]):
    """A handler ``log_to`` installed (a second call replaces it, never doubles it)."""


def log_to(err: IO[str]) -> None:
    """Print the ``rlm.server`` loggers' INFO and above on ``err`` as ``rlm: ...``."""
    handler = _StreamHandler(err)
    handler.setFormatter(logging.Formatter("rlm: %(message)s"))
    for name in SERVER_LOGGERS:
        logger = logging.getLogger(name)
        for old in [h for h in logger.handlers if isinstance(h, _StreamHandler)]:
            logger.removeHandler(old)
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
