"""From aggregated samples to table rows: metric names, medians, floors, pass/miss."""

from __future__ import annotations

from typing import Any

from .targets import TARGETS, Target, Value, _s5_flat


def _is_size(label: str) -> bool:
    """An S4 context-size variant ("10MB"), not a label such as D1's "churn1MB"."""
    return label.endswith("MB") and label[:-2].replace(".", "", 1).isdigit()


def _largest_s4(s: dict[str, Any]) -> str | None:
    labels = [k for k in s.get("samples", {}) if _is_size(k) and s["samples"][k]]
    labels = labels or [k for k in s.get("variants", {}) if _is_size(k)]
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
    if unit == "n" and float(v).is_integer():  # a count: 16, not 16.0
        return f"{int(v):,}"
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
        if t.rlms_metric:  # measured beside rlmx, in the same scenario run
            rs = rx if rx is not None and t.rlms_metric in (rx.get("metrics") or {}) else None
            ms = t.rlms_metric
        (vs, shown_s), bad_s = value_of(t, rs, ms)
        ratio = vx / vs if vx is not None and vs not in (None, 0) and t.derive is None else None
        if ratio is not None and min(vx or 0, vs or 0) < 0:  # a signed difference: no ratio
            ratio = None
        floor_txt, floor_v, floor_unit = "", None, ""
        if t.floor and t.floor[0] in floors and (t.floor[1] is not None or s4):
            key, scale, desc = t.floor
            if scale is None and s4:  # context-sized: one copy of the whole context
                scale = float(s4[:-2]) / 100
            floor_v = floors[key] * scale
            floor_unit = "µs" if key.endswith("_us") else "ms"
            floor_txt = f"{fmt_num(floor_v)} {floor_unit} ({desc})"
        elif t.floor_from:  # measured beside it: another scenario of the same run
            scen, key, desc = t.floor_from
            other = results["packages"]["rlmx"]["scenarios"].get(scen) or {}
            agg = (other.get("metrics") or {}).get(key)
            if agg and agg.get("median") is not None:
                floor_v, floor_unit = agg["median"], agg.get("unit", "")
                floor_txt = f"{fmt_unit(floor_v, floor_unit)} ({desc})"
        status = ""
        rlmx_interp = (results.get("interpreters") or {}).get("rlmx") or {}
        if t.needs_psutil and rlmx_interp and not rlmx_interp.get("psutil"):
            status = "NOT JUDGED: no psutil in the rlmx interpreter (worker memory unseen)"
        elif rx is not None and rx.get("status") == "skipped" and not rx.get("metrics"):
            status = "NOT DONE: " + _reasons(rx.get("skipped"))
        elif rx is not None and rx.get("status") == "error" and not rx.get("metrics"):
            status = "ERROR: " + _reasons(rx.get("errors"))[:300]
        label = t.label.replace("{s4}", s4 or "?")
        if t.rlms_scenario and t.rlms_scenario != t.scenario and rs is not None:
            env = ", local env" if "sandbox" in t.scenario else ""
            label += f"  [rlms: its {t.rlms_scenario}{env}]"
        want, target = t.value, _target_text(t)
        if t.target_metric:  # the target is a figure of the same run
            agg = ((rx or {}).get("metrics") or {}).get(t.target_metric) or {}
            want = agg.get("median")
            if want is not None:
                target += f" = {fmt_unit(want, agg.get('unit', ''))}"
        if t.floor_factor is not None:  # a multiple of this row's floor, same run
            want = None if floor_v is None else floor_v * t.floor_factor
            target = f"{t.op} {t.floor_factor:g}x floor"
            target += "" if want is None else f" = {fmt_num(want)} {floor_unit}"
            if want is None and not status and vx is not None:
                status = "NOT JUDGED: no floor in this run (C0 did not run)"
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
                "target": target,
                "mark": status or check(t.op, vx, want),
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
