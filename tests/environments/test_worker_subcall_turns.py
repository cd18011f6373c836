"""Sub-calls from a worker: who reads the channel, and what still holds.

A thread of a cell that waits for its ``llm_query`` reply reads the channel itself, and
the host answers a sub-call on the thread that read it (``HostBridge``, ``WorkerClient``).
These tests check the guarantees around that: an interrupt still stops a cell that is
calling ``llm_query`` (in a loop, or blocked in one), a slow sub-call never holds up the
others, a signal handler raising inside a wait leaves the channel usable, and a frame
read interrupted midway is read whole next time. Waits are bounded; nothing asserts a
duration.
"""

from __future__ import annotations

import contextlib
import io
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from worker_env_support import env_of, needs_bwrap

from rlm.base.types import REPLResult
from rlm.clients.scripted import ScriptedLM
from rlm.core.budget import BudgetNode, Limits
from rlm.core.lm_handler import LMHandler
from rlm.environments.worker.protocol import HEADER, MESSAGE, Channel, encode_message

BOUND = 30.0
STOPPED = "the run was stopped"
WORKERS = [pytest.param("sandbox", marks=needs_bwrap), "process"]
LIMITS = {"cell_timeout": 60, "interrupt_grace": 5.0}  # only an interrupt ends a loop


class Gate:
    """An LM whose ``slow`` prompts wait for ``release``; others answer at once."""

    def __init__(self, on_prompt: Callable[[str], None] | None = None) -> None:
        self.asked = threading.Event()  # a ``slow`` prompt arrived
        self.release = threading.Event()
        self.on_prompt = on_prompt or (lambda prompt: None)
        self.handler = LMHandler(ScriptedLM(model_name="scripted", responder=self._reply))
        self.route = self.handler.route(1, sink=BudgetNode(Limits()))

    def _reply(self, prompt: Any) -> str:
        text = str(prompt)
        self.on_prompt(text)
        if text.startswith("slow"):
            self.asked.set()
            if not self.release.wait(BOUND):
                return "never released"
        return f"ok:{text}"


@contextmanager
def worker(kind: str, gate: Gate) -> Iterator[Any]:
    try:
        with env_of(kind, lm_route=gate.route, **LIMITS) as env:
            yield env
    finally:
        gate.release.set()
        gate.handler.close()


class Running:
    """``env.execute_code(code)`` on a thread of its own."""

    def __init__(self, env: Any, code: str) -> None:
        self.result: REPLResult | None = None
        self.thread = threading.Thread(target=self._run, args=(env, code), daemon=True)
        self.thread.start()

    def _run(self, env: Any, code: str) -> None:
        self.result = env.execute_code(code)

    def join(self) -> REPLResult:
        self.thread.join(BOUND)
        assert not self.thread.is_alive(), "the cell was not stopped"
        assert self.result is not None
        return self.result


def worker_pid(env: Any) -> int:
    return int(env.execute_code("import os\nprint(os.getpid())").stdout)


@pytest.mark.parametrize("kind", WORKERS)
def test_an_interrupt_stops_a_cell_looping_on_llm_query(kind: str) -> None:
    """The interrupt lands whether the cell is reading its reply or between calls, and
    the worker stays: same process, namespace intact, channel in step."""
    counted = threading.Event()

    def on_prompt(prompt: str) -> None:
        if prompt == "q50":
            counted.set()

    gate = Gate(on_prompt)
    with worker(kind, gate) as env:
        pid = worker_pid(env)
        for round_ in range(3):
            counted.clear()
            cell = Running(
                env, "n = 0\nwhile True:\n    assert llm_query(f'q{n}') == f'ok:q{n}'\n    n += 1"
            )
            assert counted.wait(BOUND)
            assert env.interrupt_cell()
            result = cell.join()
            assert STOPPED in result.stderr, (round_, result.stderr)
            assert "AssertionError" not in result.stderr
            assert int(env.execute_code("print(n)").stdout) >= 50
            assert env.execute_code("print(llm_query('after'))").stdout == "ok:after\n"
        assert worker_pid(env) == pid


