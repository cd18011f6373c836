"""Trajectory viewer: one self-contained HTML file for a run log.

    from rlm.viewer import write_html
    write_html("logs/rlm_2025-01-01_12-00-00_ab12cd34.jsonl")  # -> ...jsonl.html

The page needs no network and no build step: CSS, script and data are inline. On top
it tells the story: the question, the whole answer (Markdown), the outcome and the
run's true totals. Below: the tree of runs (child RLMs, session turns), per run a chart
of where time and tokens went, and the iterations, each titled by what it did (reply as
Markdown with code blocks intact, code, stdout/stderr, sub-calls, variable summaries;
the final "answer now" call labelled as such), usage and cost per node, and a search
box. Older logs (whole variables, no run records) render too. Called by ``rlm view``;
see docs/viewer.md.
"""

from __future__ import annotations

import os
from pathlib import Path

from rlm.viewer.build import build_view
from rlm.viewer.page import assemble
from rlm.viewer.source import Source, load_source

__all__ = ["default_output_path", "render_html", "write_html"]


def render_html(trajectory_or_path: Source, title: str | None = None) -> str:
    """The viewer page for a run, as a string.

    ``trajectory_or_path`` is a JSONL log written by ``RLMLogger`` (a path), the
    ``{"run_metadata": ..., "iterations": [...]}`` dict from ``RLMLogger.get_trajectory()``
    or ``RLMChatCompletion.metadata``, or an ``RLMChatCompletion`` (object or dict).
    Raises ``ValueError`` for something that is not a run log, ``OSError`` for a
    file that cannot be read.
    """
    view = build_view(load_source(trajectory_or_path), title)
    return assemble(view, view["title"])


def default_output_path(source: str | os.PathLike[str]) -> Path:
    """Where ``write_html`` puts the page for a log file: beside it, ``.html`` added."""
    path = Path(source)
    return path.with_name(path.name + ".html")


def write_html(
    source: Source, out_path: str | os.PathLike[str] | None = None, *, title: str | None = None
) -> Path:
    """Render ``source`` (as for ``render_html``) and write the page; returns its path.

    Without ``out_path`` the page goes beside a log file (``default_output_path``); an
    in-memory source then needs an explicit ``out_path``.
    """
    if out_path is None:
        if not isinstance(source, str | os.PathLike):
            raise ValueError("write_html needs out_path when the source is not a file")
        out_path = default_output_path(source)
    page = render_html(source, title)
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    return out
