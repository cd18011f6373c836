"""IPythonREPL's rlms-compatible surface, in both kernel modes, on real kernels.

``in_process`` runs an IPython shell in this process, ``subprocess`` a Jupyter kernel.
These tests cover what the two modes must agree on (argument rules, re-entry, one
sub-call bound per REPL, cells that time out while a sub-call is in flight) and what
is specific to the in-process shell (its own user module, process state left alone,
the best-effort cell deadline).
"""

from __future__ import annotations

import builtins
import gc
import os
import pickle
import signal
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

pytest.importorskip("IPython")
pytest.importorskip("ipykernel")
pytest.importorskip("jupyter_client")

from worker_env_support import scripted_route

from rlm.base.types import RLMChatCompletion
from rlm.environments import LocalREPL, SupportsPersistence, SupportsSnapshot
from rlm.environments.ipython_repl import IPythonREPL

MODES = ["in_process", "subprocess"]
FAST = {"interrupt_grace": 1.0, "start_timeout": 30.0}


@contextmanager
def repl_of(mode: str, **kwargs: Any) -> Iterator[IPythonREPL]:
    env = IPythonREPL(kernel_mode=mode, **{**FAST, **kwargs})
    try:
        yield env
    finally:
        env.cleanup()


def completion(prompt: str, response: str) -> RLMChatCompletion:
    from rlm.base.types import UsageSummary

    return RLMChatCompletion("child", prompt, response, UsageSummary({}), 0.0)


def slow_child(seconds: float, done: threading.Event | None = None) -> Callable[..., Any]:
    def subcall(prompt: str, model: str | None = None) -> RLMChatCompletion:
        time.sleep(seconds)
        if done is not None:
            done.set()
        return completion(prompt, f"child:{prompt}")

    return subcall


def run_bounded(target: Callable[[], Any], seconds: float = 20.0) -> Any:
    """``target()`` on a thread; fails (instead of hanging the suite) on a deadlock."""
    box: list[Any] = []
    thread = threading.Thread(target=lambda: box.append(target()), daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), "deadlocked"
    return box[0]


# -- arguments ----------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("keyword", "value"),
    [
        ("startup_timeout", 0),
        ("startup_timeout", -3),
        ("startup_timeout", float("nan")),
        ("subcall_timeout", 0),
        ("subcall_timeout", -0.1),
        ("cell_timeout", "soon"),
        ("cell_timeout", float("nan")),
        ("kernel_mode", "thread"),
    ],
)
def test_invalid_arguments_are_refused_before_anything_starts(
    mode: str, keyword: str, value: Any
) -> None:
    arguments: dict[str, Any] = {"kernel_mode": mode, keyword: value}
    with pytest.raises(ValueError, match=keyword):
        IPythonREPL(**arguments)


@pytest.mark.parametrize("mode", MODES)
def test_timeout_arguments(mode: str) -> None:
    with repl_of(mode, subcall_timeout=None, startup_timeout=20) as env:
        assert env.subcall_timeout is None and env.startup_timeout == 20.0
        assert env.cell_timeout == 120.0  # rlmx's default limit
        env.cell_timeout = 0  # rlms: 0 disables the limit
        assert env.cell_timeout is None
        assert env.execute_code("import time\ntime.sleep(0.2)\nprint('slept')").stdout == (
            "slept\n"
        )
    with repl_of(mode, cell_timeout=-1, subcall_timeout=2.5) as env:
        assert env.cell_timeout is None and env.subcall_timeout == 2.5


# -- the user-visible namespace ---------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_locals_is_a_read_only_view(mode: str) -> None:
    with repl_of(mode, persistent=True) as env:
        env.add_context("ctx")
        env.execute_code("n = 7\nwords = ['a', 'b']")
        view = env.locals
        assert view["n"] == 7 and view["context_0"] == "ctx" and "llm_query" not in view
        with pytest.raises(TypeError):
            view["n"] = 8  # type: ignore[index]
        env.execute_code("n = 9")
        assert env.locals["n"] == 9
        assert view["n"] == (9 if mode == "in_process" else 7)  # live in-process only
        assert isinstance(env, SupportsPersistence) and isinstance(env, SupportsSnapshot)


