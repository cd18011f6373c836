"""Trajectories for the viewer tests (imported by ``conftest.py`` and the tests): a real run log, and a big synthetic one.

The real log comes from ``RLM(logger=RLMLogger(log_dir=...))`` driven by the scripted
model at ``max_depth=2``: the root makes an ``llm_query`` sub-call, spawns a child RLM
(which makes its own sub-call), hits an exception, prints a long output and replies
with a script-injection payload before it answers.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any
from unittest import mock

import rlm.core.rlm
from rlm import RLM
from rlm.base.types import Prompt, RLMChatCompletion
from rlm.clients.scripted import ScriptedLM
from rlm.logger import RLMLogger

MODEL = "scripted-viewer-model"
ROOT_TASK = "VIEWER ROOT TASK"
XSS = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">'
LONG_TAIL = "END-OF-LONG-OUTPUT"

ROOT_REPLIES = [
    "Let me look.\n```repl\nprint('hello stdout', len(context))\nx = llm_query('summarise')\n"
    "print(x)\n```",
    "Delegate to a child.\n```repl\ny = rlm_query('child task')\nprint('child said', y)\n1/0\n```",
    "A long print.\n```repl\nprint('x' * 6000 + '" + LONG_TAIL + "')\n```",
    f"Careful with {XSS} here.\n```repl\nanswer['content'] = 'done'\nanswer['ready'] = True\n```",
]
CHILD_REPLY = (
    "child thinking\n```repl\nz = llm_query('leaf question')\nprint('child out', z)\n"
    "answer['content'] = 'child:' + z\nanswer['ready'] = True\n```"
)


def _is_root(prompt: Prompt) -> bool:
    return isinstance(prompt, list) and any(
        ROOT_TASK in str(m.get("content")) for m in prompt if isinstance(m, dict)
    )


def scripted_client() -> ScriptedLM:
    replies = iter(ROOT_REPLIES)

    def respond(prompt: Prompt) -> str:
        if isinstance(prompt, str):
            return "plain:" + prompt
        return next(replies) if _is_root(prompt) else CHILD_REPLY

    return ScriptedLM(MODEL, responder=respond, cost_per_token=1e-6)


def run_logged(log_dir: Path) -> tuple[Path, RLMChatCompletion]:
    client = scripted_client()
    logger = RLMLogger(log_dir=str(log_dir))
    with (
        mock.patch.object(rlm.core.rlm, "get_client", lambda backend, kwargs: client),
        RLM(
            backend="openai",
            backend_kwargs={"model_name": MODEL},
            max_depth=2,
            logger=logger,
        ) as r,
    ):
        result = r.completion("root context", root_prompt=ROOT_TASK)
    logger.close()
    assert logger.log_file_path is not None
    return Path(logger.log_file_path), result


DATA_BLOCK = re.compile(r'<script type="application/json" id="rlm-data">(.*?)</script>', re.DOTALL)


def page_data(page: str) -> dict[str, Any]:
    """The JSON data block embedded in a viewer page."""
    match = DATA_BLOCK.search(page)
    assert match is not None
    data: dict[str, Any] = json.loads(match.group(1))
    return data


def read_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def write_big_log(path: Path, iterations: int = 2000) -> Path:
    """A synthetic RLMLogger file: each iteration has a code block, stdout, one sub-call;
    every 7th an error and every 100th a long output."""
    meta = {
        "type": "metadata",
        "timestamp": "2025-01-01T00:00:00",
        "root_model": "big-model",
        "max_depth": 1,
        "max_iterations": iterations,
        "backend": "openai",
        "backend_kwargs": {"model_name": "big-model"},
        "environment_type": "local",
        "environment_kwargs": {},
        "other_backends": None,
    }
    usage = {
        "model_usage_summaries": {
            "sub": {
                "total_calls": 1,
                "total_input_tokens": 250,
                "total_output_tokens": 20,
                "total_cost": 0.0001,
            }
        }
    }

    def line(i: int) -> dict[str, Any]:
        code = f"chunk = context[{i * 1000}:{(i + 1) * 1000}]\nprint(len(chunk))"
        stdout = f"line {i} of output\n" * (400 if i % 100 == 0 else 3)
        call = {
            "root_model": "sub",
            "prompt": f"summarise chunk {i}",
            "response": f"summary {i}",
            "usage_summary": usage,
            "execution_time": 0.2,
        }
        result = {
            "stdout": stdout,
            "stderr": f"Traceback: needle-{i}" if i % 7 == 0 else "",
            "locals": {"chunk": "x" * 50},
            "execution_time": 0.01,
            "rlm_calls": [call],
            "final_answer": None,
        }
        return {
            "type": "iteration",
            "iteration": i,
            "timestamp": "2025-01-01T00:00:01",
            "prompt": [{"role": "user", "content": f"Turn {i}"}],
            "response": f"Iteration {i}: reading chunk {i}.\n```repl\n{code}\n```",
            "code_blocks": [{"code": code, "result": result}],
            "final_answer": "all done" if i == iterations else None,
            "iteration_time": 0.3,
            "some_future_key": {"ignored": True},
        }

    with path.open("w", encoding="utf-8") as f:
        f.write(json.dumps(meta) + "\n")
        for i in range(1, iterations + 1):
            f.write(json.dumps(line(i)) + "\n")
    return path


# -- a run that tells a story: markdown replies, nested fences, the final answer call -----

STORY_MODEL = "scripted-story"
STORY_TASK = "Which fruits are in the basket, and how many of each?"
STORY_CONTEXT = "\n".join(["apple", "banana", "apple", "cherry"] * 25_000)  # ~0.5 MB
NESTED_FENCE = "```repl\nprint('nested, not executed')\n```"
STORY_ROOT = [
    "Let me look first.\n```repl\n# peek at the data\n\nrows = context.splitlines()\n"
    "print(len(rows), rows[:3])\n```",
    "## Plan\nI will **count** each fruit with `collections.Counter`, then ask a sub-model.\n\n"
    f"````markdown\nA block I will *not* run:\n{NESTED_FENCE}\n````\n\n"
    "```repl\nfrom collections import Counter\ncounts = Counter(rows)\n"
    "check = llm_query('Are these counts plausible? ' + str(counts))\nprint(counts, check)\n```",
    "- first, a [link](javascript:alert(1)) that must stay text\n- then a child run\n\n"
    "```repl\nsummary = rlm_query('Summarise: ' + str(dict(counts)))\nprint(summary)\n```",
]
STORY_ANSWER = (
    "**Answer**\n\n| fruit | count |\n|---|---|\n| apple | 50,000 |\n| banana | 25,000 |\n"
    "| cherry | 25,000 |\n\n" + "\n".join(f"Line {i} of the answer." for i in range(1, 13))
)
STORY_CHILD = (
    "```repl\nanswer['content'] = 'child summary: ' + context[:40]\nanswer['ready'] = True\n```"
)


def story_responder() -> Any:
    root = iter(STORY_ROOT)

    def respond(prompt: Prompt) -> str:
        if isinstance(prompt, str):
            return "Yes, plausible."
        texts = [str(m.get("content")) for m in prompt if isinstance(m, dict)]
        if not any(STORY_TASK in t for t in texts):
            return STORY_CHILD
        if texts[-1].startswith("You have used all your turns"):
            return STORY_ANSWER
        return next(root)

    return respond


def run_story(log_dir: Path) -> tuple[Path, RLMChatCompletion]:
    """A real RLM on the scripted backend (max_depth=2, max_iterations=3): the root
    never submits, so the final "answer now" call gives the answer."""
    logger = RLMLogger(log_dir=str(log_dir))
    with RLM(
        backend="scripted",
        backend_kwargs={"model_name": STORY_MODEL, "responder": story_responder()},
        max_depth=2,
        max_iterations=3,
        logger=logger,
    ) as r:
        result = r.completion(STORY_CONTEXT, root_prompt=STORY_TASK)
    logger.close()
    assert logger.log_file_path is not None
    return Path(logger.log_file_path), result
