"""The blocking-work pool grows with the load, never past its cap, and gives its threads
back when the load is gone (a server's thread count used to stay at its high-water
mark). Real threads; bounded waits, no timed assertions."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

import pytest

from rlm.core import runtime
from rlm.core.elastic_pool import ElasticThreadPool


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def test_grows_to_the_load_then_shrinks_to_nothing_when_idle() -> None:
    pool = ElasticThreadPool(64, idle_timeout=0.2, thread_name_prefix="t-pool")
    gate = threading.Event()
    running = []
    futures = [pool.submit(lambda i=i: (running.append(i), gate.wait(10), i)[2]) for i in range(20)]
    wait_until(lambda: len(running) == 20, "20 tasks running at once")
    assert pool.threads == 20
    gate.set()
    assert sorted(f.result(10) for f in futures) == list(range(20))
    wait_until(lambda: pool.threads == 0, "idle threads to exit")
    assert not [t for t in threading.enumerate() if t.name.startswith("t-pool")]
    assert pool.submit(lambda: "again").result(10) == "again"  # and it grows again


def test_idle_threads_are_reused_not_multiplied() -> None:
    pool = ElasticThreadPool(64, idle_timeout=5.0)
    for i in range(50):
        assert pool.submit(lambda i=i: i * 2).result(10) == i * 2
    assert pool.threads == 1


def test_never_more_threads_than_the_cap_and_queued_work_still_runs() -> None:
    pool = ElasticThreadPool(3, idle_timeout=0.2)
    lock = threading.Lock()
    active = [0]
    peak = [0]

    def work(i: int) -> int:
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        time.sleep(0.02)
        with lock:
            active[0] -= 1
        return i

    futures = [pool.submit(work, i) for i in range(30)]
    assert [f.result(10) for f in futures] == list(range(30))
    assert peak[0] == 3 and pool.threads <= 3


def test_errors_cancellation_and_shutdown() -> None:
    pool = ElasticThreadPool(1, idle_timeout=1.0)
    gate = threading.Event()
    first = pool.submit(gate.wait, 10)
    queued = pool.submit(lambda: "never")
    assert queued.cancel()  # still queued: cancelled, never run
    failing = pool.submit(lambda: 1 / 0)
    gate.set()
    assert first.result(10) is True
    with pytest.raises(ZeroDivisionError):
        failing.result(10)
    pool.shutdown()
    with pytest.raises(RuntimeError, match="after shutdown"):
        pool.submit(lambda: None)
    wait_until(lambda: pool.threads == 0, "threads to exit after shutdown")


def test_async_turns_blocking_work_uses_the_shrinking_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime, "_blocking_pool", None)
    monkeypatch.setattr(runtime, "_BLOCKING_IDLE", 0.2)

    async def main() -> list[str]:
        return list(
            await asyncio.gather(*(runtime.run_blocking(time.sleep, 0.05) for _ in range(8)))
        )

    asyncio.run(main())
    pool = runtime._pool()
    assert isinstance(pool, ElasticThreadPool)
    wait_until(lambda: pool.threads == 0, "the blocking pool to shrink")