@pytest.mark.parametrize("kind", WORKERS)
def test_an_interrupt_stops_a_cell_waiting_on_a_slow_llm_query(kind: str) -> None:
    """The cell's thread reads the channel while it waits: the interrupt reaches it there,
    and the late reply to the abandoned call is dropped, not taken for the next one."""
    gate = Gate()
    with worker(kind, gate) as env:
        pid = worker_pid(env)
        cell = Running(env, "before = 1\nr = llm_query('slow')\nafter = 1")
        assert gate.asked.wait(BOUND)
        assert env.interrupt_cell()
        result = cell.join()
        assert STOPPED in result.stderr
        gate.release.set()  # the abandoned call's reply now arrives
        code = "print(before, 'r' in globals(), 'after' in globals(), llm_query('next'))"
        assert env.execute_code(code).stdout == "1 False False ok:next\n"
        assert worker_pid(env) == pid


@pytest.mark.parametrize("kind", WORKERS)
def test_a_slow_llm_query_does_not_hold_up_the_cells_other_threads(kind: str) -> None:
    """One thread's sub-call is slow (answered on the host thread that read it); the
    main thread's sub-calls are still read and answered meanwhile, and the slow one is
    released only once they all were."""
    gate = Gate(lambda prompt: gate.release.set() if prompt == "fast19" else None)
    code = (
        "import threading\n"
        "out = {}\n"
        "warm = [llm_query(f'warm{i}') for i in range(20)]\n"  # the host's followers watch
        "t = threading.Thread(target=lambda: out.update(slow=llm_query('slow')))\n"
        "t.start()\n"
        "fast = [llm_query(f'fast{i}') for i in range(20)]\n"
        "t.join()\n"
        "print(fast[0], fast[-1], out['slow'])"
    )
    with worker(kind, gate) as env:
        cell = Running(env, code)
        result = cell.join()
        assert result.stdout == "ok:fast0 ok:fast19 ok:slow\n", result.stderr
        threads = "import threading\nfrom concurrent.futures import ThreadPoolExecutor\n"
        many = "with ThreadPoolExecutor(8) as p:\n    r = list(p.map(llm_query, [f'p{i}' for i in range(64)]))\n"
        check = "print(r == [f'ok:p{i}' for i in range(64)], llm_query_batched(['a', 'b']))"
        assert env.execute_code(threads + many + check).stdout == "True ['ok:a', 'ok:b']\n"


@pytest.mark.parametrize("kind", WORKERS)
def test_a_signal_handler_raising_in_a_sub_call_wait_leaves_the_channel_usable(
    kind: str,
) -> None:
    """Cell code's own SIGALRM handler raises while the cell's thread waits in a read:
    nothing read is lost, and the next sub-call gets its own reply."""
    gate = Gate(lambda prompt: gate.release.set() if prompt == "fast" else None)
    code = (
        "import signal\n"
        "class Late(Exception): pass\n"
        "def late(signum, frame): raise Late()\n"
        "signal.signal(signal.SIGALRM, late)\n"
        "signal.setitimer(signal.ITIMER_REAL, 0.2)\n"
        "try:\n"
        "    llm_query('slow')\n"
        "    caught = False\n"
        "except Late:\n"
        "    caught = True\n"
        "print(caught, llm_query('fast'), llm_query('again'))"
    )
    with worker(kind, gate) as env:
        pid = worker_pid(env)
        result = Running(env, code).join()
        assert result.stdout == "True ok:fast ok:again\n", result.stderr
        assert env.execute_code("print(llm_query('later'))").stdout == "ok:later\n"
        assert worker_pid(env) == pid


class _Interrupting(io.BytesIO):
    """Input that raises once, as a signal handler would, after giving ``first`` bytes."""

    def __init__(self, data: bytes, first: int) -> None:
        super().__init__(data)
        self.first = first
        self.raised = False

    def read1(self, size: int | None = -1) -> bytes:
        if not self.raised and self.tell() >= self.first:
            self.raised = True
            raise KeyboardInterrupt
        if not self.raised:
            size = min(
                len(self.getbuffer()) if size is None or size < 0 else size,
                self.first - self.tell(),
            )
        return super().read1(size)

    read = read1


