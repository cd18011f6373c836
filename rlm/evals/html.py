"""The report as one self-contained HTML page: tables and inline SVG plots, no scripts.

``render_html(report)`` returns the page; ``write_html(report, path)`` writes it. The
page loads nothing (a ``default-src 'none'`` policy; styles inline), so it opens from
a file, an attachment or an archive. Plots: score against context length per method,
one per task family (error bars: ± one standard deviation), and cost against score
(mean cost per item in USD when every method reported cost, else mean tokens per item,
and the axis says which). Every value from the rows is escaped.
"""

from __future__ import annotations

from collections import defaultdict
from html import escape
from pathlib import Path
from typing import Any

from rlm.evals.svg import Point, Series, color, line_chart, scatter

CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:1180px;color:#222;padding:0 16px}
h1{font-size:22px} h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:8px 0;font-size:13px} td,th{border:1px solid #ddd;padding:3px 7px;text-align:right}
th{background:#f4f4f4} td.l,th.l{text-align:left}
.note{background:#fff4d6;border:1px solid #e6c35c;padding:8px 12px;margin:8px 0;border-radius:4px}
.plots{display:flex;flex-wrap:wrap;gap:12px}
svg.plot{border:1px solid #ddd;background:#fafafa;font-size:11px}
svg .title{font-size:13px;font-weight:600} svg .axis{font-size:12px}
.muted{color:#777} code{background:#f4f4f4;padding:0 3px}
"""
POLICY = "default-src 'none'; style-src 'unsafe-inline'"


def _num(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return escape(str(value))


def _score(cell: dict[str, Any]) -> str:
    if cell.get("mean") is None:
        return '<span class="muted">no score</span>'
    text = f"{cell['mean']:.3f}"
    if cell.get("std") is not None:
        text += f" ± {cell['std']:.3f}"
    if cell.get("ci95"):
        lo, hi = cell["ci95"]
        text += f' <span class="muted">[{lo:.2f}, {hi:.2f}]</span>'
    return text


def _cost(cell: dict[str, Any]) -> str:
    if cell.get("cost_total") is None:
        return '<span class="muted">unknown</span>'
    known = "" if cell["cost_known"] == cell["n"] else f" ({cell['cost_known']}/{cell['n']})"
    return f"${cell['cost_total']:.4f}{known}"


def _failures(cell: dict[str, Any]) -> str:
    return ", ".join(f"{escape(k)}: {v}" for k, v in cell.get("failures", {}).items()) or "–"


def _table(cells: list[dict[str, Any]], with_length: bool) -> str:
    head = ["method", "family"] + (["length"] if with_length else [])
    head += [
        "n",
        "scored",
        "score (mean ± sd [95% CI])",
        "tokens in",
        "tokens out",
        "calls",
        "cost",
        "wall s (mean)",
        "context cut",
        "failures",
    ]
    rows = [
        "<tr>"
        + "".join(
            f'<th class="l">{h}</th>' if i < 3 else f"<th>{h}</th>" for i, h in enumerate(head)
        )
        + "</tr>"
    ]
    for c in cells:
        cols = [escape(c["method"]), escape(c["family"])]
        cols += [escape(str(c["length_label"]))] if with_length else []
        left = "".join(f'<td class="l">{v}</td>' for v in cols)
        right = [
            str(c["n"]),
            str(c["n_scored"]),
            _score(c),
            _num(c["input_tokens"], 0),
            _num(c["output_tokens"], 0),
            _num(c["calls"], 1),
            _cost(c),
            _num(c["wall_mean"], 2),
            f"{c.get('n_truncated', 0)}/{c['n']}" if c.get("n_truncated") else "–",
            _failures(c),
        ]
        rows.append("<tr>" + left + "".join(f"<td>{v}</td>" for v in right) + "</tr>")
    return "<table>" + "".join(rows) + "</table>"


def _method_colors(report: dict[str, Any]) -> dict[str, str]:
    names = [m["method"] for m in report.get("methods", [])]
    return {name: color(i) for i, name in enumerate(names)}


def score_plots(report: dict[str, Any]) -> list[str]:
    """One score-vs-length chart per family."""
    colors = _method_colors(report)
    by_family: dict[str, dict[str, list[Point]]] = defaultdict(lambda: defaultdict(list))
    ticks: dict[str, dict[float, str]] = defaultdict(dict)
    for cell in report.get("cells", []):
        x = float(cell.get("length_tokens") or 0)
        if x <= 0:
            continue
        ticks[cell["family"]][x] = str(cell["length_label"])
        if cell.get("mean") is None:
            continue
        label = f"{cell['method']} @ {cell['length_label']}: {_score(cell).split(' <')[0]} (n={cell['n_scored']})"
        by_family[cell["family"]][cell["method"]].append(
            Point(x, cell["mean"], label, cell.get("std"))
        )
    charts = []
    for family in sorted(ticks):
        series = [Series(m, pts, colors.get(m, color(0))) for m, pts in by_family[family].items()]
        xticks = sorted(ticks[family].items())
        charts.append(
            line_chart(
                f"{family}: score vs context length",
                series,
                xticks,
                "context length (tokens, log scale)",
                "score",
                attrs=f'data-family="{escape(family)}"',
            )
        )
    return charts


def cost_plot(report: dict[str, Any]) -> str | None:
    """Cost (or tokens) per item against score, one point per method and family."""
    families = [f for f in report.get("families", []) if f.get("mean") is not None]
    if not families:
        return None
    use_cost = all(f.get("cost_mean") is not None and f["cost_known"] == f["n"] for f in families)
    colors = _method_colors(report)
    points: dict[str, list[Point]] = defaultdict(list)
    for f in families:
        if use_cost:
            x = float(f["cost_mean"])
            shown = f"${x:.4f}"
        else:
            x = float((f.get("input_tokens") or 0) + (f.get("output_tokens") or 0))
            shown = f"{x:,.0f} tokens"
        points[f["method"]].append(
            Point(x, f["mean"], f"{f['method']} on {f['family']}: {f['mean']:.3f} at {shown}")
        )
    series = [Series(m, pts, colors.get(m, color(0))) for m, pts in points.items()]
    xlabel = "mean cost per item (USD)" if use_cost else "mean tokens per item (cost not reported)"
    return scatter(
        "cost vs score (per method and family)",
        series,
        xlabel,
        "mean score",
        attrs=f'data-x="{"cost" if use_cost else "tokens"}"',
    )


def _run_info(report: dict[str, Any]) -> str:
    suite, run, items = report.get("suite", {}), report.get("run", {}), report.get("items", {})
    facts = [
        ("generated", report.get("generated_at")),
        ("engine", run.get("engine")),
        (
            "items planned / with a result / missing",
            f"{items.get('planned')} / {items.get('with_result')} / {items.get('missing')}",
        ),
        ("items run this session", run.get("ran")),
        ("skipped (already done)", run.get("skipped")),
        ("elapsed this session (s)", _num(run.get("elapsed"), 1)),
        ("families", ", ".join(suite.get("families") or [])),
        ("lengths", ", ".join(str(x) for x in suite.get("lengths") or [])),
        ("seeds", ", ".join(str(x) for x in suite.get("seeds") or [])),
        ("datasets", ", ".join(d.get("name", "?") for d in suite.get("datasets") or []) or "–"),
        ("rlmx", suite.get("rlmx_version")),
    ]
    rows = "".join(
        f'<tr><th class="l">{escape(k)}</th><td class="l">{escape(str(v))}</td></tr>'
        for k, v in facts
        if v not in (None, "")
    )
    methods = "".join(
        f'<tr><td class="l">{escape(str(m.get("name")))}</td><td class="l">{escape(str(m.get("kind")))}</td>'
        f'<td class="l">{escape(str(m.get("backend")))}</td><td class="l"><code>'
        f"{escape(str({**m.get('backend_kwargs', {}), **m.get('rlm_kwargs', {})}))}</code></td></tr>"
        for m in suite.get("methods") or []
    )
    return (
        f"<table>{rows}</table><h2>Methods</h2><table><tr><th class='l'>name</th>"
        f"<th class='l'>kind</th><th class='l'>backend</th><th class='l'>settings</th></tr>"
        f"{methods}</table>"
    )


def render_html(report: dict[str, Any]) -> str:
    """The page for ``report`` (a ``build_report`` dict)."""
    title = escape(str(report.get("title") or "rlmx evaluation"))
    notes = "".join(f'<div class="note">{escape(n)}</div>' for n in report.get("notes", []))
    plots = score_plots(report)
    cost = cost_plot(report)
    plot_html = "".join(plots) + (cost or "")
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f'<meta http-equiv="Content-Security-Policy" content="{POLICY}">'
        f"<meta name='viewport' content='width=device-width'><title>{title}</title>"
        f"<style>{CSS}</style></head><body><h1>{title}</h1>{notes}"
        f"{_run_info(report)}"
        f"<h2>Plots</h2><div class='plots'>{plot_html or '<p class=muted>no scored cells</p>'}</div>"
        f"<h2>Per method</h2>{_table([{**m, 'family': 'all'} for m in report.get('methods', [])], False)}"
        f"<h2>Per method and family</h2>{_table(report.get('families', []), False)}"
        f"<h2>Per method, family and context length</h2>{_table(report.get('cells', []), True)}"
        "<p class='muted'>Scores are means over scored items; failed runs have no score and "
        "are counted under failures. Interval: 95 % percentile bootstrap of the mean.</p>"
        "</body></html>"
    )


def write_html(report: dict[str, Any], path: str | Path) -> Path:
    target = Path(path)
    target.write_text(render_html(report), encoding="utf-8")
    return target
