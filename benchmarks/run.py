#!/usr/bin/env python3
"""rlmx vs rlms 0.1.3, measured in the same run, against the targets of issue 6.

    python benchmarks/run.py                      # everything, a few minutes on 2 cores
    python benchmarks/run.py --only S1,S3 --repeats 5
    python benchmarks/run.py --quick              # 1 repeat, small sizes, no LLAMA
    python benchmarks/run.py --smoke              # CI: rlmx only, S1, no venv, no network

What it does:

1. Interpreters. ``rlms==0.1.3`` + ``psutil`` go into a venv under the cache dir
   (``~/.cache/rlmx-bench/``); this repo goes, editable, into a second venv that sees
   the current interpreter's packages (``--system-site-packages``, so llama-cpp-python
   and the GGUF model are found) plus ``psutil``. Both are reused on later runs.
   ``--no-install`` never creates a venv nor calls pip: rlmx then runs on the current
   interpreter with this repo first on ``PYTHONPATH``.
2. Runs. Each scenario of the shared harness (``../shared/bench/rlm_bench.py``, not
   copied here) runs as ``--only Sx --repeats 1 --json`` in a subprocess of the
   matching venv, alternating packages repeat by repeat (rlms, rlmx, then rlmx, rlms,
   ...), so both see the same machine load. Scenarios the harness lacks live in
   ``benchmarks/scenarios/`` and have the harness's output shape; they run on rlmx only.
   C0 (the harness's calibration: the machine's physical floors) runs first.
3. Report. One table: scenario, metric, rlms median, rlmx median, rlmx/rlms, the
   physical floor where one applies, the issue's target and a pass/miss mark. The
   combined JSON and a Markdown copy of the table go to ``bench-out/`` (gitignored).

The numbers are never judged in the test suite; ``--smoke`` only proves this runs.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.util
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SCENARIO_DIR = REPO / "benchmarks" / "scenarios"
RLMS_SPEC = "rlms==0.1.3"
DEFAULT_CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "rlmx-bench"
HARNESS_ENV_VAR = "RLM_BENCH_DIR"

HARNESS_SCENARIOS = ["S1", "S2", "S3", "S4", "S5", "S6", "S7"]
# Scenarios that run only on rlmx: rlms has no sandbox environment, no
# max_concurrent_llm_calls and no llama_cpp backend.
EXTRA_SCENARIOS = {
    "S3-cap16": "rlm_kwargs.py",
    "S1-sandbox": "rlm_kwargs.py",
    "S2-sandbox": "rlm_kwargs.py",
    "S4-sandbox": "rlm_kwargs.py",
    "LLAMA": "llama_real.py",
}
ALL_SCENARIOS = HARNESS_SCENARIOS + list(EXTRA_SCENARIOS)
GROUPS = {"sandbox": ["S1-sandbox", "S2-sandbox", "S4-sandbox"], "harness": HARNESS_SCENARIOS}
QUICK_SKIPS = {"LLAMA"}  # model warm-up alone is 20-40 s here; name it in --only to run it
SINGLE_PROCESS = {"LLAMA"}  # several measured runs inside one process (one warm-up)
PACKAGES = ("rlms", "rlmx")


# ---------------------------------------------------------------------------------------
# Interpreters
# ---------------------------------------------------------------------------------------


@dataclass
class Interp:
    name: str
    python: str
    env: dict[str, str]
    rlm_file: str = ""
    version: str = ""
    psutil: bool = False


def _run(cmd: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, text=True, capture_output=True, stdin=subprocess.DEVNULL, **kw)


def _check(cmd: list[str], what: str) -> None:
    print(f"[bench] {what}: {shlex.join(cmd)}", file=sys.stderr, flush=True)
    cp = _run(cmd)
    if cp.returncode != 0:
        sys.exit(f"[bench] {what} failed (rc={cp.returncode}):\n{(cp.stderr or cp.stdout)[-3000:]}")


_PROBE = (
    "import json, importlib.util as u, rlm\n"
    "from importlib import metadata as md\n"
    "v = {}\n"
    "for d in ('rlms', 'rlmx'):\n"
    "    try: v[d] = md.version(d)\n"
    "    except Exception: pass\n"
    "print(json.dumps({'rlm_file': rlm.__file__, 'dists': v,"
    " 'psutil': u.find_spec('psutil') is not None}))"
)


def probe(interp: Interp) -> Interp:
    cp = _run([interp.python, "-c", _PROBE], env=interp.env, cwd=tempfile.gettempdir())
    if cp.returncode != 0:
        raise RuntimeError(f"{interp.python} cannot import rlm: {cp.stderr[-1500:]}")
    info = json.loads(cp.stdout.strip().splitlines()[-1])
    interp.rlm_file = info["rlm_file"]
    interp.psutil = info["psutil"]
    dist = "rlms" if interp.name == "rlms" else "rlmx"
    interp.version = f"{dist} {info['dists'].get(dist, '?')}"
    return interp


def _venv_python(d: Path) -> Path:
    return d / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def _base_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    env.pop("PYTHONHOME", None)
    return env


def rlms_interp(cache: Path, install: bool) -> Interp:
    d = cache / "rlms-0.1.3"
    py = _venv_python(d)
    marker = d / ".rlmx-bench-ok"
    want = f"{RLMS_SPEC} psutil"
    if not (py.exists() and marker.exists() and marker.read_text() == want):
        if not install:
            raise RuntimeError(f"no rlms venv at {d} and --no-install was given")
        _check([sys.executable, "-m", "venv", "--clear", str(d)], "create the rlms venv")
        _check([str(py), "-m", "pip", "install", "-q", RLMS_SPEC, "psutil"], "install rlms")
        marker.write_text(want)
    it = probe(Interp("rlms", str(py), _base_env()))
    if not Path(it.rlm_file).resolve().is_relative_to(d.resolve()):
        raise RuntimeError(f"the rlms venv imports rlm from {it.rlm_file}")
    return it


def _in_repo(path: str) -> bool:
    return Path(path).resolve().is_relative_to(REPO / "rlm")


def rlmx_interp(cache: Path, install: bool) -> Interp:
    if not install:  # the current interpreter, with this repo first on the path
        env = _base_env()
        env["PYTHONPATH"] = str(REPO)
        it = probe(Interp("rlmx", sys.executable, env))
    else:
        key = hashlib.sha1(str(REPO).encode()).hexdigest()[:10]
        d = cache / f"rlmx-{key}"
        py = _venv_python(d)
        marker = d / ".rlmx-bench-ok"
        want = f"-e {REPO} psutil (system site packages of {sys.base_prefix})"
        if not (py.exists() and marker.exists() and marker.read_text() == want):
            _check(
                [sys.executable, "-m", "venv", "--clear", "--system-site-packages", str(d)],
                "create the rlmx venv",
            )
            _check([str(py), "-m", "pip", "install", "-q", "psutil"], "install psutil")
            _check(
                [str(py), "-m", "pip", "install", "-q", "--no-deps", "-e", str(REPO)],
                "install this repo (editable)",
            )
            marker.write_text(want)
        it = probe(Interp("rlmx", str(py), _base_env()))
    if not _in_repo(it.rlm_file):
        raise RuntimeError(f"the rlmx interpreter imports rlm from {it.rlm_file}, not {REPO}")
    return it


# ---------------------------------------------------------------------------------------
# Runs
# ---------------------------------------------------------------------------------------


def harness_dir(override: str | None) -> Path:
    if override:
        return Path(override)
    env = os.environ.get(HARNESS_ENV_VAR)
    return Path(env) if env else REPO.parent / "shared" / "bench"


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
        t = time.perf_counter()
        try:
            cp = _run(cmd, env=env, cwd=tmp, timeout=args.timeout * max(1, repeats) * 4 + 60)
        except subprocess.TimeoutExpired:
            return {"error": f"{scenario} on {interp.name}: runner timeout"}
        took = time.perf_counter() - t
        if cp.returncode != 0 or not out.exists():
            return {
                "error": f"{scenario} on {interp.name}: rc={cp.returncode}",
                "stderr_tail": (cp.stderr or "")[-2000:],
            }
        data = json.loads(out.read_text())
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


# ---------------------------------------------------------------------------------------
# Targets (issue 6) and physical floors (harness C0)
# ---------------------------------------------------------------------------------------

Value = tuple[float | None, str]  # (number, how to show it)


@dataclass
class Target:
    scenario: str
    metric: str  # harness metric; "{s4}" / "{turnN}" are filled in; "" for derived rows
    label: str
    op: str | None = None  # "<=" | "==" | ">="
    value: float | None = None
    # (C0 metric, scale, description); scale None = per 100 MB, scaled to the S4 size
    floor: tuple[str, float | None, str] | None = None
    rlms_scenario: str | None = None  # compare with this rlms scenario (sandbox rows)
    derive: Callable[[dict[str, Any]], Value] | None = None
    note: str = ""
    target_text: str = ""  # how to show the target when the op/value pair reads badly


def _samples(s: dict[str, Any]) -> list[dict[str, Any]]:
    return [x for v in s.get("samples", {}).values() for x in v]


def _s6_failures(s: dict[str, Any]) -> Value:
    runs = _samples(s)
    if not runs:
        return None, "-"
    bad = sum(
        1
        for x in runs
        if not x.get("correct") or (x.get("metrics", {}).get("failed_children_n") or 0) > 0
    )
    return float(bad), f"{bad}/{len(runs)} runs"


def _s7_head_tail(s: dict[str, Any]) -> Value:
    runs = _samples(s)
    if not runs:
        return None, "-"
    ok = 0
    for x in runs:
        d, m = x.get("detail", {}), x.get("metrics", {})
        last = int(m.get("printed_chars", 0) // 100) - 1
        if d.get("first_line_kept") == 0 and d.get("last_line_kept") == last:
            ok += 1
    return float(ok == len(runs)), f"{ok}/{len(runs)} runs"


def _s5_flat(s: dict[str, Any]) -> Value:
    ratios = []
    for x in _samples(s):
        m = x.get("metrics", {})
        turns = sorted(int(k[4:-8]) for k in m if k.startswith("turn") and k.endswith("_wall_ms"))
        if len(turns) >= 2 and m.get("turn1_wall_ms"):
            ratios.append(m[f"turn{turns[-1]}_wall_ms"] / m["turn1_wall_ms"])
    if not ratios:
        return None, "-"
    r = statistics.median(ratios)
    return r, f"{r:.2f}x"


TARGETS = [
    Target(
        "S1",
        "wall_ms",
        "20-iteration completion, wall",
        "<=",
        10,
        note="rlms: 0.5 s socketserver.shutdown poll per completion",
    ),
    Target("S1", "ms_per_iter_steady_ms", "engine work per iteration", "<=", 0.1),
    Target(
        "S1",
        "teardown_ms",
        "teardown after the last model call",
        floor=("socketserver_shutdown_idle_ms", 1, "stdlib serve_forever poll"),
    ),
    Target(
        "S2",
        "us_per_call_inrepl_us",
        "llm_query round trip, local",
        "<=",
        100,
        floor=("thread_handoff_roundtrip_us", 1, "thread hand-off"),
    ),
    Target(
        "S3",
        "batch_ms",
        "llm_query_batched, 200 x 50 ms",
        "<=",
        75,
        floor=("asyncio_200x50ms_unbounded_ms", 1, "asyncio fan-out, unbounded"),
    ),
    Target("S3", "max_inflight_n", "sub-calls in flight"),
    Target(
        "S3-cap16",
        "max_inflight_n",
        "RLM(max_concurrent_llm_calls=16): in flight",
        "==",
        16,
        rlms_scenario="S3",
        note="concurrency configurable from RLM(...)",
    ),
    Target(
        "S3-cap16",
        "batch_ms",
        "RLM(max_concurrent_llm_calls=16): batch",
        floor=("asyncio_200x50ms_cap16_ms", 1, "asyncio fan-out, cap 16"),
        rlms_scenario="S3",
    ),
    Target("S4", "ttfi_ms[{s4}]", "{s4} context: time to first iteration", "<=", 50),
    Target("S4", "peak_over_ctx_x[{s4}]", "{s4} context: peak memory / context", "<=", 1.1),
    Target(
        "S5",
        "turn1_wall_ms",
        "persistent turn 1, wall",
        "<=",
        5,
        note="rlms: 0.5 s shutdown poll per turn",
    ),
    Target("S5", "{turnN}", "persistent last turn, wall", "<=", 5),
    Target("S5", "", "flatness: last turn / turn 1", "<=", 1.5, derive=_s5_flat),
    Target("S5", "rss_growth_per_turn_kb", "RSS growth per turn (100 KB context each)"),
    Target(
        "S6",
        "batch_ms",
        "8 children x 50 ms, cap 4 (default)",
        "<=",
        120,
        floor=("threadpool_8x50ms_w4_ms", 1, "thread pool 8x50 ms, 4 workers"),
    ),
    Target(
        "S6",
        "batch_ms[conc8]",
        "8 children x 50 ms, cap 8",
        "<=",
        75,
        floor=("threadpool_8x50ms_w8_ms", 1, "thread pool 8x50 ms, 8 workers"),
    ),
    Target(
        "S6", "", "runs with failed children", "==", 0, derive=_s6_failures, target_text="0 runs"
    ),
    Target("S7", "repl_msg_chars", "5 MB print: chars kept", "<=", 25_000),
    Target(
        "S7",
        "",
        "5 MB print: first and last line kept",
        "==",
        1,
        derive=_s7_head_tail,
        target_text="all runs",
    ),
    Target(
        "S7",
        "engine_output_handling_ms",
        "5 MB print: engine output handling",
        "<=",
        10,
        floor=("str_copy_100MB_ms", 0.05, "one 5 MB str copy"),
    ),
    Target("S1-sandbox", "wall_ms", "sandbox: 20-iteration completion, wall", rlms_scenario="S1"),
    Target(
        "S2-sandbox",
        "us_per_call_inrepl_us",
        "sandbox: llm_query round trip",
        "<=",
        200,
        floor=("tcp_persistent_roundtrip_us", 1, "loopback TCP, persistent conn"),
        rlms_scenario="S2",
    ),
    Target(
        "S4-sandbox",
        "ttfi_ms[{s4}]",
        "sandbox: {s4} context, time to first iteration",
        floor=("str_copy_100MB_ms", None, "one str copy of the context"),
        rlms_scenario="S4",
    ),
    Target(
        "S4-sandbox",
        "peak_over_ctx_x[{s4}]",
        "sandbox: {s4} context, peak / context",
        "<=",
        2.0,
        rlms_scenario="S4",
    ),
    Target("LLAMA", "engine_share_pct", "real model: engine share of wall", "<=", 2),
    Target("LLAMA", "engine_ms_per_model_call_ms", "real model: engine time per model call"),
]


def _largest_s4(s: dict[str, Any]) -> str | None:
    labels = [k for k in s.get("samples", {}) if k.endswith("MB") and s["samples"][k]]
    labels = labels or [k for k in s.get("variants", {}) if k.endswith("MB")]
    return max(labels, key=lambda k: float(k[:-2])) if labels else None


def _last_turn(s: dict[str, Any]) -> str | None:
    turns = [
        int(k[4:-8])
        for k in s.get("metrics", {})
        if k.startswith("turn") and k.endswith("_wall_ms")
    ]
    return f"turn{max(turns)}_wall_ms" if turns else None


def resolve_metric(t: Target, s: dict[str, Any] | None, s4: str | None) -> str | None:
    metric = t.metric
    if "{s4}" in metric:
        if not s4:
            return None
        metric = metric.replace("{s4}", s4)
    if metric == "{turnN}":
        return _last_turn(s or {})
    return metric


def value_of(t: Target, s: dict[str, Any] | None, metric: str | None) -> tuple[Value, bool]:
    """((value, shown), from_incorrect_runs)"""
    if not s:
        return (None, "-"), False
    if t.derive:
        return t.derive(s), False
    agg = (s.get("metrics") or {}).get(metric or "")
    if not agg:
        return (None, "-"), False
    unit = "%" if (metric or "").endswith("_pct") else agg.get("unit", "")
    return (agg["median"], fmt_unit(agg["median"], unit)), bool(agg.get("from_incorrect_samples"))


def fmt_num(v: float) -> str:
    a = abs(v)
    if a >= 10_000:
        return f"{v:,.0f}"
    if a >= 100:
        return f"{v:.0f}" if float(v).is_integer() else f"{v:.1f}"
    if a >= 10:
        return f"{v:.1f}"
    if a >= 1:
        return f"{v:.2f}"
    return f"{v:.3f}"


def fmt_unit(v: float, unit: str) -> str:
    unit = {"us": "µs", "x": "x", "n": "", "chars": "chars", "": ""}.get(unit, unit)
    if unit in ("x", "%"):
        return f"{fmt_num(v)}{unit}"
    return f"{fmt_num(v)} {unit}".strip()


def check(op: str | None, value: float | None, want: float | None) -> str:
    if op is None or want is None:
        return ""
    if value is None:
        return "n/a"
    ok = {"<=": value <= want, ">=": value >= want, "==": abs(value - want) < 1e-9}[op]
    return "PASS" if ok else "MISS"


def _target_text(t: Target) -> str:
    if t.target_text:
        return t.target_text
    if t.op is None or t.value is None:
        return ""
    unit = {"_ms": " ms", "_us": " µs", "_x": "x", "_chars": " chars", "_pct": "%"}
    suffix = next((u for k, u in unit.items() if t.metric.split("[")[0].endswith(k)), "")
    if t.metric == "{turnN}":
        suffix = " ms"
    if t.derive is _s5_flat:
        suffix = "x"
    v = f"{t.value:,.0f}" if t.value >= 1000 else f"{t.value:g}"
    return f"{t.op} {v}{suffix}"


def build_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    c0 = results["packages"].get("calibration", {}).get("scenarios", {}).get("C0", {})
    floors = {k: a["median"] for k, a in (c0.get("metrics") or {}).items()}
    ran = {
        name
        for pkg in ("rlmx", "rlms")
        for name in results["packages"].get(pkg, {}).get("scenarios", {})
    }
    rows = []
    for t in TARGETS:
        rx = results["packages"]["rlmx"]["scenarios"].get(t.scenario)
        rs_name = t.rlms_scenario or t.scenario
        rs = results["packages"].get("rlms", {}).get("scenarios", {}).get(rs_name)
        if t.scenario not in ran:
            continue
        s4 = _largest_s4(rx or {}) or _largest_s4(rs or {})
        mx = resolve_metric(t, rx, s4)
        ms = resolve_metric(t, rs, s4)
        (vx, shown_x), bad_x = value_of(t, rx, mx)
        (vs, shown_s), bad_s = value_of(t, rs, ms)
        ratio = vx / vs if vx is not None and vs not in (None, 0) and t.derive is None else None
        floor_txt, floor_v = "", None
        if t.floor and t.floor[0] in floors and (t.floor[1] is not None or s4):
            key, scale, desc = t.floor
            if scale is None and s4:  # context-sized: one copy of the whole context
                scale = float(s4[:-2]) / 100
            floor_v = floors[key] * scale
            unit = "µs" if key.endswith("_us") else "ms"
            floor_txt = f"{fmt_num(floor_v)} {unit} ({desc})"
        status = ""
        if rx is not None and rx.get("status") == "skipped" and not rx.get("metrics"):
            status = "NOT DONE: " + _reasons(rx.get("skipped"))
        elif rx is not None and rx.get("status") == "error" and not rx.get("metrics"):
            status = "ERROR: " + _reasons(rx.get("errors"))[:300]
        label = t.label.replace("{s4}", s4 or "?")
        if t.rlms_scenario and t.rlms_scenario != t.scenario and rs is not None:
            env = ", local env" if "sandbox" in t.scenario else ""
            label += f"  [rlms: its {t.rlms_scenario}{env}]"
        rows.append(
            {
                "scenario": t.scenario,
                "metric": mx or t.metric or "(derived)",
                "label": label,
                "rlms": vs,
                "rlms_shown": shown_s + (" (!)" if bad_s else ""),
                "rlmx": vx,
                "rlmx_shown": shown_x + (" (!)" if bad_x else ""),
                "ratio": ratio,
                "floor": floor_v,
                "floor_shown": floor_txt,
                "target": _target_text(t),
                "mark": status or check(t.op, vx, t.value),
                "note": t.note,
            }
        )
    return rows


def _reasons(items: list[str] | None) -> str:
    """Distinct messages, without the harness's "<variant>: " prefixes."""
    out: list[str] = []
    for item in items or []:
        head, sep, rest = item.partition(": ")
        text = rest if sep and " " not in head else item
        if text not in out:
            out.append(text)
    return "; ".join(out)


