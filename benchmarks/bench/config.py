"""Paths, the scenario catalogue and its groups."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCENARIO_DIR = REPO / "benchmarks" / "scenarios"
RLMS_SPEC = "rlms==0.1.3"
DEFAULT_CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "rlmx-bench"
HARNESS_ENV_VAR = "RLM_BENCH_DIR"

HARNESS_SCENARIOS = ["S1", "S2", "S3", "S4", "S5", "S6", "S7"]
# Scenarios that run only on rlmx: rlms has no sandbox environment, no
# max_concurrent_llm_calls, no llama_cpp backend and no durable sessions.
EXTRA_SCENARIOS = {
    "S3-cap16": "rlm_kwargs.py",
    "S1-sandbox": "rlm_kwargs.py",
    "S2-sandbox": "rlm_kwargs.py",
    "S4-sandbox": "rlm_kwargs.py",
    "D1": "durable_checkpoint.py",
    "D1-sandbox": "durable_checkpoint.py",
    "LLAMA": "llama_real.py",
    # measures rlms too: it records rlms 0.1.3 in its venv ($RLMX_BENCH_RLMS_PYTHON) and
    # replays both engines' root prompts to one llama.cpp server
    "PREFIX": "../prefix_cache.py",
}
ALL_SCENARIOS = HARNESS_SCENARIOS + list(EXTRA_SCENARIOS)
GROUPS = {
    "sandbox": ["S1-sandbox", "S2-sandbox", "S4-sandbox", "D1-sandbox"],
    "harness": HARNESS_SCENARIOS,
    "durable": ["D1", "D1-sandbox"],
    "prefix": ["PREFIX"],
}
# LLAMA: model warm-up alone is 20-40 s here; PREFIX: ~60 real prompt evaluations on
# llama.cpp, a few minutes on 2 shared cores. Name them in --only to run them.
QUICK_SKIPS = {"LLAMA", "PREFIX"}
SINGLE_PROCESS = {"LLAMA", "PREFIX"}  # several measured runs inside one process
RLMS_PYTHON_ENV = "RLMX_BENCH_RLMS_PYTHON"  # rlms's interpreter, for PREFIX's recording
SERVER_PYTHON_ENV = "RLMX_BENCH_SERVER_PYTHON"  # where PREFIX starts llama_cpp.server
PACKAGES = ("rlms", "rlmx")
