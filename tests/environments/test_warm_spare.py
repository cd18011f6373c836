"""Warm spare workers (``rlm.environments.host.spares``): an RLM's sandbox completions
take a worker started ahead of need, never one that has run code, and the RLM's
spares die with it."""

from __future__ import annotations

import gc
import os
import signal
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from unittest import mock

from worker_env_support import needs_bwrap

import rlm.core.rlm as core_rlm
from rlm import RLM
from rlm.base.types import REPLResult
from rlm.clients.scripted import ScriptedLM
from rlm.environments import BaseEnv, get_environment
from rlm.environments.host.spares import SparePlan, WarmSpares
from rlm.environments.sandbox_repl import SandboxREPL
from rlm.environments.transports.process import SubprocessTransport

pytestmark = needs_bwrap
CODE = "import os\nanswer['content'] = 'pid ' + str(os.getpid()) + ' ' + context\nanswer['ready'] = True"


def _repl(code: str) -> str:
    return f"Working.\n```repl\n{code}\n```"


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@contextmanager
def sandbox_rlm(**environment_kwargs: Any) -> Iterator[tuple[RLM, list[BaseEnv]]]:
    """A one-shot sandbox RLM with a scripted model; the environments it builds are
    recorded in order."""
    lm = ScriptedLM(model_name="root-model", responder=lambda prompt: _repl(CODE))
    built: list[BaseEnv] = []

    def make(name: str, kwargs: dict[str, Any]) -> BaseEnv:
        env = get_environment(name, kwargs)
        built.append(env)
        return env

    with (
        mock.patch.object(core_rlm, "get_client", lambda backend, kwargs: lm),
        mock.patch.object(core_rlm, "get_environment", make),
    ):
        engine = RLM(
            backend="openai",
            backend_kwargs={"model_name": "root-model"},
            environment="sandbox",
            environment_kwargs={"memory_mb": 1024, "cpu_seconds": 60, **environment_kwargs},
        )
        try:
            yield engine, built
        finally:
            engine.close()


def _spares(engine: RLM) -> WarmSpares:
    spares = engine._environments.spares
    assert spares is not None
    return spares


def _pid(env: BaseEnv) -> int:
    assert isinstance(env, SandboxREPL)
    pid = env.transport.pid  # type: ignore[attr-defined]
    assert isinstance(pid, int)
    return pid


def test_a_ready_spare_serves_the_next_completion_and_is_refilled() -> None:
    with sandbox_rlm() as (engine, built):
        assert engine.completion("one").response.endswith(" one")
        spares = _spares(engine)
        assert spares.wait_ready()
        [ready] = spares.pids()
        assert engine.completion("two").response.endswith(" two")
        assert _pid(built[1]) == ready  # the second completion ran in the spare
        assert _gone(ready)  # and that worker died with its environment
        assert spares.wait_ready()
        [refilled] = spares.pids()
        assert refilled != ready and not _gone(refilled)


def test_a_worker_that_ran_code_is_never_handed_out_again() -> None:
    with sandbox_rlm() as (engine, built):
        for n in range(4):
            engine.completion(f"turn {n}")
            _spares(engine).wait_ready()
            assert not set(_spares(engine).pids()) & {_pid(env) for env in built}
        pids = [_pid(env) for env in built]
        assert len(set(pids)) == len(pids) == 4
        assert all(_gone(pid) for pid in pids)


def test_close_kills_the_spares_and_the_rlm_stays_usable() -> None:
    with sandbox_rlm() as (engine, _):
        engine.completion("one")
        spares = _spares(engine)
        assert spares.wait_ready()
        [pid] = spares.pids()
        engine.close()
        assert _gone(pid)
        assert spares.pids() == []
        assert engine.completion("again").response.endswith(" again")


def test_a_forgotten_rlm_takes_its_spares_with_it() -> None:
    lm = ScriptedLM(model_name="root-model", responder=lambda prompt: _repl(CODE))
    with mock.patch.object(core_rlm, "get_client", lambda backend, kwargs: lm):
        engine = RLM(backend="openai", environment="sandbox")
        engine.completion("one")
        spares = _spares(engine)
        assert spares.wait_ready()
        [pid] = spares.pids()
        del engine
        gc.collect()
        assert _gone(pid)


def test_close_kills_a_spare_that_is_still_starting() -> None:
    spares = WarmSpares()
    made: list[SubprocessTransport] = []
    started = threading.Event()

    def transport() -> SubprocessTransport:
        made.append(SubprocessTransport())
        started.set()
        return made[-1]

    plan = SparePlan(transport, [], 8 << 20, 60.0)
    spares.refill("key", plan)
    assert started.wait(30)
    spares.close()
    assert spares.pids() == [] and spares.take("key") is None
    assert made[0].poll() is not None  # never left running
    spares.refill("key", plan)  # usable again
    assert spares.wait_ready("key")
    spares.close()


def test_opting_out_keeps_no_spare() -> None:
    with sandbox_rlm(warm_spare=False) as (engine, built):
        engine.completion("one")
        engine.completion("two")
        spares = _spares(engine)
        assert not spares.wait_ready()
        assert spares.pids() == []
        assert not any(t.name == "rlm-warm-spare" for t in threading.enumerate())
        assert len({_pid(env) for env in built}) == 2


def test_a_spare_that_died_meanwhile_is_discarded() -> None:
    with sandbox_rlm() as (engine, built):
        engine.completion("one")
        spares = _spares(engine)
        assert spares.wait_ready()
        [dead] = spares.pids()
        os.killpg(dead, signal.SIGKILL)
        assert engine.completion("two").response.endswith(" two")
        assert _pid(built[1]) != dead


def test_other_placements_do_not_take_the_spare() -> None:
    spares = WarmSpares()
    try:
        first = SandboxREPL(memory_mb=1024, spares=spares)
        first.cleanup()
        assert spares.wait_ready()
        [pid] = spares.pids()
        other = SandboxREPL(memory_mb=512, spares=spares)  # different limits
        try:
            assert other.transport.pid != pid  # type: ignore[attr-defined]
            assert pid in spares.pids()
            assert isinstance(other.execute_code("print(1)"), REPLResult)
        finally:
            other.cleanup()
        same = SandboxREPL(memory_mb=1024, spares=spares)
        try:
            assert same.transport.pid == pid  # type: ignore[attr-defined]
        finally:
            same.cleanup()
    finally:
        spares.close()


def test_a_persistent_environment_takes_a_spare_but_starts_none() -> None:
    spares = WarmSpares()
    try:
        SandboxREPL(spares=spares).cleanup()
        assert spares.wait_ready()
        [pid] = spares.pids()
        env = SandboxREPL(spares=spares, persistent=True)
        try:
            assert env.transport.pid == pid  # type: ignore[attr-defined]
            assert not spares.wait_ready() and spares.pids() == []
        finally:
            env.cleanup()
    finally:
        spares.close()


def test_process_isolation_uses_spares_too() -> None:
    spares = WarmSpares()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            SandboxREPL(isolation="process", spares=spares).cleanup()
            assert spares.wait_ready()
            [pid] = spares.pids()
            env = SandboxREPL(isolation="process", spares=spares)
        try:
            assert env.transport.pid == pid  # type: ignore[attr-defined]
            assert env.execute_code("print(6 * 7)").stdout == "42\n"
        finally:
            env.cleanup()
    finally:
        spares.close()
