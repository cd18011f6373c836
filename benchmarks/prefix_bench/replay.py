"""Replay and judge: each recorded sequence, call by call, to one llama.cpp server;
per call ``added`` (the prompt tokens minus those of the messages it keeps from the
previous call), ``excess`` (newly evaluated minus added) and the mark against the
target (issue 18: excess <= 32 on every call after the first; a call after a
compaction is reported apart, with its cost).
"""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path
from typing import Any

from .record import COMPACTION_MARKERS, Message
from .server import LlamaServer, render

SLACK = 32  # tokens a call may re-evaluate beyond what it adds (issue 18)


def _shared(a: list[Message], b: list[Message]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def replay(server: LlamaServer, calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Send ``calls`` in order (after a flush); one row per call, judged."""
    server.flush()
    rows: list[dict[str, Any]] = []
    prev: dict[str, Any] | None = None
    for k, call in enumerate(calls):
        msgs = call["messages"]
        got = server.chat(msgs)
        row: dict[str, Any] = {"call": k + 1, "turn": call["turn"], "messages": len(msgs), **got}
        if prev is None:
            row.update(kind="first", kept=0, added=got["prompt_tokens"])
        else:
            pm = prev["messages"]
            shared = _shared(pm, msgs)
            same_turn = call["turn"] == prev["turn"]
            if same_turn and shared == len(pm):
                kind, kept = "extend", shared
            elif not same_turn:
                kind, kept = "new turn", shared
            elif any(m in str(pm[-1].get("content", "")) for m in COMPACTION_MARKERS):
                kind, kept = "compaction", shared
            else:  # a rewrite within a turn: it keeps nothing past the first change
                kind, kept = "rewrite", shared
            kept_tokens = server.tokens(render(msgs[:kept])) if kept else 0
            row.update(kind=kind, kept=kept, added=got["prompt_tokens"] - kept_tokens)
            if kind == "rewrite":  # what it would add, had it only appended
                row["added"] = got["prompt_tokens"] - server.tokens(render(pm))
        row["excess"] = row["newly_evaluated"] - row["added"]
        row["on_target"] = (
            None if row["kind"] in ("first", "compaction") else row["excess"] <= SLACK
        )
        rows.append(row)
        prev = call
    return rows


def summarise(rows: list[dict[str, Any]]) -> dict[str, float]:
    judged = [r for r in rows if r["on_target"] is not None]
    excess = [r["excess"] for r in judged] or [0]
    sent = sum(r["prompt_tokens"] for r in rows)
    newly = sum(r["newly_evaluated"] for r in rows)
    return {
        "excess_max_n": max(excess),
        "excess_median_n": statistics.median(excess),
        "off_target_n": sum(1 for r in judged if not r["on_target"]),
        "judged_calls_n": len(judged),
        "calls_n": len(rows),
        "compactions_n": sum(1 for r in rows if r["kind"] == "compaction"),
        "compaction_cost_n": sum(r["newly_evaluated"] for r in rows if r["kind"] == "compaction"),
        "prompt_tokens_n": sent,
        "newly_evaluated_n": newly,
        "cached_pct": 100.0 * (1 - newly / sent) if sent else 0.0,
        "replay_wall_ms": sum(r["wall_ms"] for r in rows),
        "prompt_eval_ms": sum(r["prompt_eval_ms"] for r in rows),
    }


def measure(
    recordings: dict[str, dict[str, Any]], max_tokens: int, inner: int, server: tuple[str, str]
) -> dict[str, Any]:
    """Replay every recorded sequence on one llama.cpp server, ``inner`` times,
    alternating the packages' order; token counts from the first pass, wall times
    the median over passes."""
    out: dict[str, Any] = {"rows": {}, "summary": {}}
    walls: dict[str, list[float]] = {}
    with (
        tempfile.TemporaryDirectory(prefix="rlmx_prefix_srv_") as tmp,
        LlamaServer(Path(tmp), max_tokens, *server) as llama,
    ):
        llama.flush()  # model warm-up, untimed
        pkgs = list(recordings)
        for rep in range(inner):
            order = pkgs if rep % 2 == 0 else pkgs[::-1]
            for run in ("oneshot", "persistent"):
                for pkg in order:
                    rows = replay(llama, recordings[pkg]["runs"][run]["calls"])
                    key = f"{pkg}/{run}"
                    walls.setdefault(key, []).append(sum(r["wall_ms"] for r in rows))
                    if rep == 0:
                        out["rows"][key] = rows
                        out["summary"][key] = summarise(rows)
    for key, ws in walls.items():
        out["summary"][key]["replay_wall_ms"] = statistics.median(ws)
    return out
