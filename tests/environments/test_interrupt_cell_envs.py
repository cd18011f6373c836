"""``SupportsInterrupt``: each environment stops the cell it is running when asked.

In this process (LocalREPL, IPythonREPL in_process) the cell's thread gets an exception
at its next Python instruction; in a worker (the sandbox under bubblewrap, a plain
subprocess, a Jupyter kernel) the cell is interrupted and the worker stays, or is
replaced if the cell will not stop. Waits are bounded (``BOUND``); nothing asserts a
duration.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from worker_env_support import env_of, needs_bwrap

from rlm.base.ports import SupportsInterrupt
from rlm.base.types import REPLResult
from rlm.clients.scripted import ScriptedLM
from rlm.core.budget import BudgetNode, Limits
from rlm.core.lm_handler import LMHandler
from rlm.environments import LocalREPL

BOUND = 30.0
STOPPED = "the run was stopped"
LIMITS = {"cell_timeout": 60, "interrupt_grace": 5.0}  # only an interrupt ends a loop

IN_PROCESS = ["local", "ipython-inprocess"]
WORKERS = [
    pytest.param("sandbox", marks=needs_bwrap),
    "process",
]
ALL = [*IN_PROCESS, *WORKERS, "ipython"]


def wait_until(condition: Callable[[], bool], bound: float = BOUND) -> bool:
    pause = threading.Event()
    for _ in range(int(bound / 0.02)):
        if condition():
            return True
        pause.wait(0.02)
    return condition()


class Signals:
    """An LM route whose sub-call ``llm_query('started')`` tells the test a cell runs."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.handler = LMHandler(ScriptedLM(model_name="scripted", responder=self._reply))
        self.route = self.handler.route(1, sink=BudgetNode(Limits()))

    def _reply(self, prompt: Any) -> str:
        if prompt == "started":
            self.started.set()
        return "ok"


@contextmanager
def environment(kind: str, **kwargs: Any) -> Iterator[tuple[Any, Signals]]:
    signals = Signals()
    options: dict[str, Any] = {"lm_route": signals.route, **kwargs}
    if kind != "local":
        options = {**LIMITS, **options}
    if kind == "ipython-inprocess":
        kind, options = "ipython", {**options, "kernel_mode": "in_process"}
    elif kind == "ipython":
        pytest.importorskip("ipykernel")
    try:
        with env_of(kind, **options) as env:
            yield env, signals
    finally:
        signals.handler.close()


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


def worker_pid(env: Any) -> int | None:
    transport = getattr(env, "transport", None)
    return getattr(transport, "pid", None)


LOOP = "n = 0\nllm_query('started')\nwhile True:\n    n += 1"


@pytest.mark.parametrize("kind", ALL)
def test_interrupt_stops_a_cell_in_pure_python_and_keeps_the_namespace(kind: str) -> None:
    with environment(kind) as (env, signals):
        assert isinstance(env, SupportsInterrupt)
        assert env.interrupt_cell() is False  # no cell is running
        env.execute_code("kept = 'yes'")
        pid = worker_pid(env)
        cell = Running(env, LOOP)
        assert signals.started.wait(BOUND)
        threading.Event().wait(0.2)  # let it loop a little (not needed to pass)
        assert env.interrupt_cell() is True
        result = cell.join()
        assert "KeyboardInterrupt" in result.stderr and STOPPED in result.stderr
        assert "restarted" not in result.stderr
        first = env.execute_code("print(n)").stdout
        assert env.execute_code("print(n)").stdout == first  # the loop no longer runs
        assert env.execute_code("print(kept)").stdout == "yes\n"
        assert worker_pid(env) == pid  # a worker was interrupted, not replaced
        assert env.interrupt_cell() is False


@pytest.mark.parametrize("kind", [*WORKERS, "ipython"])
def test_interrupt_wakes_a_worker_cell_blocked_in_sleep(kind: str) -> None:
    with environment(kind) as (env, signals):
        pid = worker_pid(env)
        cell = Running(env, "import time\nllm_query('started')\ntime.sleep(1000)")
        assert signals.started.wait(BOUND)
        threading.Event().wait(0.1)  # into the sleep (not needed to pass)
        assert env.interrupt_cell()
        result = cell.join()
        assert STOPPED in result.stderr and "restarted" not in result.stderr
        assert env.execute_code("print('next')").stdout == "next\n"
        assert worker_pid(env) == pid


