"""From a loaded log to the page's data: the run tree plus a header summary."""

from __future__ import annotations

from typing import Any

from rlm.base.redact import redact_text
from rlm.viewer.model import SIDE_TEXT_CAP, RunView, ViewModel, number, text
from rlm.viewer.source import LoadedLog
from rlm.viewer.tree import TreeBuilder
from rlm.viewer.usage import add_usage

_META_SHOWN = ("backend", "environment_type", "max_depth", "max_iterations", "other_backends")


def build_view(log: LoadedLog, title: str | None = None) -> ViewModel:
    """Build the page's data (the ``ViewModel`` JSON schema) from a loaded log."""
    builder = TreeBuilder()
    roots = builder.add_log(log.records, None, 0)
    extra = [r for r in log.records if r.get("type") != "iteration" and "usage_summary" in r]
    builder.finish(log.completion.get("usage_summary"), extra)
    runs, iters = builder.runs, builder.iters
    main = runs[roots[0]] if roots else None
    return {
        "title": title or (f"RLM trajectory · {log.name}" if log.name else "RLM trajectory"),
        "source": log.name,
        "roots": roots,
        "runs": runs,
        "iters": iters,
        "summary": _summary(log, main, runs, builder),
    }


def _final_answer(main: RunView | None, builder: TreeBuilder) -> str | None:
    if main is None:
        return None
    for index in reversed(main["iterations"]):
        iteration = builder.iters[index]
        if iteration["final"] is not None:
            return iteration["final"]
        for block in reversed(iteration["blocks"]):
            if block["final"] is not None:
                return block["final"]
    return None


def _question(main: RunView | None, completion: dict[str, Any]) -> str | None:
    """What the user asked: the root run's root prompt; for a result whose run had
    none (``completion(prompt)`` alone), the prompt itself, which is then the task."""
    if main is not None and main["question"] is not None:
        return main["question"]
    prompt = completion.get("prompt")
    return text(prompt, SIDE_TEXT_CAP) if isinstance(prompt, str) and prompt.strip() else None


def _summary(
    log: LoadedLog, main: RunView | None, runs: list[RunView], builder: TreeBuilder
) -> dict[str, Any]:
    meta = (main["metadata"] if main else None) or {}
    completion = log.completion
    calls = [c for i in builder.iters for b in i["blocks"] for c in b["calls"]]
    tops = [r for r in runs if r["parent"] is None]
    usage = tops[0]["usage"] if len(tops) == 1 else add_usage(r["usage"] for r in tops)
    outcome = main["outcome"] if main else None
    answer = completion.get("response")
    if answer is None and main is not None and main["response"] is not None:
        answer = main["response"]
    own = [builder.iters[i] for i in main["iterations"]] if main else []
    error = completion.get("error") or (outcome["error"] if outcome else None)
    elapsed = number(completion.get("execution_time"))
    return {
        "model": meta.get("root_model") or completion.get("root_model"),
        "meta": {k: meta[k] for k in _META_SHOWN if meta.get(k) is not None},
        "started": meta.get("timestamp") if isinstance(meta.get("timestamp"), str) else None,
        "question": _question(main, completion),
        "context": main["context"] if main else None,
        "runs": len(runs),
        "child_runs": len(runs) - len(tops),
        "iterations": sum(1 for i in own if not i["final_call"]),
        "final_call": any(i["final_call"] for i in own),
        "all_iterations": len(builder.iters),
        "subcalls": len(calls),
        "errors": sum(1 for i in builder.iters if i["error"]),
        "usage": usage,
        "usage_reported": all(r["usage_reported"] for r in tops) if tops else False,
        "answer": text(answer) if answer is not None else _final_answer(main, builder),
        "outcome": outcome["outcome"] if outcome else None,
        "execution_time": elapsed
        if elapsed is not None
        else (outcome["time"] if outcome else None),
        "error": redact_text(text(error)) if error else None,
    }
