"""``rlm run`` when a run stops without an answer, in real subprocesses.

A provider that goes away mid-run, a ``--max-timeout`` reached while a model call
hangs, and a run whose iterations run out: each is reported in plain words, with what
was spent, where the log is, and the best partial answer. The model is a loopback
OpenAI-compatible server (``tests/core/loopback_model.py``) or ``--backend scripted``.
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path

import pytest
from cli_support import rlm, scripted

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "core"))
from loopback_model import loopback_model

needs_openai = pytest.mark.skipif(
    importlib.util.find_spec("openai") is None, reason="needs the openai package"
)
BOUND = 30.0  # seconds: far less than a hung call (60 s), far more than a stop needs
FIRST = "Counting.\n```repl\nprint(len(context))\n```"
SECOND = "Still looking.\n```repl\nprint(context[:5])\n```"


@pytest.fixture
def context(tmp_path: Path) -> Path:
    path = tmp_path / "story.txt"
    path.write_text("Alice followed the White Rabbit down the rabbit-hole.\n", encoding="utf-8")
    return path


@needs_openai
def test_a_provider_lost_mid_run_shows_retries_usage_log_and_partial(
    tmp_path: Path, context: Path
) -> None:
    logs = tmp_path / "logs"
    with loopback_model([FIRST, SECOND], stop_after=2) as server:
        proc = rlm(
            "run", "-c", str(context), "--base-url", server.url, "--model", "m",
            "--log-dir", str(logs), "--backend-kwargs", json.dumps({"max_retries": 2}), "Who?",
            cwd=tmp_path, timeout=120,
        )  # fmt: skip
    lines = proc.stderr.splitlines()
    assert proc.returncode == 4, proc.stderr
    assert "Traceback" not in proc.stderr
    # Each retry as it happens: which call, the error, the wait.
    retries = [line for line in lines if " failed (" in line and "; retry " in line]
    assert len(retries) == 2, proc.stderr
    for number, line in enumerate(retries, 1):
        assert line.startswith("rlm: iteration 3: model call failed (ProviderConnectionError")
        assert re.search(rf"; retry {number} of 2 in \d+\.\d+s$", line), line
    # What was spent, where the log is, and the partial answer.
    assert "rlm: usage m: 2 calls, 60 tokens in / 10 out" in lines
    [log_line] = [line for line in lines if line.startswith("rlm: trajectory: ")]
    assert Path(log_line.removeprefix("rlm: trajectory: ")).is_file()
    assert proc.stdout == SECOND + "\n"  # the last finished iteration's reply
    assert lines[-1].startswith("rlm: error: Could not reach")
    assert lines[-1].endswith("(partial answer printed)")


@needs_openai
def test_max_timeout_stops_a_hung_model_call(tmp_path: Path, context: Path) -> None:
    with loopback_model([FIRST], hang=frozenset({2})) as server:
        proc = rlm(
            "run", "-c", str(context), "--base-url", server.url, "--model", "m",
            "--max-timeout", "3", "Who?", cwd=tmp_path, timeout=BOUND,
        )  # fmt: skip
        assert server.hung.is_set() and not server.hang_finished.is_set()
    assert proc.returncode == 3, proc.stderr
    assert proc.stdout == FIRST + "\n"  # the partial answer
    last = proc.stderr.splitlines()[-1]
    assert last.startswith("rlm: error: Timeout exceeded during iteration 2"), last
    assert last.endswith("(partial answer printed)")
    assert "rlm: usage m: 1 call, " in proc.stderr


def test_no_submitted_answer_is_said_in_plain_words(tmp_path: Path, context: Path) -> None:
    code = "```repl\nx = 1\n```"
    proc = rlm(
        "run", "-c", str(context), *scripted(code, code, "The White Rabbit."),
        "--max-iterations", "2", "Who?", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "The White Rabbit.\n"
    lines = proc.stderr.splitlines()
    assert "rlm: iterations used up: asking the model for its final answer" in lines
    assert any(line.startswith("rlm: final-answer request: model replied") for line in lines)
    assert (
        "rlm: no answer submitted after 2 iterations; the final-answer request replied: "
        "The White Rabbit." in lines
    )
    assert "rlm: iteration 3" not in proc.stderr
    assert "from default" not in proc.stderr and "iteration(s)" not in proc.stderr
    assert "rlm: 2 iterations, wall time" in proc.stderr


def test_a_submitted_answer_says_how(tmp_path: Path, context: Path) -> None:
    answer = "```repl\nanswer['content'] = 'Alice'\nanswer['ready'] = True\n```"
    proc = rlm("run", "-c", str(context), *scripted(answer), "Who?", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "rlm: answer submitted in iteration 1" in proc.stderr.splitlines()
    assert "rlm: 1 iteration, wall time" in proc.stderr


@needs_openai
def test_a_provider_lost_mid_run_with_json(tmp_path: Path, context: Path) -> None:
    with loopback_model([FIRST, SECOND], stop_after=2) as server:
        proc = rlm(
            "run", "-c", str(context), "--base-url", server.url, "--model", "m", "--json",
            "-q", "--backend-kwargs", json.dumps({"max_retries": 0}), "Who?",
            cwd=tmp_path, timeout=120,
        )  # fmt: skip
    assert proc.returncode == 4, proc.stderr
    payload = json.loads(proc.stdout)
    assert payload["error_type"] == "ProviderConnectionError"
    assert payload["partial_answer"] == SECOND
    assert payload["iterations"] == 2  # completed: the third failed
    usage = payload["usage_summary"]["model_usage_summaries"]["m"]
    assert usage["total_calls"] == 2
    [line] = proc.stderr.splitlines()  # -q: the error line only
    assert line.startswith("rlm: error: Could not reach")


def test_a_limit_before_the_first_iteration_says_zero_iterations(
    tmp_path: Path, context: Path
) -> None:
    proc = rlm("run", "-c", str(context), *scripted(FIRST), "--max-tokens", "100", "Who?",
               cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 3, proc.stderr
    lines = proc.stderr.splitlines()
    assert "limit reached before the first iteration" in lines[-1], lines[-1]
    # The summary agrees with the error line: nothing completed, in plain words.
    assert "rlm: 0 iterations, wall time" in proc.stderr, proc.stderr
    assert "1 iteration" not in proc.stderr and "(s)" not in proc.stderr


def test_json_counts_completed_iterations_only(tmp_path: Path, context: Path) -> None:
    proc = rlm("run", "-c", str(context), *scripted(FIRST), "--max-tokens", "100", "--json",
               "-q", "Who?", cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 3, proc.stderr
    payload = json.loads(proc.stdout)
    assert payload["iterations"] == 0 and payload["error_type"] == "TokenLimitExceededError"


def test_a_final_call_after_the_schema_repairs_is_named_as_such(
    tmp_path: Path, context: Path
) -> None:
    """Repairs used up before the iterations: the progress says which, and the last
    call reads as the final-answer request, not as one more iteration."""
    schema = tmp_path / "n.json"
    schema.write_text(
        '{"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}'
    )
    bad = "```repl\nanswer['content'] = {'n': 'x'}\nanswer['ready'] = True\n```"
    proc = rlm(
        "run", "-c", str(context), "--schema", str(schema),
        *scripted(bad, bad, bad, bad, '{"n": 4}'), "--max-iterations", "9", "Who?", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == '{"n": 4}\n'
    lines = proc.stderr.splitlines()
    assert "rlm: schema repairs used up: asking the model for its final answer" in lines
    assert any(line.startswith("rlm: final-answer request: model replied") for line in lines)
    assert not any(line.startswith("rlm: iteration 5 started") for line in lines)


@pytest.mark.parametrize("command", [["run", "-c", "README.md", "Who?"], ["serve"]])
def test_the_scripted_backend_without_a_script_is_refused_at_start(
    tmp_path: Path, command: list[str]
) -> None:
    (tmp_path / "README.md").write_text("text")
    proc = rlm(*command, "--backend", "scripted", cwd=tmp_path, timeout=BOUND)
    assert proc.returncode == 2, proc.stderr
    assert "--backend scripted replies from a script" in proc.stderr