@pytest.mark.parametrize("kind", [*WORKERS, "ipython"])
def test_a_cell_that_ignores_the_interrupt_gets_its_worker_replaced(kind: str) -> None:
    swallow = (  # every interrupt is swallowed, even one during the sub-call
        "while True:\n    try:\n        llm_query('started')\n        while True:\n"
        "            kept += 0\n    except BaseException:\n        pass"
    )
    with environment(kind, interrupt_grace=1.0) as (env, signals):
        env.execute_code("kept = 5")
        pid = worker_pid(env)
        cell = Running(env, swallow)
        assert signals.started.wait(BOUND)
        assert env.interrupt_cell()
        result = cell.join()
        assert "did not stop within 1 s" in result.stderr
        assert "restarted" in result.stderr
        assert worker_pid(env) != pid
        assert env.execute_code("print(kept)").stdout == "5\n"  # restored from its snapshot


@pytest.mark.parametrize("kind", WORKERS)
def test_an_interrupt_sent_before_its_cell_starts_stops_it_as_it_starts(kind: str) -> None:
    """The run may be stopped while the cell is on its way to the worker."""
    with environment(kind) as (env, _):
        env.execute_code("x = 0")
        env.supervisor.client.interrupt(env._cell + 1)  # the next cell, not started yet
        result = env.execute_code("x = 1\nwhile True:\n    pass")
        assert "KeyboardInterrupt" in result.stderr
        assert env.execute_code("print(x)").stdout == "0\n"  # it never ran
        assert env.execute_code("print('fine')").stdout == "fine\n"  # later cells do


# -- in this process ---------------------------------------------------------------------


def test_except_exception_in_the_cell_does_not_swallow_the_interrupt() -> None:
    code = "llm_query('started')\ntry:\n    while True:\n        pass\nexcept Exception:\n    print('swallowed')"
    with environment("local") as (env, signals):
        cell = Running(env, code)
        assert signals.started.wait(BOUND)
        assert env.interrupt_cell()
        result = cell.join()
        assert "swallowed" not in result.stdout and STOPPED in result.stderr


def test_an_idle_interrupt_never_reaches_a_later_cell() -> None:
    with LocalREPL() as env:
        assert not env.interrupt_cell()
        result = env.execute_code("total = 0\nfor i in range(200_000):\n    total += i")
        assert result.stderr == ""
        assert env.execute_code("print(total)").stdout == f"{sum(range(200_000))}\n"


def test_a_sub_call_in_flight_is_not_interrupted_but_its_cell_is_after_it() -> None:
    """The interrupt waits while the engine answers the cell: it lands in the cell."""
    release, asked, finished = threading.Event(), threading.Event(), threading.Event()

    def subcall(prompt: str, model: str | None) -> Any:
        asked.set()
        while not release.wait(0.01):  # Python code: an unshielded interrupt would land here
            pass
        finished.set()
        return "answer"

    with LocalREPL(subcall_fn=subcall) as env:
        cell = Running(env, "r = rlm_query('q')\nwhile True:\n    pass")
        assert asked.wait(BOUND)
        assert env.interrupt_cell()  # held: the sub-call is the engine's
        release.set()
        result = cell.join()
        assert finished.is_set()  # the sub-call ran to its end
        assert STOPPED in result.stderr  # and the cell stopped after it
        assert "Error" not in result.stderr
        assert env.execute_code("print('fine')").stdout == "fine\n"


def test_a_child_repl_on_the_same_thread_and_its_parent_both_stop() -> None:
    """As a cancelled tree does it: an rlm_query child's cell runs inside the parent's
    sub-call, on the parent's thread; each REPL is asked to stop its own cell."""
    child = LocalREPL()
    inner: list[REPLResult] = []
    running = threading.Event()

    def subcall(prompt: str, model: str | None) -> Any:
        running.set()
        inner.append(child.execute_code("m = 0\nwhile True:\n    m += 1"))
        return "child done"

    with child, LocalREPL(subcall_fn=subcall) as parent:
        cell = Running(parent, "r = rlm_query('q')\nwhile True:\n    pass")
        assert running.wait(BOUND)
        assert wait_until(lambda: child._stops.running)
        assert parent.interrupt_cell() and child.interrupt_cell()
        result = cell.join()
        assert STOPPED in inner[0].stderr  # the child's cell ended on its own interrupt
        assert STOPPED in result.stderr  # and then the parent's, once the child returned
        m = child.execute_code("print(m)").stdout
        assert child.execute_code("print(m)").stdout == m


def test_a_cell_that_reenters_its_own_repl_is_stopped_inside_and_out() -> None:
    env = LocalREPL()
    inner: list[REPLResult] = []
    env.globals["nested"] = lambda: inner.append(env.execute_code("while True:\n    pass"))
    with env:
        cell = Running(env, "nested()\nafter = True\nwhile True:\n    pass")
        assert wait_until(lambda: len(env._stops._regions) == 2)
        assert env.interrupt_cell()  # once: the inner cell, then the outer one
        result = cell.join()
        assert STOPPED in result.stderr
        # The outer interrupt may land before the inner execute_code returns its result.
        assert all(STOPPED in r.stderr for r in inner)
        assert not env._stops.running
        assert env.execute_code("print('fine')").stdout == "fine\n"
