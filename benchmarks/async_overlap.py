#!/usr/bin/env python3
"""Do concurrent ``acompletion`` runs overlap? (issue 7)

    python benchmarks/async_overlap.py                # 20 runs, 100 ms per LM call
    python benchmarks/async_overlap.py --runs 50 --latency 0.05

Each run is a real RLM turn (root call, a REPL cell that makes one ``llm_query``, root
call that submits) against a scripted model that sleeps ``--latency`` seconds per call,
so one run is three sequential LM calls. N runs on N separate ``RLM`` objects, gathered
on one event loop, should take about one run's time, not N times it. Prints both times
and their ratio (target: close to 1; N sequential runs would give N).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any
from unittest import mock

import rlm.core.rlm
from rlm import RLM
from rlm.base.types import Prompt
from rlm.clients.scripted import ScriptedLM

LOOK = "```repl\nn = len(context)\nnote = llm_query('summarise ' + context[:20])\n```"
SUBMIT = "```repl\nanswer['content'] = str(n)\nanswer['ready'] = True\n```"


def respond(prompt: Prompt) -> str:
    if isinstance(prompt, str):  # the llm_query
        return "a summary"
    looked = any(m.get("role") == "assistant" for m in prompt[2:])
    return SUBMIT if looked else LOOK


def make(latency: float) -> RLM:
    return RLM(backend="openai", backend_kwargs={"model_name": "bench"})


async def one_run(latency: float) -> float:
    started = time.perf_counter()
    with make(latency) as r:
        result = await r.acompletion("x" * 1000)
    assert result.response == "1000", result.response
    return time.perf_counter() - started


async def many_runs(n: int, latency: float) -> float:
    rlms = [make(latency) for _ in range(n)]
    started = time.perf_counter()
    results = await asyncio.gather(*(r.acompletion("x" * 1000) for r in rlms))
    elapsed = time.perf_counter() - started
    for r in rlms:
        r.close()
    assert all(res.response == "1000" for res in results)
    return elapsed


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20, help="concurrent runs (default 20)")
    parser.add_argument("--latency", type=float, default=0.1, help="seconds per LM call")
    args = parser.parse_args(argv)

    def client(backend: str, kwargs: dict[str, Any]) -> ScriptedLM:
        return ScriptedLM("bench", responder=respond, latency=args.latency)

    with mock.patch.object(rlm.core.rlm, "get_client", client):
        asyncio.run(one_run(0.0))  # warm imports and thread pools
        single = asyncio.run(one_run(args.latency))
        concurrent = asyncio.run(many_runs(args.runs, args.latency))
    ratio = concurrent / single
    print(
        f"one run:            {single * 1000:8.1f} ms  (3 LM calls of {args.latency * 1000:.0f} ms)"
    )
    print(f"{args.runs} concurrent runs: {concurrent * 1000:8.1f} ms")
    print(f"sequential would be {single * args.runs * 1000:8.1f} ms")
    print(f"ratio concurrent / one run: {ratio:.2f}x  (target ~1; {args.runs}x = no overlap)")
    return {"single_s": single, "concurrent_s": concurrent, "ratio": ratio}


if __name__ == "__main__":
    main()
