"""Worker transports only: snapshots, timeouts and crashes that keep the session."""

from __future__ import annotations

import os
import signal
import time

import pytest
from worker_env_support import WORKER_TRANSPORTS, env_of, make_env, scripted_route

from rlm.clients.scripted import ScriptedLM
from rlm.core.lm_handler import LMHandler
from rlm.environments import SupportsSnapshot

pytestmark = pytest.mark.parametrize("kind", WORKER_TRANSPORTS)

STATE = """
import json
import threading
count = 41
items = [1, 2]
table = {'a': 1}
square = lambda v: v * v
lock = threading.Lock()

def bump(n):
    return n + count

class Point:
    def __init__(self, x):
        self.x = x

origin = Point(3)
alias = bump
"""

CHECK = "print(bump(1), items, table, square(4), origin.x, alias(0), json.dumps([1]))"
EXPECTED = "42 [1, 2] {'a': 1} 16 3 41 [1]\n"

# Ignores interrupts: only killing the worker ends it.
STUBBORN = """
while True:
    try:
        while True:
            pass
    except BaseException:
        pass
"""


def test_snapshot_restore_roundtrip(kind: str) -> None:
    with env_of(kind, persistent=True) as env:
        assert isinstance(env, SupportsSnapshot)
        env.add_context("ctx zero")
        env.add_history([{"role": "user", "content": "h"}])
        assert env.execute_code(STATE).stderr == ""
        blob, unsaved = env.snapshot()
        assert unsaved == ["lock"]
    with env_of(kind, persistent=True) as other:
        lost = other.restore(blob)
        assert lost == ["lock"]
        assert other.execute_code(CHECK).stdout == EXPECTED
        result = other.execute_code("print(context, history[0]['content'], 'lock' in dir())")
        assert result.stdout == "ctx zero h False\n"
        assert other.get_context_count() == 1 and other.get_history_count() == 1


def test_interrupt_keeps_the_namespace(kind: str) -> None:
    with env_of(kind) as env:
        env.execute_code("kept = 'yes'")
        started = time.perf_counter()
        result = env.execute_code("import time\npartial = 1\ntime.sleep(60)")
        assert time.perf_counter() - started < 5
        assert result.stderr.strip().splitlines()[-1] == (
            "TimeoutError: cell 2 ran longer than the 1.5 s cell_timeout and was interrupted; "
            "the namespace is intact."
        )
        assert "KeyboardInterrupt" in result.stderr
        assert env.execute_code("print(kept, partial)").stdout == "yes 1\n"


def test_timeout_that_needs_a_kill_restores_the_namespace(kind: str) -> None:
    with env_of(kind) as env:
        env.execute_code(STATE)
        env.execute_code("items.append(3)")  # an in-place change, caught by the snapshot
        result = env.execute_code("doomed = 1\n" + STUBBORN)
        last = result.stderr.strip().splitlines()[-1]
        assert last.startswith("TimeoutError: cell 3 ran longer than the 1.5 s cell_timeout")
        assert "did not stop when interrupted, so the worker was restarted" in last
        assert "restored from the snapshot taken after cell 2" in last
        assert "Could not restore: ['lock']" in last
        after = env.execute_code(CHECK.replace("items", "items[:3]") + "\nprint('doomed' in dir())")
        assert after.stdout == EXPECTED.replace("[1, 2]", "[1, 2, 3]") + "False\n"
        assert "lock" not in after.locals


@pytest.mark.parametrize(
    "crash",
    [
        pytest.param("import os\nos._exit(1)", id="os._exit"),
        pytest.param("import ctypes\nctypes.string_at(0)", id="segfault"),
    ],
)
def test_crash_is_the_cells_error_and_the_session_continues(kind: str, crash: str) -> None:
    with env_of(kind) as env:
        env.execute_code("x = 10\ndef f():\n    return x * 2")
        result = env.execute_code(crash)
        last = result.stderr.strip().splitlines()[-1]
        assert last.startswith("WorkerCrashedError: the worker died while running cell 2")
        assert "restored from the snapshot taken after cell 1" in last
        if "ctypes" in crash:
            assert "SIGSEGV" in last
        assert env.execute_code("print(x, f())").stdout == "10 20\n"


def test_worker_dying_between_cells_is_noticed(kind: str) -> None:
    with env_of(kind) as env:
        env.execute_code("y = 'still here'")
        pid = env.transport.pid
        assert pid is not None
        os.killpg(pid, signal.SIGKILL)
        env.transport.wait(5)
        result = env.execute_code("print(y)")
        assert result.stdout == "still here\n"
        assert result.stderr.startswith("Note: the worker had stopped after cell 1 (")


def test_subcall_time_does_not_count_against_the_cell(kind: str) -> None:
    handler = LMHandler(ScriptedLM(model_name="slow", responder=lambda p: "done", latency=1.0))
    try:
        route = handler.route(1)
        with env_of(kind, lm_route=route, cell_timeout=0.8) as env:
            result = env.execute_code("r = llm_query('slow one')")
            assert result.stderr == ""
            assert env.lookup_variable("r") == "done"
    finally:
        handler.close()


def test_output_is_capped_head_and_tail(kind: str) -> None:
    with env_of(kind, output_limit=3000) as env:
        result = env.execute_code("print('A' * 5_000_000)\nprint('the end')")
        assert len(result.stdout) < 3200
        assert result.stdout.startswith("AAAA") and result.stdout.endswith("the end\n")
        assert "characters of output truncated by the worker" in result.stdout


def test_usage_of_an_interrupted_cell_is_still_charged(kind: str) -> None:
    with scripted_route() as (route, node), env_of(kind, lm_route=route) as env:
        result = env.execute_code("print(llm_query('a'))\nwhile True:\n    pass")
        assert result.stdout == "echo:a\n"
        assert "TimeoutError" in result.stderr
        assert [c.response for c in result.rlm_calls] == ["echo:a"]
        assert node.usage.total_calls == 1


def test_cleanup_stops_the_worker(kind: str) -> None:
    env = make_env(kind)
    pid = env.transport.pid
    env.cleanup()
    env.cleanup()
    assert env.transport.poll() is not None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    with pytest.raises(RuntimeError):
        env.execute_code("1")
