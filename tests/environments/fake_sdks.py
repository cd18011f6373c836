"""Fakes of the provider SDKs (modal, e2b_code_interpreter, daytona, prime_sandboxes).

Each fake has the shape of the SDK calls rlmx makes and runs every "sandbox" command
as a LOCAL subprocess (in a private temp dir, with a scrubbed environment). The fakes
stand in for the transport only: rlmx's adapters, the in-sandbox launcher and the
worker all run for real. ``installed(name)`` puts one fake in ``sys.modules`` while an
environment is built (the adapters keep what they imported).
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import itertools
import os
import queue
import shutil
import signal
import subprocess
import tempfile
import threading
import types
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

from rlm.environments.transports.process import SAFE_ENV

_ids = itertools.count(1)


class LocalProcess:
    """A "sandbox" process: a local child in its own session."""

    def __init__(self, argv: list[str] | str, cwd: str) -> None:
        self.proc = subprocess.Popen(
            argv,
            shell=isinstance(argv, str),  # SDKs that take a command line run it in a shell
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=cwd,
            env=dict(SAFE_ENV, HOME=cwd, TMPDIR=cwd),
            start_new_session=True,
            bufsize=0,
        )
        self.pid = self.proc.pid

    def write(self, data: bytes | str) -> None:
        stdin = self.proc.stdin
        assert stdin is not None
        stdin.write(data.encode() if isinstance(data, str) else data)

    def close_stdin(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()

    def chunks(self, which: str) -> Iterator[bytes]:
        fd = getattr(self.proc, which).fileno()
        while chunk := os.read(fd, 65536):
            yield chunk

    def kill(self) -> None:
        with contextlib.suppress(OSError):
            os.killpg(self.pid, signal.SIGKILL)
        self.proc.wait()

    def merged(self) -> Iterator[tuple[str, bytes]]:
        """``(stream, chunk)`` from stdout and stderr as they arrive."""
        events: queue.Queue[tuple[str, bytes] | None] = queue.Queue()

        def pump(which: str) -> None:
            for chunk in self.chunks(which):
                events.put((which, chunk))
            events.put(None)

        for which in ("stdout", "stderr"):
            threading.Thread(target=pump, args=(which,), daemon=True).start()
        open_streams = 2
        while open_streams:
            event = events.get()
            if event is None:
                open_streams -= 1
            else:
                yield event
        self.proc.wait()


class FakeSandboxBase:
    """A private directory and the processes started in it."""

    def __init__(self, **options: Any) -> None:
        self.options = options
        self.dir = tempfile.mkdtemp(prefix="rlmx-fake-sandbox-")
        self.processes: list[LocalProcess] = []
        self.terminated = False

    def spawn(self, argv: list[str] | str) -> LocalProcess:
        assert not self.terminated, "the sandbox was terminated"
        process = LocalProcess(argv, self.dir)
        self.processes.append(process)
        return process

    def shut_down(self) -> None:
        self.terminated = True
        for process in self.processes:
            process.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


# -- modal -----------------------------------------------------------------------------


class _ModalStdin:
    """Like modal's StreamWriter: nothing is sent before ``drain``."""

    def __init__(self, process: LocalProcess) -> None:
        self._process = process
        self._buffer = bytearray()

    def write(self, data: bytes) -> None:
        self._buffer += data

    def drain(self) -> None:
        data, self._buffer = bytes(self._buffer), bytearray()
        self._process.write(data)

    def write_eof(self) -> None:
        self._process.close_stdin()


class _ModalProcess:
    def __init__(self, process: LocalProcess) -> None:
        self.stdin = _ModalStdin(process)
        self.stdout = process.chunks("stdout")
        self.stderr = process.chunks("stderr")
        self._proc = process.proc

    def poll(self) -> int | None:
        return self._proc.poll()

    def wait(self) -> int:
        return self._proc.wait()


class _ModalSandbox(FakeSandboxBase):
    created: ClassVar[list[_ModalSandbox]] = []

    @classmethod
    def create(cls, **options: Any) -> _ModalSandbox:
        sandbox = cls(**options)
        cls.created.append(sandbox)
        return sandbox

    def exec(self, *args: str, text: bool = True, **_: Any) -> _ModalProcess:
        assert not text, "rlmx needs byte streams"
        return _ModalProcess(self.spawn(list(args)))

    def terminate(self) -> None:
        self.shut_down()