def test_in_process_rebound_input_is_undone() -> None:
    with repl_of("in_process") as env:
        assert "RuntimeError" in env.execute_code("input('name?')").stderr
        env.execute_code("input = lambda *a: 'typed'")
        assert "RuntimeError" in env.execute_code("input('name?')").stderr
        assert "input" not in env.locals


@pytest.mark.parametrize("mode", MODES)
def test_display_prints_into_the_cell_output(mode: str) -> None:
    with repl_of(mode) as env:
        result = env.execute_code("display({'k': 1}, 'text')\nprint('after')")
        assert result.stdout == "{'k': 1}\n'text'\nafter\n"


def test_in_process_ipython_syntax_runs_in_the_repl_directory() -> None:
    with repl_of("in_process") as env:
        before = os.getcwd()
        result = env.execute_code(
            "here = !pwd\n!echo out; echo err 1>&2\n%time total = 1 + 2\nprint(here, total)"
        )
        assert os.getcwd() == before
        assert result.stdout.startswith("out\n")
        assert result.stderr == "err\n"
        assert "Wall time" in result.stdout
        assert result.stdout.endswith(f"[{env.temp_dir!r}] 3\n")
        refused = env.execute_code("%cd /")
        assert "RuntimeError: %cd is not available" in refused.stderr
        assert os.getcwd() == before
        with open(os.path.join(env.temp_dir, "note.txt"), "w") as handle:
            handle.write("shared")
        assert env.execute_code("print(open('note.txt').read())").stdout == "shared\n"


# -- the in-process shell and the process around it -------------------------------------


def test_in_process_instances_have_their_own_user_modules() -> None:
    main = sys.modules["__main__"]
    first, second = IPythonREPL(kernel_mode="in_process"), IPythonREPL(kernel_mode="in_process")
    try:
        names = {first._user_module.__name__, second._user_module.__name__}
        assert len(names) == 2 and "__main__" not in names
        assert all(sys.modules[name].__name__ == name for name in names)
        first.execute_code("who = 'first'\ndef tag(x):\n    return (who, x)")
        second.execute_code("who = 'second'")
        assert first.execute_code("print(who)").stdout == "first\n"
        assert second.execute_code("print(who)").stdout == "second\n"
        # The module is importable by name, so what a cell defines pickles.
        tag = first.locals["tag"]
        assert pickle.loads(pickle.dumps(tag))(1) == ("first", 1)
        assert sys.modules["__main__"] is main
    finally:
        first.cleanup()
        second.cleanup()
    assert not names & set(sys.modules)
    assert first._user_module is None and first._shell is None


def test_in_process_shell_leaves_process_state_alone() -> None:
    saved_hooks = (sys.displayhook, sys.excepthook, sys.stdin)
    had_ps1 = hasattr(sys, "ps1")
    with repl_of("in_process") as env:
        assert env.execute_code("%%bash\necho from bash").stdout == "from bash\n"
        assert (sys.displayhook, sys.excepthook, sys.stdin) == saved_hooks
        assert hasattr(sys, "ps1") == had_ps1
        assert "__IPYTHON__" not in vars(builtins)
        shell = weakref.ref(env._shell)
    del env
    gc.collect()
    assert shell() is None, "something (atexit?) still holds the shell"


@pytest.mark.parametrize("mode", MODES)
def test_init_failure_keeps_the_original_error_over_a_cleanup_error(mode: str) -> None:
    class BrokenCleanup(IPythonREPL):
        def cleanup(self) -> None:
            super().cleanup()
            raise RuntimeError("cleanup failed too")

    with pytest.raises(ValueError, match="llm_query"):
        BrokenCleanup(kernel_mode=mode, custom_tools={"llm_query": 1})
    with pytest.raises(TypeError):  # a context that cannot be copied, once running
        BrokenCleanup(kernel_mode=mode, context_payload={"bad": threading.Lock()})


def test_failed_construction_leaves_no_user_module() -> None:
    modules = set(sys.modules)
    with pytest.raises(TypeError):
        IPythonREPL(kernel_mode="in_process", context_payload={"bad": threading.Lock()})
    assert not {m for m in set(sys.modules) - modules if m.startswith("rlmx_ipython_")}


# -- in-process cell deadline --------------------------------------------------------------


