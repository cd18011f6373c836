"""The sub-call cache shared by processes: real ``python`` subprocesses, one SQLite file,
one loopback OpenAI-compatible server counting the requests that reach it."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from loopback_model import loopback_model

from rlm.sessions.call_store import CallStore

pytest.importorskip("openai")

REPO = Path(__file__).resolve().parents[2]

RUN = """
import json, sys
from rlm import RLM
url, path = sys.argv[1], sys.argv[2]
kwargs = {"base_url": url, "model_name": "gpt-4o-mini", "api_key": "sk-test",
          "sampling_args": {"temperature": 0}}
with RLM(backend="openai", backend_kwargs=kwargs, cache=path, max_iterations=3) as rlm:
    result = rlm.completion("a context", root_prompt="Which parts?")
usage = result.usage_summary
print(json.dumps({"response": result.response, "calls": usage.total_calls,
                  "cached": usage.cached_calls, "cost": usage.total_cost,
                  "saved_cost": usage.saved_cost}))
"""

WRITE = """
import pathlib, sys, time
from rlm.sessions.call_store import CallStore
path, tag, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
folder = pathlib.Path(path).parent
store = CallStore(path)
(folder / (tag + ".ready")).touch()
end = time.monotonic() + 60
while not (folder / "go").exists() and time.monotonic() < end:  # start together
    time.sleep(0.01)
for i in range(n):
    store.put(f"{tag}-{i}", {"text": f"{tag} {i}"}, model="m", input_tokens=i,
              output_tokens=1, cost=None)
    assert store.get(f"{tag}-{i}", lambda v: v["text"]) == f"{tag} {i}"
print("ok")
"""

REPLY = (
    "```repl\nparts = llm_query_batched(['SUB one', 'SUB two'])\n"
    "answer['content'] = ' & '.join(parts)\nanswer['ready'] = True\n```"
)


def reply(n: int, body: dict[str, Any]) -> str:
    last = str(body["messages"][-1]["content"])
    return "part " + last.split()[-1] if last.startswith("SUB") else REPLY


def python(script: str, *args: str, home: Path) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RLM_", "OPENAI_"))}
    env.update(HOME=str(home), PYTHONPATH=str(REPO), XDG_CACHE_HOME=str(home / "cache"))
    return subprocess.Popen(
        [sys.executable, "-c", script, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=home,
    )


def finished(proc: subprocess.Popen[str]) -> str:
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    return out


def test_a_second_process_is_answered_from_the_first_ones_calls(tmp_path: Path) -> None:
    path = tmp_path / "shared" / "calls.db"
    with loopback_model(reply) as server:
        first = json.loads(finished(python(RUN, server.url, str(path), home=tmp_path)))
        assert server.calls == 3  # the root call and the batch's two prompts
        second = json.loads(finished(python(RUN, server.url, str(path), home=tmp_path)))
        assert server.calls == 3  # nothing reached the server
    assert first["response"] == second["response"] == "part one & part two"
    assert (first["calls"], first["cached"]) == (3, 0)
    assert (second["calls"], second["cached"]) == (0, 3)
    assert first["cost"] > 0 and second["cost"] == 0.0
    assert second["saved_cost"] == pytest.approx(first["cost"])
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    stats = CallStore(path).stats()
    assert (stats.entries, stats.hits) == (3, 3)


def test_two_processes_write_the_same_file_at_once(tmp_path: Path) -> None:
    path = tmp_path / "calls.db"
    procs = [python(WRITE, str(path), tag, "400", home=tmp_path) for tag in ("a", "b")]
    end = time.monotonic() + 60
    while not all((tmp_path / f"{t}.ready").exists() for t in "ab") and time.monotonic() < end:
        time.sleep(0.01)
    (tmp_path / "go").touch()  # both processes write from now on, at once
    for proc in procs:
        assert finished(proc).strip() == "ok"
    stats = CallStore(path).stats()
    assert stats.entries == 800
    assert stats.hits == 800
    assert stats.saved_input_tokens == 2 * sum(range(400))
