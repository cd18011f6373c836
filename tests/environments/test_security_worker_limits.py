"""Security hardening, worker side: what sandboxed code can make the *host* spend.

Each test runs real hostile code in a real worker (the bubblewrap sandbox, and the
``process`` isolation) that forges frames on its own channel to the host:

* one oversize JSON frame must be refused before it is read or decoded (the host's
  peak memory stays put), reported to the model, and the session must survive;
* thousands of forged sub-call requests must not cost one host thread each;
* a cell that keeps a sub-call in flight from a thread must still hit a wall-clock cap.
"""

from __future__ import annotations

import resource
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from worker_env_support import make_env, needs_bwrap

from rlm.clients.scripted import ScriptedLM
from rlm.core.lm_handler import LMHandler, LMRoute

KINDS = [pytest.param("sandbox", marks=needs_bwrap), pytest.param("process")]

# Cell code: the worker's own channel to the host, as hostile code can reach it.
CHANNEL = (
    "import sys\n"
    "_srv = sys.modules['rlm.environments.worker.server']\n"
    "_proto = sys.modules['rlm.environments.worker.protocol']\n"
    "_ch = _srv._current.channel\n"
    "def forge(payload):\n"
    "    with _ch.lock:\n"
    "        _ch._write(_proto.HEADER.pack(b'J', len(payload)))\n"
    "        _ch._write(payload)\n"
)


@pytest.fixture
def slow_route() -> Iterator[tuple[LMRoute, threading.Event]]:
    """A real LMHandler over a scripted model that takes 0.5 s per answer (until
    ``stop`` is set), so forged or looping sub-calls stay in flight."""
    stop = threading.Event()

    def slow(prompt: Any) -> str:
        stop.wait(0.5)
        return f"slow:{prompt}"

    handler = LMHandler(ScriptedLM(model_name="scripted", responder=slow))
    try:
        yield handler.route(1), stop
    finally:
        stop.set()
        handler.close()


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@pytest.mark.parametrize("kind", KINDS)
def test_oversize_frame_is_refused_and_the_session_survives(kind: str) -> None:
    env: Any = make_env(kind, max_frame_mb=2)
    try:
        env.execute_code("kept = 41")
        before = _peak_rss_mb()
        # 45 MB of JSON whose decoding costs ~25x (a dict per 3 bytes), forged as one
        # well-formed message: the host must refuse it from its header.
        code = CHANNEL + (
            "body = b'{\"op\": \"noise\", \"pad\": [' + b'{},' * 15_000_000 + b'0]}'\n"
            "forge(body)\n"
            "del body\n"
            "print('sent')\n"
        )
        result = env.execute_code(code)
        grown = _peak_rss_mb() - before
        assert "max_frame_mb" in result.stderr, result.stderr
        assert "WorkerCrashedError" in result.stderr
        assert grown < 400, f"the host's peak memory grew by {grown:.0f} MB"
        after = env.execute_code("print(kept + 1)")
        assert after.stdout.strip() == "42", after.stderr
    finally:
        env.cleanup()


@pytest.mark.parametrize("kind", KINDS)
def test_legit_large_results_still_fit_under_the_frame_cap(kind: str) -> None:
    env: Any = make_env(kind, max_frame_mb=1, output_limit=3_000_000)
    try:
        # A snapshot entry of ~8 MB (streamed in chunks) and a 3 MB print.
        result = env.execute_code("big = 'x' * 8_000_000\nprint('y' * 3_000_000)")
        assert "WorkerCrashedError" not in result.stderr, result.stderr
        assert "reply was shortened" in result.stderr, result.stderr[:500]
        assert len(result.stdout) > 200_000
        assert env.execute_code("print(len(big))").stdout.strip() == "8000000"
        assert env.lookup_variable("big") == "x" * 8_000_000  # FINAL_VAR of a big value
        # A sub-call prompt over the cap fails in the REPL, not in the host.
        out = env.execute_code("r = llm_query('z' * 3_000_000)\nprint(r[:300])")
        assert "max_frame_mb" in out.stdout, (out.stdout, out.stderr)
        assert "WorkerCrashedError" not in out.stderr
    finally:
        env.cleanup()


@pytest.mark.parametrize("kind", KINDS)
def test_forged_subcall_requests_do_not_cost_a_host_thread_each(
    kind: str, slow_route: tuple[LMRoute, threading.Event]
) -> None:
    route, stop = slow_route
    env: Any = make_env(kind, lm_route=route)
    try:
        baseline = threading.active_count()
        code = CHANNEL + (
            "import json\n"
            "for i in range(2000):\n"
            "    forge(json.dumps({'op': 'llm', 'id': 10**9 + i, 'cell': 1,\n"
            "                      'prompts': ['p'], 'model': None}).encode())\n"
            "print('forged')\n"
        )
        result = env.execute_code(code)
        assert result.stdout.strip() == "forged", result.stderr
        peak = threading.active_count()
        for _ in range(10):  # the host keeps answering for a while: sample it
            time.sleep(0.1)
            peak = max(peak, threading.active_count())
        assert peak - baseline < 200, f"{peak - baseline} host threads for 2,000 frames"
        stop.set()
        for _ in range(100):  # the refused and answered ones drain (bounded wait)
            if threading.active_count() - baseline < 8:
                break
            time.sleep(0.1)
        # Legitimate sub-calls from the REPL are still answered.
        ok = env.execute_code("print(llm_query('hi'))")
        assert "slow:hi" in ok.stdout, (ok.stdout, ok.stderr)
    finally:
        stop.set()
        env.cleanup()


@pytest.mark.parametrize("kind", KINDS)
def test_subcall_in_flight_cannot_pause_the_cell_forever(
    kind: str, slow_route: tuple[LMRoute, threading.Event]
) -> None:
    route, _ = slow_route
    env: Any = make_env(
        kind, lm_route=route, cell_timeout=1.0, cell_wall_timeout=3.0, interrupt_grace=1.0
    )
    try:
        env.execute_code("kept = 7")
        code = (
            "import threading, time\n"
            "def ask():\n"
            "    while True:\n"
            "        llm_query('again')\n"
            "for _ in range(2):  # staggered: one is always in flight\n"
            "    threading.Thread(target=ask, daemon=True).start()\n"
            "    time.sleep(0.25)\n"
            "while True:\n"
            "    pass\n"
        )
        results: list[Any] = []
        runner = threading.Thread(target=lambda: results.append(env.execute_code(code)))
        runner.daemon = True
        runner.start()
        runner.join(90)  # far above the cap: only asserts that the cell ended
        assert results, "the cell is still running: sub-calls paused its clock forever"
        stderr = results[0].stderr
        assert "cell_wall_timeout" in stderr, stderr
        assert env.execute_code("print(kept)").stdout.strip() == "7"
    finally:
        env.cleanup()