def _fake_modal() -> types.ModuleType:
    module = types.ModuleType("modal")
    module.App = types.SimpleNamespace(  # type: ignore[attr-defined]
        lookup=lambda name, create_if_missing=False: types.SimpleNamespace(name=name)
    )
    module.Image = types.SimpleNamespace(  # type: ignore[attr-defined]
        debian_slim=lambda python_version=None: f"debian_slim:{python_version}"
    )
    module.Sandbox = _ModalSandbox  # type: ignore[attr-defined]
    return module


# -- e2b -------------------------------------------------------------------------------


class CommandExitException(Exception):
    def __init__(self, exit_code: int) -> None:
        super().__init__(f"exit code {exit_code}")
        self.exit_code = exit_code


class _E2BHandle:
    """Like e2b's CommandHandle: iterating yields (stdout, stderr, pty) as text."""

    def __init__(self, process: LocalProcess) -> None:
        self._process = process
        self.pid = process.pid

    def __iter__(self) -> Iterator[tuple[str | None, str | None, None]]:
        decoders = {
            s: codecs.getincrementaldecoder("utf-8")("replace") for s in ("stdout", "stderr")
        }
        for which, chunk in self._process.merged():
            text = decoders[which].decode(chunk)
            if text:
                yield (text, None, None) if which == "stdout" else (None, text, None)

    def wait(self) -> types.SimpleNamespace:
        code = self._process.proc.wait()
        if code != 0:
            raise CommandExitException(code)
        return types.SimpleNamespace(exit_code=0)

    def kill(self) -> bool:
        self._process.kill()
        return True


class _E2BCommands:
    def __init__(self, sandbox: _E2BSandbox) -> None:
        self._sandbox = sandbox
        self._by_pid: dict[int, LocalProcess] = {}

    def run(self, cmd: str, background: bool = False, stdin: bool = False, **_: Any) -> Any:
        assert background and stdin
        process = self._sandbox.spawn(cmd)
        self._by_pid[process.pid] = process
        return _E2BHandle(process)

    def send_stdin(self, pid: int, data: str | bytes) -> None:
        self._by_pid[pid].write(data)

    def kill(self, pid: int) -> bool:
        self._by_pid[pid].kill()
        return True


class _E2BSandbox(FakeSandboxBase):
    created: ClassVar[list[_E2BSandbox]] = []

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.commands = _E2BCommands(self)

    @classmethod
    def create(cls, **options: Any) -> _E2BSandbox:
        sandbox = cls(**options)
        cls.created.append(sandbox)
        return sandbox

    def kill(self) -> None:
        self.shut_down()


def _fake_e2b() -> types.ModuleType:
    module = types.ModuleType("e2b_code_interpreter")
    module.Sandbox = _E2BSandbox  # type: ignore[attr-defined]
    module.CommandExitException = CommandExitException  # type: ignore[attr-defined]
    return module


# -- daytona ---------------------------------------------------------------------------


class _DaytonaProcessApi:
    def __init__(self, sandbox: _DaytonaSandbox) -> None:
        self._sandbox = sandbox
        self.sessions: dict[str, dict[str, LocalProcess]] = {}

    def create_session(self, session_id: str) -> None:
        assert session_id not in self.sessions
        self.sessions[session_id] = {}

    def execute_session_command(self, session_id: str, req: Any) -> Any:
        assert req.run_async
        command_id = f"cmd-{next(_ids)}"
        self.sessions[session_id][command_id] = self._sandbox.spawn(req.command)
        return types.SimpleNamespace(cmd_id=command_id, exit_code=None)

    def send_session_command_input(self, session_id: str, command_id: str, data: str) -> None:
        assert isinstance(data, str), "Daytona sends text"
        self.sessions[session_id][command_id].write(data)

    async def get_session_command_logs_async(
        self, session_id: str, command_id: str, on_stdout: Any, on_stderr: Any
    ) -> None:
        process = self.sessions[session_id][command_id]
        events = process.merged()
        while True:
            event = await asyncio.to_thread(next, events, None)
            if event is None:
                return
            which, chunk = event
            (on_stdout if which == "stdout" else on_stderr)(chunk.decode("utf-8", "replace"))

    def get_session_command(self, session_id: str, command_id: str) -> Any:
        code = self.sessions[session_id][command_id].proc.poll()
        return types.SimpleNamespace(exit_code=code)

    def delete_session(self, session_id: str) -> None:
        for process in self.sessions.pop(session_id, {}).values():
            process.kill()


