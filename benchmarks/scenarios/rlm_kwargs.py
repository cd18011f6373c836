#!/usr/bin/env python3
"""Shared-harness scenarios re-run with extra ``RLM(...)`` arguments.

The harness always builds ``RLM(backend="openai", environment="local", ...)``. This
script registers variants of its scenarios that add keyword arguments:

    S1-sandbox  S1 (20 iterations)       with environment="sandbox", a warm spare ready
    S2-sandbox  S2 (llm_query x 200)     with environment="sandbox"
    S4-sandbox  S4 (10/100/500 MB ctx)   with environment="sandbox"
    S3-cap16    S3 (batched x 200)       with max_concurrent_llm_calls=16

S1-sandbox measures the issue's row "20-iteration one-shot completion when a warm spare
worker is ready": one RLM serves every run (its warm-up run, ``cold_wall_ms``, is the
first completion of a fresh RLM, which starts its worker itself), and before each
measured run the RLM's spare worker is waited for (outside the timed span). An ``rlm``
without warm spares simply reuses the RLM.

Everything else (fake LM, timing, memory sampling of the process tree, process
isolation, JSON shape) is the harness's. A variant whose environment does not exist
in the imported ``rlm`` is reported as ``skipped``, not as a number.

    python benchmarks/scenarios/rlm_kwargs.py --only S2-sandbox --json out.json
    python benchmarks/scenarios/rlm_kwargs.py --quick          # every variant, smoke
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import load_harness, missing_environment, pre_parse, run_harness_main

SANDBOX = {"environment": "sandbox"}
WARM_SPARE = frozenset({"S1-sandbox"})  # one RLM, its warm spare waited for before a run

# name -> (harness scenario, extra RLM kwargs, headline metrics)
VARIANTS: dict[str, tuple[str, dict[str, Any], list[str]]] = {
    "S1-sandbox": ("S1", SANDBOX, ["wall_ms", "ms_per_iter_steady_ms", "teardown_ms"]),
    "S2-sandbox": ("S2", SANDBOX, ["us_per_call_inrepl_us"]),
    "S4-sandbox": ("S4", SANDBOX, ["ttfi_ms", "peak_over_ctx_x"]),
    "S3-cap16": ("S3", {"max_concurrent_llm_calls": 16}, ["batch_ms", "max_inflight_n"]),
}


def _wait_for_spare(engine: Any) -> None:
    """Wait (untimed) until the RLM's warm spare worker is ready, if it keeps one."""
    spares = getattr(getattr(engine, "_environments", None), "spares", None)
    if spares is not None:
        spares.wait_ready(timeout=60)


def _with_kwargs(hb: Any, base_fn: Any, extra: dict[str, Any], warm: bool = False) -> Any:
    def fn(param: dict[str, Any]) -> dict[str, Any]:
        env = extra.get("environment")
        if env:
            reason = missing_environment(env)
            if reason:
                return {"skipped": reason}
        original, original_close = hb.Bench.make, hb.Bench.__dict__["close"]  # staticmethod
        kept: list[Any] = []

        def make(self: Any, **kw: Any) -> Any:
            if not warm:
                return original(self, **{**extra, **kw})
            if not kept:
                kept.append(original(self, **{**extra, **kw}))
            _wait_for_spare(kept[0])
            return kept[0]

        hb.Bench.make = make
        if warm:
            hb.Bench.close = staticmethod(lambda engine: None)
        try:
            return base_fn(param)
        finally:
            hb.Bench.make, hb.Bench.close = original, original_close
            for engine in kept:
                hb.Bench.close(engine)

    return fn


def register(hb: Any, quick: bool = False, s4_sizes: str | None = None) -> None:
    """Add the variants to ``hb.SCENARIOS`` (the quick/size rules mirror the harness's)."""
    for name, (base, extra, headline) in VARIANTS.items():
        spec = hb.SCENARIOS[base]
        variants = list(spec["variants"])
        if base == "S4":
            if s4_sizes:
                variants = [(f"{s}MB", {"size_mb": float(s)}) for s in s4_sizes.split(",")]
            if quick:
                variants = [v for v in variants if v[1]["size_mb"] <= 10] or variants[:1]
        args = ", ".join(f"{k}={v!r}" for k, v in extra.items())
        if name in WARM_SPARE:
            args += "), a warm spare ready (one RLM"
        hb.SCENARIOS[name] = {
            "title": f"{spec['title']} with RLM({args})",
            "fn": _with_kwargs(hb, spec["fn"], extra, warm=name in WARM_SPARE),
            "variants": variants,
            "headline": headline,
        }


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    hb = load_harness()
    quick, sizes = pre_parse(argv)
    register(hb, quick, sizes)
    return run_harness_main(hb, __file__, argv, ",".join(VARIANTS))


if __name__ == "__main__":
    sys.exit(main())