def test_in_process_deadline_interrupts_sleep_and_loops_on_the_main_thread() -> None:
    assert threading.current_thread() is threading.main_thread()
    handler = signal.getsignal(signal.SIGALRM)
    with repl_of("in_process", cell_timeout=0.3) as env:
        for code in (
            "import time\ntime.sleep(10)",
            "n = 0\nwhile True:\n    n += 1",
            "while True:\n    try:\n        time.sleep(10)\n    except Exception:\n        pass",
        ):
            started = time.perf_counter()
            result = env.execute_code(code)
            assert time.perf_counter() - started < 3
            assert result.stderr.strip().endswith(
                "ran longer than the 0.3 s cell_timeout and was interrupted; "
                "the namespace is intact."
            )
            assert signal.getsignal(signal.SIGALRM) is handler
        assert env.execute_code("print(n > 0)").stdout == "True\n"


def test_in_process_deadline_off_the_main_thread() -> None:
    def run() -> tuple[str, float]:
        with repl_of("in_process", cell_timeout=0.3) as env:
            started = time.perf_counter()
            result = env.execute_code("n = 0\nwhile True:\n    n += 1")
            return result.stderr, time.perf_counter() - started

    stderr, took = run_bounded(run)
    assert "TimeoutError: cell 1 ran longer than the 0.3 s cell_timeout" in stderr
    assert took < 3


def test_in_process_deadline_leaves_host_alarms_to_the_host() -> None:
    fired: list[int] = []
    previous = signal.signal(signal.SIGALRM, lambda signum, frame: fired.append(signum))
    try:
        with repl_of("in_process", cell_timeout=5) as env:
            code = (
                "import signal, time\nsignal.setitimer(signal.ITIMER_REAL, 0.05)\ntime.sleep(0.3)"
            )
            result = env.execute_code(code)
            assert result.stderr == "" and fired == [signal.SIGALRM]
    finally:
        signal.signal(signal.SIGALRM, previous)


@pytest.mark.parametrize("mode", MODES)
def test_which_clock_counts_a_slow_sub_call(mode: str) -> None:
    # rlmx's clock (wall_clock=False) does not count the wait for the child...
    with repl_of(mode, cell_timeout=0.5, wall_clock=False, subcall_fn=slow_child(1.0)) as env:
        result = env.execute_code("print(rlm_query('slow'))")
        assert result.stdout == "child:slow\n" and result.stderr == ""
    # ...rlms's (the default for an explicit cell_timeout) does.
    with repl_of(mode, cell_timeout=0.5, subcall_fn=slow_child(1.0)) as env:
        result = env.execute_code("print(rlm_query('slow'))")
        assert "TimeoutError" in result.stderr and result.stdout == ""


# -- what a timed-out cell leaves behind ---------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_late_sub_call_of_a_timed_out_cell_is_not_the_next_cells(mode: str) -> None:
    done = threading.Event()
    with repl_of(mode, cell_timeout=0.3, subcall_fn=slow_child(2.0, done)) as env:
        # Batched: in-process too, the children run on threads the interrupt leaves be.
        first = env.execute_code(
            "r = rlm_query_batched(['late', 'later'])\nanswer.update(content=r, ready=True)"
        )
        assert "TimeoutError" in first.stderr
        assert first.rlm_calls == [] and first.final_answer is None
        assert not done.is_set()
        env.cell_timeout = 10
        second = env.execute_code("import time\ntime.sleep(3)\nprint('second')")
        assert done.is_set() and second.stdout == "second\n"
        assert second.rlm_calls == [] and second.final_answer is None
        assert env.execute_code("print('r' in dir())").stdout == "False\n"


# -- re-entry ------------------------------------------------------------------------------