@pytest.mark.parametrize("first", [3, HEADER.size, HEADER.size + 7])
def test_a_read_interrupted_inside_a_frame_loses_nothing(first: int) -> None:
    frames = encode_message({"re": 1, "texts": ["x" * 40]}) + encode_message({"op": "next"})
    channel = Channel(_Interrupting(frames, first), io.BytesIO())
    with pytest.raises(KeyboardInterrupt):
        channel.recv()
    assert channel.recv() == {"re": 1, "texts": ["x" * 40]}
    assert channel.recv() == {"op": "next"}
    assert frames[0:1] == MESSAGE


@pytest.mark.parametrize("kind", WORKERS)
def test_a_sub_call_from_a_signal_handler_during_a_wait_does_not_deadlock(kind: str) -> None:
    """A handler that calls ``llm_query`` while its thread waits for a reply: answered,
    or refused with an error text if that thread is reading the channel right then;
    never a thread waiting for itself. Another thread's call still gets through."""
    gate = Gate(lambda prompt: gate.release.set() if prompt == "release" else None)
    code = (
        "import signal, threading\n"
        "inner, out = [], []\n"
        "def handler(signum, frame):\n"
        "    inner.append(llm_query('inner'))\n"
        "    threading.Thread(target=lambda: out.append(llm_query('release'))).start()\n"
        "signal.signal(signal.SIGALRM, handler)\n"
        "for i in range(5):\n"
        "    llm_query(f'warm{i}')\n"
        "signal.setitimer(signal.ITIMER_REAL, 0.2)\n"
        "slow = llm_query('slow')\n"
        "while not out:\n"
        "    pass\n"
        "print(slow, out[0], inner[0])"
    )
    with worker(kind, gate) as env:
        result = Running(env, code).join()
        slow, released, inner = result.stdout.split(" ", 2)
        assert (slow, released) == ("ok:slow", "ok:release"), result.stderr
        assert inner.strip() in (
            "ok:inner",
            "Error: a sub-call cannot be made while this thread reads the reply to another",
        ), inner
        assert env.execute_code("print(llm_query('later'))").stdout == "ok:later\n"


@pytest.mark.parametrize("kind", WORKERS)
def test_a_thread_left_running_gets_its_replies_while_the_worker_is_idle(kind: str) -> None:
    """Between cells the worker's main thread reads the channel itself: a thread that a
    cell left running still gets its sub-call replies meanwhile (the main thread hands
    them over), and the next cell then runs as usual."""
    released = threading.Event()
    gate = Gate(lambda prompt: released.set() if prompt == "slow" else None)
    code = (
        "import threading\n"
        "got = []\n"
        "def later():\n"
        "    got.append(llm_query('slow'))\n"  # waits for the gate, after the cell ended
        "    got.extend(llm_query(f'bg{i}') for i in range(30))\n"
        "t = threading.Thread(target=later)\n"
        "t.start()\n"
    )
    with worker(kind, gate) as env:
        pid = worker_pid(env)
        assert env.execute_code(code).stderr == ""
        assert released.wait(BOUND)
        gate.release.set()  # answered while no cell runs
        result = env.execute_code("t.join(30)\nprint(t.is_alive(), got[0], got[-1], len(got))")
        assert result.stdout == "False ok:slow ok:bg29 31\n", result.stderr
        assert env.execute_code("print(llm_query('after'))").stdout == "ok:after\n"
        assert worker_pid(env) == pid


@pytest.mark.parametrize("kind", WORKERS)
def test_an_interrupt_for_a_finished_cell_is_harmless_and_the_next_cell_can_be_stopped(
    kind: str,
) -> None:
    """An interrupt that arrives while the worker is idle (its cell already ended) is
    read by the idle main thread and changes nothing; the reader thread is back on the
    channel for the next cell, so that one can still be interrupted."""
    gate = Gate()
    with worker(kind, gate) as env:
        pid = worker_pid(env)
        for _ in range(5):
            assert env.execute_code("x = 1").stderr == ""
            assert not env.interrupt_cell()  # nothing runs: nothing to stop
            env.supervisor.client.interrupt(None)  # sent anyway: read by the idle main thread
            assert env.execute_code("x += 1\nprint(x)").stdout == "2\n"
        cell = Running(env, "import time\nwhile True:\n    time.sleep(0.001)")
        for _ in range(int(BOUND / 0.01)):
            if env.interrupt_cell():
                break
            threading.Event().wait(0.01)
        result = cell.join()
        assert STOPPED in result.stderr
        assert env.execute_code("print(x)").stdout == "2\n"
        assert worker_pid(env) == pid


