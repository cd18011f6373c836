"""Stopping a run stops its running cell, not only the turn.

``max_timeout``, ``RLM.cancel()`` from another thread and an asyncio cancellation from
outside each interrupt a cell stuck in pure Python (``SupportsInterrupt``): in this
process (LocalREPL: the cell's thread stops running it) and in a worker (the sandbox,
under bubblewrap or as a plain subprocess: the worker stops the cell and stays). A
persistent session then answers its next turn from the same namespace, and the loop's
counter no longer moves. Every bound below (30 s) is generous: it only proves that the
stop did not wait for the cell (a worker's 60 s cell_timeout, or forever in-process).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest

from rlm import RLM, CancellationError, TimeoutExceededError
from rlm.base.ports import SupportsInterrupt
from rlm.clients.scripted import ScriptedLM
from rlm.environments import LocalREPL
from rlm.environments.worker.namespace import CELL_FILENAME_PREFIX

BOUND = 30.0  # seconds: a generous cap on waits that a working interrupt never needs


def _bwrap_problem() -> str | None:
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return "bubblewrap (bwrap) is not installed"
    probe = [bwrap, "--unshare-all", "--unshare-user", "--ro-bind", "/", "/", "true"]
    done = subprocess.run(probe, capture_output=True, text=True, timeout=30)
    return None if done.returncode == 0 else f"bwrap cannot sandbox here: {done.stderr.strip()}"


BWRAP_PROBLEM = _bwrap_problem()
KINDS = [
    pytest.param("local", id="local"),
    pytest.param(
        "sandbox",
        id="sandbox",
        marks=pytest.mark.skipif(BWRAP_PROBLEM is not None, reason=str(BWRAP_PROBLEM)),
    ),
    pytest.param("process", id="sandbox-process"),
]
# Worker limits: a cell timeout far beyond any bound, so only an interrupt ends the loop.
WORKER = {"cell_timeout": 60, "interrupt_grace": 5.0, "start_timeout": 60.0, "memory_mb": 1024}


def wait_until(condition: Callable[[], bool], bound: float = BOUND) -> bool:
    done = threading.Event()
    for _ in range(int(bound / 0.02)):
        if condition():
            return True
        done.wait(0.02)
    return condition()


def repl(code: str) -> str:
    return f"Working.\n```repl\n{code}\n```"


@dataclass
class Probe:
    """What the test sees of the looping cell: when it started and on which thread (in
    this process), and the worker's pid (in a worker)."""

    kind: str
    started: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    thread: int | None = None
    pid: int | None = None

    def mark(self) -> None:  # a custom tool: called by the local cell, on its thread
        self.thread = threading.get_ident()
        self.started.set()

    def loop(self) -> str:
        """A cell only an interrupt ends. It tells the test it runs with a sub-call
        (``started``); locally, ``release`` is a safety net the test sets when it is
        over, so a failing test leaves no thread spinning."""
        if self.kind == "local":
            return "n = 0\nmark()\nllm_query('loop-started')\nwhile not released():\n    n += 1"
        return "n = 0\nllm_query('loop-started')\nwhile True:\n    n += 1"

    def cell_running_in_process(self) -> bool:
        """Whether the cell's thread still has a frame of a cell on its stack."""
        frame = sys._current_frames().get(self.thread or -1)
        while frame is not None:
            if frame.f_code.co_filename.startswith(CELL_FILENAME_PREFIX):
                return True
            frame = frame.f_back
        return False


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (Linux ``/proc``): bubblewrap's worker is a grandchild."""
    tree, queue = [], [pid]
    while queue:
        current = queue.pop()
        tree.append(current)
        try:
            with open(f"/proc/{current}/task/{current}/children") as children:
                queue += [int(child) for child in children.read().split()]
        except OSError:
            continue
    return tree


