"""The rlmx agent inside an IPythonREPL's Jupyter kernel (and two helpers the host shares).

``KernelTransport`` sends this file's source to a fresh kernel, with the worker zipapp's
path: the agent puts the zipapp first on ``sys.path`` and serves the same worker
``Server`` as every other environment (the namespace, snapshots, sub-call bridge),
over a Unix socket back to the host instead of stdin/stdout. Only where code runs
differs:

* cells arrive on the socket, and wait until the host sends the execute_request
  ``__rlmx__.run_next_cell()``: each cell runs on the kernel's main thread, inside a
  real execute_request, so a kernel interrupt (SIGINT) stops it;
* every other request (contexts, variables, restore) is served on a thread;
* cells may use IPython syntax (``%magic``, ``!cmd``): code that is not plain Python
  is passed through the shell's ``transform_cell`` first.

Standard library and IPython only, Python 3.9 compatible. ``ipython_syntax`` and
``plain_display`` are also what the in-process mode
(``rlm.environments.inprocess.ipython_shell``) uses, the one module of the host that
imports this file.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import socket
import sys
import threading
from collections.abc import Callable
from typing import Any

_CELL_WAIT = 30.0  # how long run_next_cell waits for its cell to arrive


def ipython_syntax(code: str, shell: Any) -> str:
    """``code`` itself if it is Python, else what IPython makes of it."""
    try:
        compile(code, "<rlmx-check>", "exec", dont_inherit=True)
        return code
    except (SyntaxError, ValueError):
        pass
    try:
        transformed = str(shell.transform_cell(code))
        compile(transformed, "<rlmx-check>", "exec", dont_inherit=True)
        return transformed
    except Exception:
        return code  # report the original SyntaxError


def plain_display(shell: Any) -> Callable[..., None]:
    """``display()`` for cells whose output is captured as text (no front-end listens
    for rich output): each object's ``text/plain`` form, printed."""

    def display(*objs: Any, **kwargs: Any) -> None:
        for obj in objs:
            if kwargs.get("raw"):
                data = obj if isinstance(obj, dict) else {}
            else:
                data = shell.display_formatter.format(obj, include=("text/plain",))[0]
            text = data.get("text/plain")
            print(text if text is not None else repr(obj))

    return display


class KernelAgent:
    """Feeds the worker ``Server``'s requests to the right thread."""

    def __init__(self, server: Any, server_module: Any) -> None:
        self.server = server
        self.server_module = server_module
        self.cells: queue.Queue[Any] = queue.Queue()
        threading.Thread(target=server.read_loop, name="rlmx-reader", daemon=True).start()
        threading.Thread(target=self._dispatch, name="rlmx-dispatch", daemon=True).start()

    def _dispatch(self) -> None:
        while True:
            message = self.server.requests.get()
            if message is None:  # the host went away
                self.cells.put(None)
                return
            if message.get("op") == "exec":
                self.cells.put(message)
                continue
            try:
                self.server.handle(message)
            except Exception:
                self.cells.put(None)
                return

    def run_next_cell(self) -> None:
        """Run the next cell sent on the socket (called by the host's execute_request)."""
        try:
            message = self.cells.get(timeout=_CELL_WAIT)
        except queue.Empty:
            return
        if message is None:
            return
        # Interrupts end only a running cell (ipykernel restores its own handler after).
        signal.signal(signal.SIGINT, self.server_module._on_sigint)
        with contextlib.suppress(OSError, EOFError, KeyboardInterrupt):
            self.server.handle(message)
        self.server.bridge.resume()  # the next request is read at once


def start(zipapp: str, address: str, token: str, argv: list[str]) -> KernelAgent:
    """Connect to the host and serve it; returns the agent (bound to ``__rlmx__``)."""
    sys.path.insert(0, zipapp)
    from IPython import get_ipython

    from rlm.environments.worker import lifeline
    from rlm.environments.worker import server as server_module
    from rlm.environments.worker.boot import parse_args
    from rlm.environments.worker.protocol import Channel

    shell = get_ipython()
    args = parse_args(argv)

    class KernelServer(server_module.Server):
        def op_exec(self, message: dict[str, Any]) -> None:
            message["code"] = ipython_syntax(str(message.get("code", "")), shell)
            super().op_exec(message)

        def op_shutdown(self, message: dict[str, Any]) -> None:
            # The kernel is discarded: exit now rather than make the host wait to kill it.
            self.reply(message)
            os._exit(0)

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(address)
    sock.sendall(token.encode("ascii"))
    rfile: Any = sock.makefile("rb", buffering=1 << 16)
    wfile: Any = sock.makefile("wb", buffering=0)
    channel = Channel(rfile, wfile)
    settings = {
        "output_limit": args.output_limit,
        "max_value_bytes": args.max_value_bytes,
        "compaction": args.compaction,
        "snapshots": not args.no_snapshots,
    }
    server = KernelServer(channel, settings)
    server.exit_with_host = True  # the socket closing ends the kernel and its group
    parent = os.getppid()
    lifeline.die_with_parent()  # the host started the kernel from its spawner thread
    lifeline.guard(sock.fileno())  # watches the host by pidfd; never holds the socket
    lifeline.watch_parent(parent)
    server_module._current = server
    # IPython syntax compiles to get_ipython() calls; display() prints (nobody reads
    # the kernel's iopub channel, where a notebook's display() would publish).
    server.repl.builtins.update(get_ipython=get_ipython, display=plain_display(shell))
    agent = KernelAgent(server, server_module)
    channel.send(
        {
            "op": "ready",
            "protocol": server_module.PROTOCOL_VERSION,
            "pid": os.getpid(),
            "python": sys.version.split()[0],
            "pickler": server.snapshots.extra_name or "pickle",
        }
    )
    return agent
