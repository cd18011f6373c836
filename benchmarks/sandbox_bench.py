#!/usr/bin/env python3
"""Measure the sandbox worker (not a test; prints a table, optionally JSON).

    python benchmarks/sandbox_bench.py                 # everything, about a minute
    python benchmarks/sandbox_bench.py --quick         # smaller sizes and fewer repeats
    python benchmarks/sandbox_bench.py --json out.json --context-mb 500 --namespace-mb 100

Figures:

* worker start: constructing a SandboxREPL until its worker is ready (bwrap included);
* llm_query round trip: a cell calls ``llm_query`` in a loop against an instant
  scripted model; the time per call, measured inside the cell;
* per-cell overhead: ``execute_code("x = 1")``, and one RLM loop iteration;
* large context: a fresh process binds an ASCII context of ``--context-mb``; reports the
  time and the peak memory (VmHWM) of host and worker processes over the context size;
* restore after a hard timeout: a namespace of ``--namespace-mb`` is built, then a cell
  that ignores interrupts forces a kill; reports the cell's time beyond
  ``cell_timeout + interrupt_grace`` and the time of a bare restart.

Each figure also runs on LocalREPL where that makes sense, for reference.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from unittest import mock

from rlm.clients.scripted import ScriptedLM
from rlm.core.lm_handler import LMHandler
from rlm.environments import LocalREPL
from rlm.environments.sandbox_repl import SandboxREPL

STUBBORN = "while True:\n    try:\n        while True:\n            pass\n    except BaseException:\n        pass"


def median_ms(fn: Callable[[], Any], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1e3


def bench_start(repeats: int) -> dict[str, float]:
    def start(**kwargs: Any) -> None:
        SandboxREPL(**kwargs).cleanup()

    return {
        "start_sandbox_ms": median_ms(start, repeats),
        "start_process_ms": median_ms(lambda: start(isolation="process"), repeats),
    }


def bench_llm_query(calls: int) -> dict[str, float]:
    handler = LMHandler(ScriptedLM(model_name="bench", responder=lambda prompt: "ok"))
    code = (
        "import time\nstarted = time.perf_counter()\n"
        f"for _ in range({calls}):\n    llm_query('x')\n"
        f"per_call = (time.perf_counter() - started) / {calls} * 1e6"
    )
    out: dict[str, float] = {}
    try:
        for name, make in (("local", LocalREPL), ("sandbox", SandboxREPL)):
            env = make(lm_route=handler.route(1))
            try:
                env.execute_code(code)  # warm-up
                samples = []
                for _ in range(3):
                    env.execute_code(code)
                    samples.append(float(env.lookup_variable("per_call") or "nan"))
                out[f"llm_query_{name}_us"] = statistics.median(samples)
            finally:
                env.cleanup()
    finally:
        handler.close()
    return out


def bench_cells(repeats: int) -> dict[str, float]:
    out: dict[str, float] = {}
    for name, make in (("local", LocalREPL), ("sandbox", SandboxREPL)):
        env = make()
        try:
            env.execute_code("x = 0")
            out[f"cell_{name}_ms"] = median_ms(lambda env=env: env.execute_code("x = 1"), repeats)
        finally:
            env.cleanup()
    return out


def _iteration_ms(environment: str, iterations: int) -> float:
    """Wall time per root iteration of a persistent RLM running tiny cells."""
    import rlm.core.rlm as core_rlm
    from rlm import RLM

    count = {"n": 0}

    def respond(prompt: Any) -> str:
        count["n"] += 1
        if count["n"] % iterations == 0:
            return "```repl\nanswer['content'] = 'done'\nanswer['ready'] = True\n```"
        return f"```repl\nx = {count['n']}\n```"

    lm = ScriptedLM(model_name="bench", responder=respond)
    with mock.patch.object(core_rlm, "get_client", lambda backend, kwargs: lm):
        rlm = RLM(
            backend="openai",
            backend_kwargs={"model_name": "bench"},
            environment=environment,
            max_iterations=iterations + 5,
            persistent=True,
        )
        try:
            rlm.completion("warm-up")
            started = time.perf_counter()
            rlm.completion("measured")
            return (time.perf_counter() - started) / iterations * 1e3
        finally:
            rlm.close()


def bench_iterations(iterations: int) -> dict[str, float]:
    local = _iteration_ms("local", iterations)
    sandbox = _iteration_ms("sandbox", iterations)
    return {
        "iteration_local_ms": local,
        "iteration_sandbox_ms": sandbox,
        "iteration_overhead_ms": sandbox - local,
    }


# -- the large context runs in a fresh process, for clean peaks ----------------------------


def _hwm_kb(pid: int | str = "self") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def _descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        for task in Path(f"/proc/{current}/task").iterdir():
            children = (task / "children").read_text().split()
            found += [int(c) for c in children]
            todo += [int(c) for c in children]
    return found


def context_child(megabytes: int, environment: str) -> dict[str, float]:
    size = megabytes * 1_000_000
    context = "x" * size
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM: the context is held
    started = time.perf_counter()
    env = SandboxREPL(memory_mb=None) if environment == "sandbox" else LocalREPL()
    try:
        env.add_context(context)
        bound = time.perf_counter() - started
        result = env.execute_code("print(len(context))")
        assert result.stdout.strip() == str(size), result.stderr
        total = time.perf_counter() - started
        host_kb = _hwm_kb()
        worker_kb = 0
        if isinstance(env, SandboxREPL) and env.transport.pid is not None:
            worker_kb = sum(
                _hwm_kb(p) for p in [env.transport.pid, *_descendants(env.transport.pid)]
            )
    finally:
        env.cleanup()
    return {
        "bind_s": bound,
        "first_cell_s": total,
        "host_peak_mb": host_kb * 1024 / 1e6,
        "worker_peak_mb": worker_kb * 1024 / 1e6,
        "peak_over_context_x": (host_kb + worker_kb) * 1024 / size,
    }


def bench_context(megabytes: int) -> dict[str, float]:
    out: dict[str, float] = {}
    for environment in ("local", "sandbox"):
        proc = subprocess.run(
            [sys.executable, __file__, "--_context-child", str(megabytes), environment],
            capture_output=True,
            text=True,
            check=True,
        )
        data = json.loads(proc.stdout.strip().splitlines()[-1])
        for key, value in data.items():
            out[f"context{megabytes}mb_{environment}_{key}"] = value
    return out


def bench_restore(megabytes: int) -> dict[str, float]:
    rows = megabytes * 10  # half the namespace in 50 kB rows, half in one bytes value
    build = (
        f"rows = [{{'id': i, 'text': 'r' * 50_000}} for i in range({rows})]\n"
        f"blob = b'z' * {megabytes * 500_000}\n"
        "def total():\n    return len(rows) + len(blob)\n"
    )
    env = SandboxREPL(cell_timeout=1.0, interrupt_grace=0.5, memory_mb=None)
    try:
        started = time.perf_counter()
        env.execute_code(build)
        build_s = time.perf_counter() - started
        stored = sum(len(body or b"") for _, body in env.state.entries.values())
        started = time.perf_counter()
        result = env.execute_code(STUBBORN)
        kill_cell_s = time.perf_counter() - started
        assert "restored" in result.stderr, result.stderr
        assert env.execute_code("print(total())").stdout.strip() == str(rows + megabytes * 500_000)
        started = time.perf_counter()
        env.supervisor.restart()
        restart_s = time.perf_counter() - started
    finally:
        env.cleanup()
    return {
        "namespace_snapshot_mb": stored / 1e6,
        "namespace_build_and_snapshot_s": build_s,
        "hard_timeout_cell_s": kill_cell_s,
        "restore_after_hard_timeout_s": kill_cell_s - 1.5,
        "bare_restart_and_restore_s": restart_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--context-mb", type=int, default=500)
    parser.add_argument("--namespace-mb", type=int, default=100)
    parser.add_argument("--_context-child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._context_child:
        print(json.dumps(context_child(int(args._context_child[0]), args._context_child[1])))
        return
    quick = args.quick
    results: dict[str, float] = {}
    results |= bench_start(3 if quick else 10)
    results |= bench_llm_query(500 if quick else 3000)
    results |= bench_cells(100 if quick else 500)
    results |= bench_iterations(10 if quick else 30)
    results |= bench_context(50 if quick else args.context_mb)
    results |= bench_restore(10 if quick else args.namespace_mb)
    width = max(map(len, results))
    for key, value in results.items():
        print(f"{key:<{width}}  {value:12.3f}")
    if args.json:
        meta = {"python": sys.version.split()[0], "cpus": os.cpu_count(), "quick": quick}
        args.json.write_text(json.dumps({"meta": meta, "results": results}, indent=2))


if __name__ == "__main__":
    main()