def test_the_reader_thread_gives_way_only_between_messages() -> None:
    """``HostBridge`` over real pipes: the reader thread is in the middle of a stream
    (the host paused between two chunks) when the idle main thread asks for the
    channel. It reads the stream to its end first; then the main thread reads, and
    both messages arrive whole, in order."""
    import os
    import queue

    from rlm.environments.worker.host import HostBridge
    from rlm.environments.worker.protocol import CHUNK_BYTES, StreamWriter
    from rlm.environments.worker.spin import SpinReader

    to_worker_r, to_worker_w = os.pipe()
    to_host_r, to_host_w = os.pipe()
    spin = SpinReader(io.FileIO(to_worker_r, "rb"))
    worker_side = Channel(io.BufferedReader(spin, 1 << 16), io.FileIO(to_host_w, "wb"))
    host_side = Channel(io.BufferedReader(io.FileIO(to_host_r, "rb")), io.FileIO(to_worker_w, "wb"))
    requests: queue.SimpleQueue[dict[str, Any]] = queue.SimpleQueue()

    def read() -> dict[str, Any]:
        message = worker_side.recv()
        if message.get("stream"):
            message["body"] = worker_side.read_stream()
        return message

    bridge = HostBridge(worker_side, lambda: 0, read, requests.put)
    spin.give_way = bridge.should_give_way
    reader = threading.Thread(target=bridge.reader_loop, daemon=True)
    reader.start()
    resume = threading.Event()

    def write(writer: StreamWriter) -> None:
        writer.write(b"a" * CHUNK_BYTES)  # read at once; then the reader waits mid-stream
        assert resume.wait(BOUND)
        writer.write(b"b" * CHUNK_BYTES)

    sender = threading.Thread(
        target=host_side.send_stream, args=({"op": "big"}, write), daemon=True
    )
    sender.start()
    try:
        threading.Event().wait(0.2)  # the first chunk is read by now
        main = threading.Thread(
            target=bridge.read_while_idle, args=(lambda: requests.qsize() >= 2, spin.nudge)
        )
        main.start()
        threading.Event().wait(0.2)  # the main thread has asked for the channel
        resume.set()
        sender.join(5)
        assert not sender.is_alive(), "the stream was not read to its end"
        host_side.send({"op": "after"})
        main.join(BOUND)
        assert not main.is_alive()
        assert requests.qsize() == 2, "the channel broke: a stream was cut off midway"
        first, second = requests.get_nowait(), requests.get_nowait()
        assert first["op"] == "big"
        assert first["body"] == b"a" * CHUNK_BYTES + b"b" * CHUNK_BYTES
        assert second == {"op": "after"}
        host_side.send({"op": "last"})  # the reader thread reads again afterwards
        assert requests.get(timeout=BOUND) == {"op": "last"}
    finally:
        resume.set()
        for fd in (to_worker_w, to_host_r):
            with contextlib.suppress(OSError):
                os.close(fd)
        reader.join(5)


@pytest.mark.parametrize("kind", WORKERS)
def test_a_value_streamed_as_the_worker_goes_idle_arrives_whole(kind: str) -> None:
    """The reader thread gives the channel to the idle main thread only between
    messages: a large value whose stream it is reading when a cell ends (the host sends
    it right after the reply) is read to its end, never cut off midway."""
    gate = Gate()
    with worker(kind, gate) as env:
        for i in range(6):
            text = chr(ord("a") + i) * (24 << 20)
            assert env.execute_code("y = 1").stderr == ""
            env.add_context(text, i)
            check = f"print(len(context_{i}), context_{i}[:1], context_{i}[-1:])"
            assert env.execute_code(check).stdout == f"{24 << 20} {text[0]} {text[0]}\n"
