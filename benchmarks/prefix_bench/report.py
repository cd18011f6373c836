"""The table: the judged calls as the harness's metrics, and as a per-call text table."""

from __future__ import annotations

from typing import Any


def format_rows(rows: list[dict[str, Any]]) -> str:
    head = "call turn kind       msgs  prompt  added  newly  excess  target"
    lines = [head]
    for r in rows:
        mark = {None: "-", True: "ok", False: "MISS"}[r["on_target"]]
        lines.append(
            f"{r['call']:>4} {r['turn']:>4} {r['kind']:<10} {r['messages']:>4} "
            f"{r['prompt_tokens']:>7} {r['added']:>6} {r['newly_evaluated']:>6} "
            f"{r['excess']:>7}  {mark}"
        )
    return "\n".join(lines)


def harness_sample(res: dict[str, Any]) -> dict[str, Any]:
    """One harness sample from ``run_all``'s result: rlmx's figures as ``<run>_<name>``,
    another package's as ``<package>_<run>_<name>``; correct when every answer is "3"."""
    metrics: dict[str, float] = {}
    for pkg in res["packages"]:
        prefix = "" if pkg == "rlmx" else f"{pkg}_"
        for run in ("oneshot", "persistent"):
            s = res["summary"][f"{pkg}/{run}"]
            for name, value in s.items():
                metrics[f"{prefix}{run}_{name}"] = value
            engine = res["engine_wall_ms"][f"{pkg}/{run}"]
            metrics[f"{prefix}{run}_engine_wall_ms"] = engine
            metrics[f"{prefix}{run}_answer_wall_ms"] = engine + s["replay_wall_ms"]
    ok = all(
        a == "3" or (isinstance(a, list) and all(x == "3" for x in a))
        for a in res["answers"].values()
    )
    detail = {
        "packages": res["packages"],
        "answers": res["answers"],
        "rows": {
            k: [{x: r[x] for x in r if x != "on_target"} | {"ok": r["on_target"]} for r in rows]
            for k, rows in res["rows"].items()
        },
    }
    return {"metrics": metrics, "correct": ok, "detail": detail}