def test_in_process_cell_cannot_run_a_cell_of_its_own_repl() -> None:
    with repl_of("in_process", subcall_fn=slow_child(0)) as env:
        result = env.execute_code(
            "first = rlm_query('one')\n"
            "try:\n"
            "    SHOW_VARS.__self__.execute_code('print(1)')\n"
            "except RuntimeError as exc:\n"
            "    print(exc)\n"
            "print(first)"
        )
        lines = result.stdout.splitlines()
        assert lines[0].startswith("Reentrant execute_code") and lines[1] == "child:one"
        assert [c.prompt for c in result.rlm_calls] == ["one"]
        assert env.execute_code("print('still usable')").stdout == "still usable\n"


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("call", ["execute_code", "set_variable", "add_context"])
def test_subcall_fn_calling_back_into_its_repl_is_refused(mode: str, call: str) -> None:
    holder: dict[str, IPythonREPL] = {}
    refusals: list[str] = []

    def calls_back(prompt: str, model: str | None = None) -> RLMChatCompletion:
        env = holder["env"]
        try:
            if call == "execute_code":
                env.execute_code("print('inner')")
            elif call == "set_variable":
                env.set_variable("x", 1)
            else:
                env.add_context("more")
        except RuntimeError as exc:
            refusals.append(str(exc))
            raise
        return completion(prompt, "unreachable")

    with repl_of(mode, subcall_fn=calls_back, persistent=True) as env:
        holder["env"] = env
        code = "print(rlm_query('a'))\nprint(rlm_query_batched(['b', 'c'])[1])"
        result = run_bounded(lambda: env.execute_code(code))
        assert len(refusals) == 3 and all(r.startswith("Reentrant call") for r in refusals)
        assert result.stdout.count("Error: RLM query failed - Reentrant call") == 2
        # Outside the sub-call, the same calls are fine.
        env.set_variable("y", 2)
        assert env.execute_code("print(y)").stdout == "2\n"


# -- one sub-call bound per REPL -----------------------------------------------------------

FAN_OUT = (
    "import threading\n"
    "def batch():\n"
    "    rlm_query_batched([f'p{i}' for i in range(6)])\n"
    "threads = [threading.Thread(target=batch) for _ in range(3)]\n"
    "for t in threads: t.start()\n"
    "for t in threads: t.join()\n"
    "print(len(rlm_query_batched(['q1', 'q2', 'q3'])))"
)


@pytest.mark.parametrize("mode", [*MODES, "local"])
def test_max_concurrent_subcalls_bounds_the_whole_repl(mode: str) -> None:
    lock = threading.Lock()
    seen = {"now": 0, "max": 0}

    def counted(prompt: str, model: str | None = None) -> RLMChatCompletion:
        with lock:
            seen["now"] += 1
            seen["max"] = max(seen["max"], seen["now"])
        time.sleep(0.03)
        with lock:
            seen["now"] -= 1
        return completion(prompt, "ok")

    options = {"subcall_fn": counted, "max_concurrent_subcalls": 2}
    env = LocalREPL(**options) if mode == "local" else IPythonREPL(kernel_mode=mode, **options)
    with env:
        result = env.execute_code(FAN_OUT)
    assert result.stdout == "3\n"
    assert seen["max"] == 2


# -- driven as the engine drives it --------------------------------------------------------


def test_in_process_relays_llm_query_through_the_route_and_snapshots() -> None:
    with scripted_route() as (route, node), repl_of("in_process", lm_route=route) as env:
        result = env.execute_code("print(llm_query('hi'))\nanswer['content'] = 'A'")
        assert result.stdout == "echo:hi\n"
        assert [c.response for c in result.rlm_calls] == ["echo:hi"]
        assert node.usage.total_calls == 1
        env.set_variable("result", "42")
        assert env.lookup_variable("result") == "42"
        blob, unsaved = env.snapshot()
        assert unsaved == []
    with repl_of("in_process") as other:
        assert other.restore(blob) == []
        assert other.execute_code("print(result)").stdout == "42\n"


def test_in_process_through_rlm_end_to_end() -> None:
    from unittest import mock

    import rlm.core.rlm as core_rlm
    from rlm import RLM
    from rlm.clients.scripted import ScriptedLM

    code = "answer['content'] = llm_query('q') + '|' + context\nanswer['ready'] = True"

    def responder(prompt: Any) -> str:
        return f"sub:{prompt}" if isinstance(prompt, str) else f"```repl\n{code}\n```"

    lm = ScriptedLM(model_name="root-model", responder=responder)
    options = {"kernel_mode": "in_process"}
    with mock.patch.object(core_rlm, "get_client", lambda backend, kwargs: lm):
        rlm = RLM(
            backend="openai", environment="ipython", environment_kwargs=options, persistent=True
        )
        try:
            assert rlm.completion("alpha").response == "sub:q|alpha"
            assert rlm.completion("beta").response == "sub:q|alpha"
            env = rlm._persistent_env  # type: ignore[attr-defined]
            assert isinstance(env, IPythonREPL) and env.get_context_count() == 2
        finally:
            rlm.close()
