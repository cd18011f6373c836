"""Running scenarios: the shared harness, one scenario per subprocess, interleaved.

Each scenario of the shared harness (``benchmarks/harness/rlm_bench.py``, a vendored copy) runs as ``--only Sx --repeats 1 --json`` in a subprocess of the matching
interpreter, alternating packages repeat by repeat (rlms, rlmx, then rlmx, rlms, ...),
so both see the same machine load. Scenarios the harness lacks live in
``benchmarks/scenarios/``, have the harness's output shape and run on rlmx only.
C0 (the harness's calibration: the machine's physical floors) runs first.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

from .config import (
    ALL_SCENARIOS,
    EXTRA_SCENARIOS,
    GROUPS,
    HARNESS_ENV_VAR,
    HARNESS_SCENARIOS,
    QUICK_SKIPS,
    REPO,
    RLMS_PYTHON_ENV,
    SCENARIO_DIR,
    SERVER_PYTHON_ENV,
    SINGLE_PROCESS,
)
from .venvs import Interp, run_cmd

VENDORED_HARNESS = REPO / "benchmarks" / "harness"  # a copy of the shared harness


def harness_dir(override: str | None) -> Path:
    if override:
        return Path(override)
    env = os.environ.get(HARNESS_ENV_VAR)
    return Path(env) if env else VENDORED_HARNESS


def load_harness(folder: Path) -> ModuleType:
    path = folder / "rlm_bench.py"
    if not path.is_file():
        sys.exit(f"[bench] harness not found at {path} (use --harness-dir or ${HARNESS_ENV_VAR})")
    spec = importlib.util.spec_from_file_location("rlm_bench", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["rlm_bench"] = module
    spec.loader.exec_module(module)
    return module


def script_for(scenario: str, harness: Path) -> Path:
    extra = EXTRA_SCENARIOS.get(scenario)
    return SCENARIO_DIR / extra if extra else harness / "rlm_bench.py"


def run_job(
    interp: Interp,
    script: Path,
    scenario: str,
    repeats: int,
    args: argparse.Namespace,
    harness: Path,
    extra_env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """One harness-shaped run of ``scenario`` in ``interp``; errors come back as data."""
    with tempfile.TemporaryDirectory(prefix="rlmx_bench_") as tmp:
        out = Path(tmp) / "out.json"
        cmd = [
            interp.python,
            str(script),
            "--only",
            scenario,
            "--repeats",
            str(repeats),
            "--json",
            str(out),
            "--timeout",
            str(args.timeout),
        ]
        if args.quick:
            cmd.append("--quick")
        if args.s4_sizes and scenario.startswith("S4"):
            cmd += ["--s4-sizes", args.s4_sizes]
        env = dict(interp.env)
        env[HARNESS_ENV_VAR] = str(harness)
        env.update(extra_env or {})
        t = time.perf_counter()
        try:
            cp = run_cmd(cmd, env=env, cwd=tmp, timeout=args.timeout * max(1, repeats) * 4 + 60)
        except subprocess.TimeoutExpired:
            return {"error": f"{scenario} on {interp.name}: runner timeout"}
        took = time.perf_counter() - t
        if cp.returncode != 0 or not out.exists():
            return {
                "error": f"{scenario} on {interp.name}: rc={cp.returncode}",
                "stderr_tail": (cp.stderr or "")[-2000:],
            }
        data: dict[str, Any] = json.loads(out.read_text())
        data["_seconds"] = took
        return data


def merge(into: dict[str, Any], run: dict[str, Any], scenario: str) -> None:
    """Add the samples of one harness run of ``scenario`` to the package's results."""
    if "error" in run:
        s = into["scenarios"].setdefault(scenario, _empty(scenario))
        s["errors"].append(run["error"])
        s.setdefault("error_details", []).append(
            {"error": run["error"], "stderr_tail": run.get("stderr_tail")}
        )
        return
    into.setdefault("rlm_version", run.get("rlm_version"))
    into["seconds"] = into.get("seconds", 0.0) + run.get("_seconds", 0.0)
    for name, sres in run.get("scenarios", {}).items():
        s = into["scenarios"].setdefault(name, _empty(name))
        s["title"] = sres.get("title", s["title"])
        s["headline"] = sres.get("headline", [])
        s["variants"].update(sres.get("variants", {}))
        for label, samples in sres.get("samples", {}).items():
            s["samples"].setdefault(label, []).extend(samples)
        s["errors"].extend(sres.get("errors") or [])
        s["skipped"].extend(x for x in sres.get("skipped") or [] if x not in s["skipped"])
        if sres.get("error_details"):
            s.setdefault("error_details", []).extend(sres["error_details"])


def _empty(name: str) -> dict[str, Any]:
    return {
        "title": name,
        "variants": {},
        "metrics": {},
        "errors": [],
        "skipped": [],
        "samples": {},
        "headline": [],
    }


def selection(args: argparse.Namespace) -> list[str]:
    if args.only:
        names: list[str] = []
        for item in (x.strip() for x in args.only.split(",")):
            if not item:
                continue
            for name in GROUPS.get(item, [item]):
                if name not in ALL_SCENARIOS and name != "C0":
                    sys.exit(
                        f"unknown scenario {name!r}; known: {ALL_SCENARIOS}, groups {list(GROUPS)}"
                    )
                if name not in names:
                    names.append(name)
        return [n for n in names if n != "C0"]
    names = list(ALL_SCENARIOS)
    if args.quick:
        names = [n for n in names if n not in QUICK_SKIPS]
    return names


def noise_now() -> dict[str, Any]:
    psi = None
    with contextlib.suppress(Exception), open("/proc/pressure/cpu") as f:
        for line in f:
            if line.startswith("some"):
                psi = float(line.split("avg10=")[1].split()[0])
    return {
        "loadavg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "cpu_psi10": psi,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _say(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def run_all(
    args: argparse.Namespace, interps: dict[str, Interp], harness: Path, names: list[str]
) -> dict[str, dict[str, Any]]:
    """C0 (unless ``--no-calibration``), then every scenario, per package, interleaved.

    Returns ``{package: {"scenarios": {...}}}`` with the raw samples merged; the
    caller aggregates them with the harness's ``summarize_scenario``.
    """
    pkgs: dict[str, dict[str, Any]] = {name: {"scenarios": {}} for name in interps}
    if not args.no_calibration:
        _say("C0 calibration (machine floors) ...")
        pkgs["calibration"] = {"scenarios": {}}
        script = harness / "rlm_bench.py"
        run = run_job(interps["rlmx"], script, "C0", min(args.repeats, 3), args, harness)
        merge(pkgs["calibration"], run, "C0")

    # PREFIX runs in rlmx's interpreter, records rlms in rlms's own, and starts the
    # llama.cpp server in this one when the rlmx venv has no llama-cpp-python
    extra_env = {SERVER_PYTHON_ENV: sys.executable}
    if "rlms" in interps:
        extra_env[RLMS_PYTHON_ENV] = interps["rlms"].python
    for scen in names:
        order = [
            p
            for p in ("rlms", "rlmx")
            if p in interps and (p == "rlmx" or scen in HARNESS_SCENARIOS)
        ]
        reps = 1 if scen in SINGLE_PROCESS else args.repeats
        for rep in range(reps):
            for pkg in order if rep % 2 == 0 else order[::-1]:
                _say(f"{scen} {pkg} repeat {rep + 1}/{reps} ...")
                script = script_for(scen, harness)
                run = run_job(interps[pkg], script, scen, 1, args, harness, extra_env)
                merge(pkgs[pkg], run, scen)
    return pkgs
