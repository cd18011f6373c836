#!/usr/bin/env python3
"""PREFIX: how much of each root prompt a model server can serve from its prefix cache.

Every provider discounts a cached prompt prefix and local servers (llama.cpp, vLLM)
skip re-evaluating one, so a root conversation that only grows (one reply and one
REPL output per iteration) is cheap to continue, and one whose early messages change
(a counter in the system prompt, old outputs truncated again, metadata re-rendered)
pays for its whole prompt again on every call.

1. Record. Each engine runs the same scripted trajectory with a recording client and
   every root call's messages are kept, in order:
   - ``oneshot``: one completion, 15 iterations (a REPL block each; the 15th submits);
   - ``persistent``: ``persistent=True``, 5 turns of 3 iterations, a new context each.
   rlmx runs on its ``scripted`` backend (``ScriptedLM`` with a responder); rlms 0.1.3
   runs with its ``get_client`` returning a subclass of its own ``BaseLM`` that records
   the messages and returns the same scripted replies. rlms is recorded in its own
   interpreter (``$RLMX_BENCH_RLMS_PYTHON``, set by ``benchmarks/run.py``; ``--rlms-python``
   here), by this script's ``--record`` mode.
2. Replay. The real llama.cpp server (llama-cpp-python's ``llama_cpp.server``, the
   SmolLM2-135M GGUF the tests use) gets each recorded sequence, call by call, in order
   (``temperature=0``, a few output tokens). The server keeps one sequence in its KV
   cache and re-evaluates only the prompt tokens after the longest prefix it shares with
   what it evaluated last. Its own count of newly evaluated prompt tokens is read from its
   log, one ``llama_perf_context_print: prompt eval time = ... / N tokens`` line per
   request (``usage`` carries no cached-token field in llama-cpp-python).
3. Judge. For each call after the first of a sequence, ``added`` = the prompt tokens
   (the server's ``usage.prompt_tokens``) minus the tokens of the messages it keeps from
   the previous call: within a turn, all of the previous call's messages (a conversation
   only grows, so a rewritten early message shows up as newly evaluated tokens beyond
   ``added``); at the first call of a new persistent turn, the leading messages both calls
   share (each turn opens a fresh conversation, by design: earlier turns are in the REPL's
   ``history``). Target (issue 18): newly evaluated <= added + 32 on every such call;
   a call after a compaction is reported as an event with its cost instead.
   The time to answer is the wall time of the replayed calls on llama.cpp, plus the
   engine's own wall time for the trajectory with an instant model (the recording run).

    python benchmarks/prefix_cache.py --json out.json          # through the harness
    python benchmarks/prefix_cache.py --table                  # per-call table, stdout
    python benchmarks/prefix_cache.py --record out.json        # record only (any rlm)

This file is the entry point and the harness scenario; the work is in
``benchmarks/prefix_bench/``: ``record.py`` (1), ``server.py`` and ``replay.py`` (2, 3),
``report.py`` (the metrics and the per-call table).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # prefix_bench
sys.path.insert(0, str(Path(__file__).resolve().parent / "scenarios"))  # _common

from prefix_bench.record import record_here, record_in
from prefix_bench.replay import measure
from prefix_bench.report import format_rows, harness_sample
from prefix_bench.server import find_server

NAME = "PREFIX"
RLMS_PYTHON_ENV = "RLMX_BENCH_RLMS_PYTHON"


def run_all(
    rlms_python: str | None, max_tokens: int, inner: int, server: tuple[str, str]
) -> dict[str, Any]:
    """Record rlmx here (and rlms in ``rlms_python``), replay both on one server."""
    recordings = {"rlmx": record_here()}
    if rlms_python:
        recordings["rlms"] = record_in(rlms_python)
    result = measure(recordings, max_tokens, inner, server)
    result["packages"] = {k: v["package"] for k, v in recordings.items()}
    result["engine_wall_ms"] = {
        f"{pkg}/{run}": rec["runs"][run]["engine_wall_ms"]
        for pkg, rec in recordings.items()
        for run in rec["runs"]
    }
    result["answers"] = {
        f"{pkg}/{run}": rec["runs"][run]["answer"]
        for pkg, rec in recordings.items()
        for run in rec["runs"]
    }
    return result


# -- the harness scenario ------------------------------------------------------------------


def child_prefix(p: dict[str, Any]) -> dict[str, Any]:
    server = find_server()
    if isinstance(server, str):
        return {"skipped": server}
    rlms_python = os.environ.get(RLMS_PYTHON_ENV) or None
    res = run_all(rlms_python, int(p.get("max_tokens", 8)), int(p.get("inner", 2)), server)
    return {"samples": [harness_sample(res)]}


def register(hb: Any, quick: bool = False) -> None:
    param = {"max_tokens": 4, "inner": 1} if quick else {"max_tokens": 8, "inner": 2}
    hb.SCENARIOS[NAME] = {
        "title": "prefix cache on llama.cpp: newly evaluated vs added prompt tokens per root call",
        "fn": child_prefix,
        "variants": [("", param)],
        "headline": ["oneshot_excess_max_n", "persistent_excess_max_n", "oneshot_replay_wall_ms"],
    }


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--record"]:
        Path(argv[1]).write_text(json.dumps(record_here()))
        return 0
    if argv[:1] == ["--table"]:
        ap = argparse.ArgumentParser(prog="prefix_cache.py --table")
        ap.add_argument("--table", action="store_true")
        ap.add_argument("--rlms-python", default=os.environ.get(RLMS_PYTHON_ENV))
        ap.add_argument("--max-tokens", type=int, default=8)
        ap.add_argument("--inner", type=int, default=1)
        ns = ap.parse_args(argv)
        server = find_server()
        if isinstance(server, str):
            sys.exit(server)
        res = run_all(ns.rlms_python, ns.max_tokens, ns.inner, server)
        for key, rows in res["rows"].items():
            print(f"\n== {key} ({res['packages'][key.split('/')[0]]})")
            print(format_rows(rows))
            print(json.dumps(res["summary"][key]))
        return 0
    from _common import load_harness, pre_parse, run_harness_main

    hb = load_harness()
    quick, _ = pre_parse(argv)
    register(hb, quick)
    return run_harness_main(hb, __file__, argv, NAME)


if __name__ == "__main__":
    sys.exit(main())