class _DaytonaSandbox(FakeSandboxBase):
    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.process = _DaytonaProcessApi(self)

    def delete(self) -> None:
        self.shut_down()


class _Daytona:
    created: ClassVar[list[_DaytonaSandbox]] = []

    def __init__(self, config: Any) -> None:
        self.config = config

    def create(self, params: Any = None) -> _DaytonaSandbox:
        sandbox = _DaytonaSandbox(config=self.config, params=params)
        self.created.append(sandbox)
        return sandbox


def _fake_daytona() -> types.ModuleType:
    module = types.ModuleType("daytona")
    module.Daytona = _Daytona  # type: ignore[attr-defined]
    module.DaytonaConfig = lambda **kw: types.SimpleNamespace(**kw)  # type: ignore[attr-defined]
    module.Resources = lambda **kw: ("resources", kw)  # type: ignore[attr-defined]
    module.CreateSandboxFromImageParams = lambda **kw: ("image", kw)  # type: ignore[attr-defined]
    module.SessionExecuteRequest = lambda command, run_async=False: types.SimpleNamespace(  # type: ignore[attr-defined]
        command=command, run_async=run_async
    )
    return module


# -- prime -----------------------------------------------------------------------------


class _PrimeStream:
    def __init__(self, process: LocalProcess, which: str) -> None:
        self._chunks = process.chunks(which)

    def __aiter__(self) -> _PrimeStream:
        return self

    async def __anext__(self) -> bytes:
        chunk = await asyncio.to_thread(next, self._chunks, None)
        if chunk is None:
            raise StopAsyncIteration
        return chunk


class _PrimeProcess:
    """Like prime_sandboxes.AsyncSandboxProcess."""

    def __init__(self, process: LocalProcess) -> None:
        self._process = process
        self.pid = process.pid
        self.stdout = _PrimeStream(process, "stdout")
        self.stderr = _PrimeStream(process, "stderr")

    @property
    def returncode(self) -> int | None:
        return self._process.proc.poll()

    async def write_stdin(self, data: bytes) -> None:
        assert isinstance(data, bytes)
        self._process.write(data)

    async def wait(self) -> int:
        return await asyncio.to_thread(self._process.proc.wait)

    async def kill(self) -> None:
        self._process.kill()

    async def aclose(self) -> None:
        self._process.kill()


class _PrimeClient:
    sandboxes: ClassVar[dict[str, FakeSandboxBase]] = {}

    def __init__(self, api_key: str | None = None) -> None:
        self.api_key = api_key

    async def create(self, request: Any) -> Any:
        sandbox_id = f"sbx-{next(_ids)}"
        self.sandboxes[sandbox_id] = FakeSandboxBase(request=request)
        return types.SimpleNamespace(id=sandbox_id)

    async def wait_for_creation(self, sandbox_id: str) -> None:
        assert sandbox_id in self.sandboxes

    async def open_process(self, sandbox_id: str, command: str) -> _PrimeProcess:
        return _PrimeProcess(self.sandboxes[sandbox_id].spawn(command))

    async def delete(self, sandbox_id: str) -> None:
        self.sandboxes.pop(sandbox_id).shut_down()

    async def aclose(self) -> None:
        pass


def _fake_prime() -> types.ModuleType:
    module = types.ModuleType("prime_sandboxes")
    module.AsyncSandboxClient = _PrimeClient  # type: ignore[attr-defined]
    module.CreateSandboxRequest = lambda **kw: types.SimpleNamespace(**kw)  # type: ignore[attr-defined]
    return module


FAKES = {
    "modal": ("modal", _fake_modal),
    "e2b": ("e2b_code_interpreter", _fake_e2b),
    "daytona": ("daytona", _fake_daytona),
    "prime": ("prime_sandboxes", _fake_prime),
}


@contextmanager
def installed(kind: str) -> Iterator[types.ModuleType]:
    """The fake SDK of ``kind`` in ``sys.modules`` for the duration."""
    import sys

    name, make = FAKES[kind]
    saved = sys.modules.get(name)
    sys.modules[name] = module = make()
    try:
        yield module
    finally:
        if saved is None:
            sys.modules.pop(name, None)
        else:
            sys.modules[name] = saved