def busy(pid: int) -> bool:
    """Whether the main thread of ``pid`` is running (state R), not waiting."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "R"
    except OSError:
        return False


@contextmanager
def session(kind: str, **kwargs: Any) -> Iterator[tuple[RLM, Probe]]:
    """A persistent RLM on ``kind`` whose first turn runs the loop, and whose second
    turn reads ``n`` twice, one iteration apart, and answers ``"<first> <second>"``."""
    probe = Probe(kind)
    replies = [
        repl(probe.loop()),
        repl("first = n"),
        repl("answer['content'] = f'{first} {n}'\nanswer['ready'] = True"),
    ]
    holder: list[RLM] = []

    def respond(prompt: Any) -> str:
        if prompt == "loop-started":  # the looping cell's sub-call
            if kind != "local":
                env = holder[0]._session.env if holder[0]._session is not None else None
                probe.pid = env.transport.pid if env is not None else None  # type: ignore[attr-defined]
            probe.started.set()
            return "ok"
        return replies.pop(0) if len(replies) > 1 else replies[0]

    root = ScriptedLM("root", responder=respond)
    if kind == "local":
        env_kwargs: dict[str, Any] = {}
        tools: dict[str, Any] | None = {"mark": probe.mark, "released": probe.release.is_set}
    else:
        env_kwargs = dict(WORKER, isolation="process") if kind == "process" else dict(WORKER)
        tools = None
    safety = threading.Timer(BOUND * 4, probe.release.set)
    safety.start()
    try:
        with (
            pytest.MonkeyPatch.context() as patch,
            warnings.catch_warnings(),
            RLM(
                backend="scripted",
                environment="local" if kind == "local" else "sandbox",
                environment_kwargs=env_kwargs,
                custom_tools=tools,
                persistent=True,
                max_iterations=4,
                **kwargs,
            ) as r,
        ):
            warnings.simplefilter("ignore", RuntimeWarning)  # isolation='process'
            patch.setattr("rlm.core.rlm.get_client", lambda backend, kwargs: root)
            holder.append(r)
            yield r, probe
    finally:
        probe.release.set()
        safety.cancel()


def run(r: RLM, mode: str) -> Any:
    if mode == "sync":
        return r.completion("the context", root_prompt="Q?")
    return asyncio.run(r.acompletion("the context", root_prompt="Q?"))


def stopped(call: Callable[[], Any]) -> BaseException:
    """The error that stopped ``call``; it must stop well within ``BOUND`` (a cell left
    running would hold the session until its 60 s cell_timeout)."""
    started = time.perf_counter()
    try:
        call()
    except BaseException as exc:
        assert time.perf_counter() - started < BOUND
        return exc
    raise AssertionError("the run was not stopped")


def assert_cell_stopped_and_session_usable(r: RLM, probe: Probe) -> int:
    """The loop no longer runs, and the same namespace (and worker) answer next;
    returns where the loop's counter stopped."""
    assert probe.started.is_set() and not probe.release.is_set()
    env = r._session.env if r._session is not None else None
    assert isinstance(env, SupportsInterrupt)
    if probe.kind != "local":  # the worker is idle again, long before its cell_timeout
        assert probe.pid is not None
        assert wait_until(lambda: not any(busy(p) for p in process_tree(probe.pid or 0)))
    if probe.kind == "local":
        assert isinstance(env, LocalREPL)
        assert wait_until(lambda: not probe.cell_running_in_process())
        assert not env.interrupt_cell()  # no cell is running any more
    result = r.completion("again", root_prompt="Q?")  # a working interrupt never waits
    first, second = (int(v) for v in result.response.split())
    assert first == second  # n was kept, and nothing increments it any more
    if probe.kind != "local":
        transport: Any = getattr(env, "transport", None)
        assert transport is not None and probe.pid is not None
        assert transport.pid == probe.pid  # the same worker: interrupted, not replaced
        assert transport.poll() is None
        assert os.path.exists(f"/proc/{probe.pid}")
    return first


# -- max_timeout -------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("mode", ["sync", "async"])
def test_max_timeout_interrupts_a_cell_stuck_in_python(kind: str, mode: str) -> None:
    with session(kind, max_timeout=3) as (r, probe):
        error = stopped(lambda: run(r, mode))
        assert isinstance(error, TimeoutExceededError), error
        assert "during iteration 1" in str(error)
        assert assert_cell_stopped_and_session_usable(r, probe) > 0  # it looped till then


# -- RLM.cancel() from another thread --------------------------------------------------


def cancel_once_running(r: RLM, probe: Probe) -> threading.Thread:
    def cancel() -> None:
        if probe.started.wait(BOUND):
            threading.Event().wait(0.2)  # let it loop a little (not needed to pass)
            r.cancel()

    thread = threading.Thread(target=cancel, name="test-canceller")
    thread.start()
    return thread


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("mode", ["sync", "async"])
def test_cancel_from_another_thread_interrupts_the_cell(kind: str, mode: str) -> None:
    with session(kind) as (r, probe):  # no max_timeout: nothing else would stop it
        canceller = cancel_once_running(r, probe)
        error = stopped(lambda: run(r, mode))
        canceller.join(BOUND)
        assert isinstance(error, CancellationError), error
        assert_cell_stopped_and_session_usable(r, probe)


# -- asyncio cancellation from outside ---------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_outside_asyncio_cancellation_interrupts_the_cell(kind: str) -> None:
    with session(kind) as (r, probe):

        async def main() -> None:
            task = asyncio.ensure_future(r.acompletion("the context", root_prompt="Q?"))
            assert await asyncio.to_thread(probe.started.wait, BOUND)
            await asyncio.sleep(0.2)  # let it loop a little (not needed to pass)
            task.cancel()
            await task

        error = stopped(lambda: asyncio.run(main()))
        assert isinstance(error, asyncio.CancelledError), error
        assert_cell_stopped_and_session_usable(r, probe)


def test_an_environment_without_interrupts_is_still_abandoned_after_the_grace() -> None:
    """The fallback: a cell its environment cannot stop is left behind, the run ends."""

    class Uninterruptible(LocalREPL):
        interrupt_cell = None  # type: ignore[assignment]  # not SupportsInterrupt

    assert not isinstance(Uninterruptible(), SupportsInterrupt)
    release, running = threading.Event(), threading.Event()
    safety = threading.Timer(BOUND * 2, release.set)
    safety.start()
    root = ScriptedLM("root", responses=[repl("running()\nwhile not released():\n    pass")])
    tools = {"released": release.is_set, "running": running.set}
    try:
        with (
            pytest.MonkeyPatch.context() as patch,
            RLM(backend="scripted", max_timeout=1, custom_tools=tools) as r,
        ):
            patch.setattr("rlm.core.rlm.get_client", lambda backend, kwargs: root)
            patch.setattr("rlm.environments.LocalREPL", Uninterruptible)
            patch.setattr("rlm.environments.local_repl.LocalREPL", Uninterruptible)
            error = stopped(lambda: run(r, "async"))
            assert isinstance(error, TimeoutExceededError), error
            assert running.is_set() and not release.is_set()  # left running, as before
    finally:
        release.set()
        safety.cancel()