def render(rows: list[dict[str, Any]], markdown: bool = False) -> str:
    head = ["scenario", "what", "rlms", "rlmx", "rlmx/rlms", "floor", "target", ""]
    body = []
    for r in rows:
        ratio = (
            "-"
            if r["ratio"] is None
            else (f"{r['ratio']:.3f}" if r["ratio"] < 0.1 else f"{r['ratio']:.2f}")
        )
        body.append(
            [
                r["scenario"],
                r["label"],
                r["rlms_shown"],
                r["rlmx_shown"],
                ratio,
                r["floor_shown"] or "-",
                r["target"] or "-",
                r["mark"],
            ]
        )
    if markdown:
        out = [
            "| " + " | ".join(h or "ok" for h in head) + " |",
            "|" + "|".join(" --- " for _ in head) + "|",
        ]
        for b in body:
            b = [("**MISS**" if c == "MISS" else c) for c in b]
            out.append("| " + " | ".join(c.replace("|", "\\|") for c in b) + " |")
        return "\n".join(out)
    # keep long NOT DONE/ERROR notes out of the width computation
    widths = [
        max([len(h), *(len(b[i]) for b in body if not b[i].startswith(("NOT", "ERR")))])
        for i, h in enumerate(head)
    ]
    lines = []
    for row in [head, ["-" * w for w in widths], *body]:
        cells = [
            c.ljust(w) if i in (0, 1, 5) else c.rjust(w) if i < 7 else c
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------


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


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    ap.add_argument(
        "--quick",
        action="store_true",
        help="1 repeat, S4 at 10 MB only, S5 with 10 turns, LLAMA left out",
    )
    ap.add_argument(
        "--only",
        help=f"comma list of scenarios or groups {list(GROUPS)} "
        f"(default: all). Known: {','.join(ALL_SCENARIOS)}",
    )
    ap.add_argument(
        "--repeats",
        type=int,
        default=0,
        help="fresh processes per scenario and package (default 3; 1 with --quick)",
    )
    ap.add_argument(
        "--rlmx-only", action="store_true", help="do not install or run rlms (no rlms columns)"
    )
    ap.add_argument(
        "--no-install",
        action="store_true",
        help="never create a venv or call pip: rlmx runs on this interpreter with "
        "the repo on PYTHONPATH; rlms needs an existing venv (or --rlmx-only)",
    )
    ap.add_argument("--no-calibration", action="store_true", help="skip C0 (no floor column)")
    ap.add_argument(
        "--smoke",
        action="store_true",
        help="CI smoke run: --quick --rlmx-only --no-install --no-calibration, "
        "--only S1 unless --only is given; a few seconds, no network",
    )
    ap.add_argument("--s4-sizes", help="S4 context sizes in MB (default 10,100,500)")
    ap.add_argument("--timeout", type=float, default=600, help="seconds per child process")
    ap.add_argument(
        "--cache-dir",
        type=Path,
        default=DEFAULT_CACHE,
        help=f"where the venvs live (default {DEFAULT_CACHE})",
    )
    ap.add_argument(
        "--out-dir",
        type=Path,
        default=REPO / "bench-out",
        help="where the JSON and Markdown go (default <repo>/bench-out)",
    )
    ap.add_argument(
        "--harness-dir",
        help=f"folder of rlm_bench.py (default ${HARNESS_ENV_VAR} or <repo>/../shared/bench)",
    )
    ap.add_argument("--label", default="", help="free text stored in the JSON")
    ap.add_argument(
        "--from-json",
        metavar="RUN.json",
        type=Path,
        help="print the table of a stored run (no runs); with --markdown as Markdown",
    )
    ap.add_argument("--markdown", action="store_true", help="with --from-json: Markdown output")
    args = ap.parse_args(argv)
    if args.smoke:
        args.quick = args.rlmx_only = args.no_install = args.no_calibration = True
        args.only = args.only or "S1"
    if not args.repeats:
        args.repeats = 1 if args.quick else 3
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.from_json:
        print(report(json.loads(args.from_json.read_text()), markdown=args.markdown))
        return 0
    t_start = time.perf_counter()
    harness = harness_dir(args.harness_dir).resolve()
    hb = load_harness(harness)
    names = selection(args)
    install = not args.no_install
    args.cache_dir.mkdir(parents=True, exist_ok=True)

    interps: dict[str, Interp] = {}
    try:
        interps["rlmx"] = rlmx_interp(args.cache_dir, install)
        if not args.rlmx_only:
            interps["rlms"] = rlms_interp(args.cache_dir, install)
    except RuntimeError as exc:
        sys.exit(f"[bench] {exc}")
    for it in interps.values():
        print(
            f"[bench] {it.name}: {it.version} from {it.rlm_file} (python {it.python}, "
            f"psutil {'yes' if it.psutil else 'NO: memory of REPL subprocesses not seen'})",
            file=sys.stderr,
        )

    results: dict[str, Any] = {
        "tool": "benchmarks/run.py",
        "label": args.label,
        "command": "python benchmarks/run.py "
        + shlex.join(argv if argv is not None else sys.argv[1:]),
        "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": hb.machine_meta(),
        "harness_version": hb.HARNESS_VERSION,
        "repeats": args.repeats,
        "quick": args.quick,
        "noise_start": noise_now(),
        "interpreters": {k: vars(v) | {"env": None} for k, v in interps.items()},
        "packages": {},
    }
    pkgs = {name: {"scenarios": {}} for name in interps}
    results["packages"] = pkgs

    if not args.no_calibration:
        print("[bench] C0 calibration (machine floors) ...", file=sys.stderr, flush=True)
        pkgs["calibration"] = {"scenarios": {}}
        run = run_job(
            interps["rlmx"], harness / "rlm_bench.py", "C0", min(args.repeats, 3), args, harness
        )
        merge(pkgs["calibration"], run, "C0")

    for scen in names:
        order = [
            p
            for p in ("rlms", "rlmx")
            if p in interps and (p == "rlmx" or scen in HARNESS_SCENARIOS)
        ]
        reps = 1 if scen in SINGLE_PROCESS else args.repeats
        for rep in range(reps):
            for pkg in order if rep % 2 == 0 else order[::-1]:
                print(
                    f"[bench] {scen} {pkg} repeat {rep + 1}/{reps} ...", file=sys.stderr, flush=True
                )
                run = run_job(interps[pkg], script_for(scen, harness), scen, 1, args, harness)
                merge(pkgs[pkg], run, scen)

    for pkg in pkgs.values():
        for sres in pkg["scenarios"].values():
            hb.summarize_scenario(sres)
        pkg["noise"] = hb.noise_summary(pkg) if pkg["scenarios"] else None
    results["noise_end"] = noise_now()
    results["total_s"] = round(time.perf_counter() - t_start, 1)
    results["table"] = build_rows(results)

    args.out_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    out_json = args.out_dir / f"run-{stamp}.json"
    out_json.write_text(json.dumps(results, indent=1, default=str))
    shutil.copyfile(out_json, args.out_dir / "latest.json")
    out_md = out_json.with_suffix(".md")
    out_md.write_text(report(results, markdown=True))
    shutil.copyfile(out_md, args.out_dir / "latest.md")
    print()
    print(report(results))
    print(f"wrote {out_json} and {out_md}")
    return 0


def report(results: dict[str, Any], markdown: bool = False) -> str:
    """The header lines and the table of a results dict (fresh or loaded from JSON)."""
    rows = build_rows(results)
    header = summary_header(results)
    legend = (
        "medians over correct runs; (!) = no correct run, shown from incorrect ones; "
        "floors from C0 in the same run"
    )
    if markdown:
        return "\n".join([*(f"- {h}" for h in header), "", render(rows, True), "", legend, ""])
    return "\n".join([*header, "", render(rows), "", legend])


def summary_header(results: dict[str, Any]) -> list[str]:
    m = results["machine"]
    noise = {k: v.get("noise") for k, v in results["packages"].items() if v.get("noise")}
    lines = [
        f"command: {results['command']}",
        f"date: {results['started_utc']}  total: {results['total_s']} s  "
        f"repeats: {results['repeats']}{'  (quick)' if results['quick'] else ''}",
        f"machine: {m['cpu_model']}, {m['cpu_affinity']} cpus, {m['mem_total_gb']} GB, "
        f"python {m['python']}, {platform.system()}",
        "engines: "
        + "; ".join(
            f"{k}: {v.get('version')} ({_sha(results['packages'].get(k, {}).get('rlm_version'))})"
            for k, v in results.get("interpreters", {}).items()
        ),
        f"load average at start {_la(results['noise_start'])}, at end {_la(results['noise_end'])}"
        f"; cpu pressure (some avg10 %) start {results['noise_start']['cpu_psi10']}, "
        f"end {results['noise_end']['cpu_psi10']}",
    ]
    for k, v in noise.items():
        lines.append(
            f"noise during {k} samples: load1 min/med/max "
            f"{_triple(v.get('loadavg1_min_med_max'))}, cpu-psi10 min/med/max "
            f"{_triple(v.get('cpu_psi10_min_med_max'))}"
        )
    return lines


def _sha(version: str | None) -> str:
    """The harness's source digest of the benchmarked package ("src-sha256:...")."""
    return next((w for w in (version or "").split() if w.startswith("src-sha256:")), "?")


def _la(n: dict[str, Any]) -> str:
    la = n.get("loadavg")
    return "/".join(f"{x:.2f}" for x in la) if la else "?"


def _triple(t: list[float] | None) -> str:
    return "/".join(f"{x:.2f}" for x in t) if t else "?"


if __name__ == "__main__":
    sys.exit(main())
