"""Inline SVG charts for the report: a line chart and a scatter plot, no scripts.

Every text is escaped; every number is formatted here, so a chart is a plain string
that can sit in an HTML page with a ``default-src 'none'`` policy. Series carry
``data-*`` attributes so tests can find what was drawn.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from html import escape

WIDTH, HEIGHT = 560, 320
LEFT, RIGHT, TOP, BOTTOM = 56, 150, 28, 44
PALETTE = (
    "#1f77b4",
    "#d62728",
    "#2ca02c",
    "#9467bd",
    "#ff7f0e",
    "#17becf",
    "#8c564b",
    "#e377c2",
)


def color(index: int) -> str:
    return PALETTE[index % len(PALETTE)]


@dataclass
class Point:
    x: float
    y: float
    label: str = ""  # the tooltip
    spread: float | None = None  # +/- on y (an error bar)


@dataclass
class Series:
    name: str
    points: list[Point] = field(default_factory=list)
    color: str = PALETTE[0]


def _fmt(value: float) -> str:
    return f"{value:.1f}"


def _nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    if high <= low:
        high = low + 1
    raw = (high - low) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    ticks, value = [], math.floor(low / step) * step
    while True:  # the last tick is at or past ``high``: every point stays in the frame
        ticks.append(round(value, 12))
        if value >= high - step * 1e-9:
            return ticks
        value += step


def _tick_label(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 1:
        return f"{value:g}"
    return f"{value:.3g}"


class _Frame:
    def __init__(self, xs: Sequence[float], ys: tuple[float, float], log_x: bool) -> None:
        self.log_x = log_x
        tx = [math.log2(x) if log_x else x for x in xs] or [0.0, 1.0]
        self.x0, self.x1 = min(tx), max(tx)
        if self.x0 == self.x1:
            self.x0, self.x1 = self.x0 - 1, self.x1 + 1
        if log_x:  # room at both ends for the markers
            pad = (self.x1 - self.x0) * 0.06
            self.x0, self.x1 = self.x0 - pad, self.x1 + pad
        self.y0, self.y1 = ys
        self.w, self.h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def px(self, x: float) -> float:
        t = math.log2(x) if self.log_x else x
        return LEFT + (t - self.x0) / (self.x1 - self.x0) * self.w

    def py(self, y: float) -> float:
        return TOP + self.h - (y - self.y0) / (self.y1 - self.y0) * self.h


def _axes(
    frame: _Frame,
    xticks: Sequence[tuple[float, str]],
    yticks: Sequence[float],
    xlabel: str,
    ylabel: str,
) -> list[str]:
    bottom, right = TOP + frame.h, LEFT + frame.w
    out = [
        f'<rect x="{LEFT}" y="{TOP}" width="{frame.w}" height="{frame.h}" fill="#fff" stroke="#999"/>'
    ]
    for y in yticks:
        py = _fmt(frame.py(y))
        out.append(f'<line x1="{LEFT}" y1="{py}" x2="{right}" y2="{py}" stroke="#eee"/>')
        out.append(
            f'<text x="{LEFT - 6}" y="{py}" text-anchor="end" dy="4">{escape(_tick_label(y))}</text>'
        )
    for x, label in xticks:
        px = _fmt(frame.px(x))
        out.append(f'<line x1="{px}" y1="{bottom}" x2="{px}" y2="{bottom + 4}" stroke="#666"/>')
        out.append(f'<text x="{px}" y="{bottom + 16}" text-anchor="middle">{escape(label)}</text>')
    out.append(
        f'<text x="{LEFT + frame.w / 2:.0f}" y="{HEIGHT - 6}" text-anchor="middle" class="axis">{escape(xlabel)}</text>'
    )
    out.append(
        f'<text x="14" y="{TOP + frame.h / 2:.0f}" text-anchor="middle" class="axis" '
        f'transform="rotate(-90 14 {TOP + frame.h / 2:.0f})">{escape(ylabel)}</text>'
    )
    return out


def _legend(series: Sequence[Series]) -> list[str]:
    out = []
    for i, s in enumerate(series):
        y = TOP + 8 + i * 18
        x = WIDTH - RIGHT + 12
        out.append(f'<rect x="{x}" y="{y - 8}" width="12" height="12" fill="{s.color}"/>')
        out.append(f'<text x="{x + 18}" y="{y + 2}">{escape(s.name[:18])}</text>')
    return out


def _svg(kind: str, title: str, body: list[str], attrs: str = "") -> str:
    return (
        f'<svg class="plot" data-plot="{escape(kind)}" {attrs} xmlns="http://www.w3.org/2000/svg" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" role="img" '
        f'aria-label="{escape(title)}"><title>{escape(title)}</title>'
        f'<text x="{LEFT}" y="18" class="title">{escape(title)}</text>' + "".join(body) + "</svg>"
    )


def _marker(s: Series, p: Point, frame: _Frame, dodge: float = 0.0) -> list[str]:
    cx, cy = _fmt(frame.px(p.x) + dodge), _fmt(frame.py(p.y))
    out = []
    if p.spread:
        lo = frame.py(max(frame.y0, p.y - p.spread))
        hi = frame.py(min(frame.y1, p.y + p.spread))
        out.append(
            f'<line class="errbar" x1="{cx}" y1="{_fmt(lo)}" x2="{cx}" y2="{_fmt(hi)}" stroke="{s.color}"/>'
        )
    out.append(
        f'<circle class="point" cx="{cx}" cy="{cy}" r="4" fill="{s.color}">'
        f"<title>{escape(p.label)}</title></circle>"
    )
    return out


def line_chart(
    title: str,
    series: Sequence[Series],
    xticks: Sequence[tuple[float, str]],
    xlabel: str,
    ylabel: str,
    attrs: str = "",
) -> str:
    """Lines over a log2 x axis (context length), y in [0, 1] (a score)."""
    xs = [x for x, _ in xticks] + [p.x for s in series for p in s.points]
    frame = _Frame(xs, (0.0, 1.0), log_x=True)
    body = _axes(frame, xticks, [0, 0.25, 0.5, 0.75, 1.0], xlabel, ylabel)
    for i, s in enumerate(series):
        dodge = (i - (len(series) - 1) / 2) * 5  # series that coincide stay visible
        pts = sorted(s.points, key=lambda p: p.x)
        body.append(f'<g class="series" data-method="{escape(s.name)}">')
        if len(pts) > 1:
            coords = " ".join(f"{_fmt(frame.px(p.x) + dodge)},{_fmt(frame.py(p.y))}" for p in pts)
            body.append(
                f'<polyline points="{coords}" fill="none" stroke="{s.color}" stroke-width="2"/>'
            )
        for p in pts:
            body += _marker(s, p, frame, dodge)
        body.append("</g>")
    return _svg("line", title, body + _legend(series), attrs)


def scatter(title: str, series: Sequence[Series], xlabel: str, ylabel: str, attrs: str = "") -> str:
    """Points (x from 0 to the largest value, y in [0, 1]), one colour per series."""
    xs = [p.x for s in series for p in s.points]
    top = max(xs) if xs and max(xs) > 0 else 1.0
    ticks = _nice_ticks(0.0, top)
    frame = _Frame([0.0, ticks[-1]], (0.0, 1.0), log_x=False)
    body = _axes(
        frame, [(t, _tick_label(t)) for t in ticks], [0, 0.25, 0.5, 0.75, 1.0], xlabel, ylabel
    )
    for s in series:
        body.append(f'<g class="series" data-method="{escape(s.name)}">')
        for p in s.points:
            body += _marker(s, p, frame)
        body.append("</g>")
    return _svg("scatter", title, body + _legend(series), attrs)
