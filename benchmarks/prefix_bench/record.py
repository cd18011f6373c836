"""Recording: the scripted trajectory both engines run, and every root call's messages.

rlmx runs on its ``scripted`` backend; rlms 0.1.3 (or any rlms-shaped ``rlm``) runs with
``get_client`` returning a recording subclass of its own ``BaseLM``. ``record_in`` records
in another interpreter (rlms's venv) through ``prefix_cache.py --record``.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ENTRY = Path(__file__).resolve().parents[1] / "prefix_cache.py"  # its --record mode
ONESHOT_ITERATIONS = 15
TURNS, TURN_ITERATIONS = 5, 3
MAX_ITERATIONS = 20

CONTEXT = "Inventory log.\n" + "".join(
    f"item {i:03d}: {['apples', 'pears', 'plums'][i % 3]}, qty {i * 7 % 50}\n" for i in range(120)
)
QUESTION = "How many different fruits appear in the inventory log?"
# Summary requests: a call after one of these that rewrites the conversation is a compaction.
COMPACTION_MARKERS = ("Summarise your progress", "Summarize your progress")

Message = dict[str, Any]

# -- the scripted trajectory (both engines) ------------------------------------------------


def scripted_reply(messages: list[Message], submit_at: int) -> str:
    """The reply to a root call: iteration ``i`` (1-based, counted from the assistant
    messages of this turn) prints a slice of the context; iteration ``submit_at`` submits."""
    i = 1 + sum(1 for m in messages if m.get("role") == "assistant")
    if i >= submit_at:
        return (
            "The three fruits are apples, pears and plums.\n"
            '```repl\nanswer["content"] = "3"\nanswer["ready"] = True\n```'
        )
    a = (i * 7) % 100
    return (
        f"Iteration {i}: reading lines {a} to {a + 4} of the log.\n"
        f"```repl\nlines = context.splitlines()\nprint(len(lines), lines[{a}:{a + 4}])\n```"
    )


def is_root(prompt: Any) -> bool:
    return (
        isinstance(prompt, list)
        and bool(prompt)
        and isinstance(prompt[0], dict)
        and prompt[0].get("role") == "system"
    )


def _copy(messages: list[Message]) -> list[Message]:
    return [{"role": str(m.get("role")), "content": str(m.get("content", ""))} for m in messages]


def _detect_package() -> str:
    from importlib import metadata

    for dist in ("rlmx", "rlms"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            return f"{dist} {metadata.version(dist)}"
    return "rlm ?"


class _Recorder:
    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.turn = 0
        self.submit_at = ONESHOT_ITERATIONS

    def reply(self, prompt: Any) -> str:
        if not is_root(prompt):
            return "sub-call reply"
        self.calls.append({"turn": self.turn, "messages": _copy(prompt)})
        return scripted_reply(prompt, self.submit_at)


def _run_trajectories(make: Callable[..., Any], rec: _Recorder) -> dict[str, Any]:
    runs: dict[str, Any] = {}
    rec.calls, rec.turn, rec.submit_at = [], 0, ONESHOT_ITERATIONS
    t = time.perf_counter()
    engine = make(persistent=False)
    try:
        answer = engine.completion(CONTEXT, root_prompt=QUESTION).response
    finally:
        with contextlib.suppress(Exception):
            engine.close()
    runs["oneshot"] = {
        "calls": rec.calls,
        "answer": answer,
        "engine_wall_ms": (time.perf_counter() - t) * 1000,
    }
    rec.calls, rec.submit_at = [], TURN_ITERATIONS
    answers = []
    t = time.perf_counter()
    engine = make(persistent=True)
    try:
        for turn in range(TURNS):
            rec.turn = turn
            ctx = f"Turn {turn} log.\n" + CONTEXT.split("\n", 1)[1][: 600 + 40 * turn]
            answers.append(engine.completion(ctx, root_prompt=f"{QUESTION} (turn {turn})").response)
    finally:
        with contextlib.suppress(Exception):
            engine.close()
    runs["persistent"] = {
        "calls": rec.calls,
        "answer": answers,
        "engine_wall_ms": (time.perf_counter() - t) * 1000,
    }
    return runs


def record_rlmx() -> dict[str, Any]:
    """rlmx: the ``scripted`` backend, whose responder records each root prompt."""
    from rlm import RLM

    rec = _Recorder()

    def make(persistent: bool) -> Any:
        return RLM(
            backend="scripted",
            backend_kwargs={"model_name": "bench-root", "responder": rec.reply},
            environment="local",
            max_iterations=MAX_ITERATIONS,
            persistent=persistent,
        )

    return {"package": _detect_package(), "runs": _run_trajectories(make, rec)}


def record_rlms() -> dict[str, Any]:
    """rlms 0.1.3 (or any rlms-shaped ``rlm``): ``rlm.core.rlm.get_client`` returns a
    subclass of its own ``BaseLM`` that records each root prompt and replies from the
    script (rlms has no scripted backend)."""
    from unittest import mock

    import rlm.core.rlm as core
    from rlm import RLM
    from rlm.clients.base_lm import BaseLM
    from rlm.core.types import ModelUsageSummary, UsageSummary

    rec = _Recorder()

    class RecordingLM(BaseLM):  # type: ignore[misc]
        def __init__(self, model_name: str = "bench-root", **kwargs: Any) -> None:
            super().__init__(model_name=model_name, **kwargs)
            self.model_name = model_name
            self.n = 0

        def completion(self, prompt: Any, *args: Any, **kwargs: Any) -> str:
            self.n += 1
            return rec.reply(prompt)

        async def acompletion(self, prompt: Any, *args: Any, **kwargs: Any) -> str:
            return self.completion(prompt)

        def _usage(self) -> Any:
            return ModelUsageSummary(
                total_calls=self.n, total_input_tokens=0, total_output_tokens=0
            )

        def get_usage_summary(self) -> Any:
            return UsageSummary(model_usage_summaries={self.model_name: self._usage()})

        def get_last_usage(self) -> Any:
            return ModelUsageSummary(total_calls=1, total_input_tokens=0, total_output_tokens=0)

    def factory(backend: Any = None, backend_kwargs: Any = None, *a: Any, **k: Any) -> Any:
        return RecordingLM(model_name=(backend_kwargs or {}).get("model_name") or "bench-root")

    def make(persistent: bool) -> Any:
        return RLM(
            backend="openai",
            backend_kwargs={"model_name": "bench-root"},
            environment="local",
            max_iterations=MAX_ITERATIONS,
            persistent=persistent,
        )

    with mock.patch.object(core, "get_client", factory):
        runs = _run_trajectories(make, rec)
    return {"package": _detect_package(), "runs": runs}


def record_here() -> dict[str, Any]:
    pkg = _detect_package()
    return record_rlmx() if pkg.startswith("rlmx") else record_rlms()


def record_in(python: str) -> dict[str, Any]:
    """Record in another interpreter (rlms's venv): this script's ``--record`` mode."""
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)  # its own rlm, not this repo's
    with tempfile.TemporaryDirectory(prefix="rlmx_prefix_") as tmp:
        out = Path(tmp) / "rec.json"
        cp = subprocess.run(
            [python, str(ENTRY), "--record", str(out)],
            env=env,
            cwd=tmp,
            capture_output=True,
            text=True,
            timeout=600,
            stdin=subprocess.DEVNULL,
        )
        if cp.returncode != 0 or not out.exists():
            raise RuntimeError(f"recording in {python} failed: {cp.stderr[-2000:]}")
        data: dict[str, Any] = json.loads(out.read_text())
        return data
