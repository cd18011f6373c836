"""The report: header lines (command, machine, load) and the table, as text or Markdown."""

from __future__ import annotations

import platform
from typing import Any

from .table import build_rows


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


def report(results: dict[str, Any], markdown: bool = False) -> str:
    """The header lines and the table of a results dict (fresh or loaded from JSON)."""
    rows = build_rows(results)
    header = summary_header(results)
    legend = (
        "medians over correct runs; (!) = no correct run, shown from incorrect ones; "
        "floors from C0 (or the scenario named) in the same run"
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
