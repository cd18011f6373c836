"""Logs that scale: values as summaries, the context once per run by digest, the root
model's own usage per iteration and a closing record with the run's true totals.

Every run here is a real ``RLM`` on the ``scripted`` backend writing a real JSONL file.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

import rlm.logger.summary as summary_module
from rlm import RLM
from rlm.base.errors import RLMLimitError
from rlm.base.events import EventBus, RunScope
from rlm.base.types import (
    CodeBlock,
    REPLResult,
    RLMChatCompletion,
    RLMIteration,
    RLMMetadata,
    UsageSummary,
)
from rlm.logger import RLMLogger
from rlm.logger.rlm_logger import record_run
from rlm.logger.summary import clip_text, summarize

CONTEXT = "".join(f"line {i:07d} of the big context\n" for i in range(100_000))  # ~3.2 MB
ITERATIONS = 6


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def repl(*lines: str) -> str:
    return "Working.\n```repl\n" + "\n".join(lines) + "\n```"


def records(logger: RLMLogger) -> list[dict[str, Any]]:
    assert logger.log_file_path is not None
    text = Path(logger.log_file_path).read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines()]


def of_type(lines: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [line for line in lines if line["type"] == kind]


def scripted_run(
    tmp_path: Path, replies: list[str], context: Any = CONTEXT, **kwargs: Any
) -> tuple[RLMLogger, RLMChatCompletion]:
    """A real RLM on the scripted backend; sub-calls get ``sub:<prompt>`` replies."""
    script = iter(replies)

    def respond(prompt: Any) -> str:
        return f"sub:{prompt[:40]}" if isinstance(prompt, str) else next(script)

    logger = kwargs.pop("logger", None) or RLMLogger(log_dir=str(tmp_path))
    with RLM(
        backend="scripted",
        backend_kwargs={"model_name": "scripted-log", "responder": respond, "cost_per_token": 1e-6},
        logger=logger,
        **kwargs,
    ) as r:
        result = r.completion(context, root_prompt="How many lines?")
    logger.close()
    return logger, result


def many_iterations() -> list[str]:
    steps = [repl("n = len(context)", "print(n)"), repl("lines = context.splitlines()")]
    steps += [repl(f"part = lines[{i}]", "print(llm_query(part))") for i in range(ITERATIONS - 3)]
    steps.append(repl("answer['content'] = str(len(lines))", "answer['ready'] = True"))
    return steps


def test_a_multi_megabyte_context_over_many_iterations_keeps_the_log_small(
    tmp_path: Path,
) -> None:
    logger, result = scripted_run(tmp_path, many_iterations(), max_iterations=10)
    assert result.response == "100000"
    size = Path(str(logger.log_file_path)).stat().st_size
    assert size < 80_000, f"{size:,} bytes for a {len(CONTEXT):,}-character context"

    lines = records(logger)
    assert [line["type"] for line in lines] == (
        ["metadata", "run_started", "context"] + ["iteration"] * ITERATIONS + ["run_finished"]
    )
    assert lines[0]["log_version"] == 2
    started = lines[1]
    assert started["question"] == "How many lines?" and started["depth"] == 0
    (context,) = of_type(lines, "context")  # once per run, not once per iteration
    assert context["run_id"] == started["run_id"] and "value" not in context
    assert context["summary"] == {
        "type": "str",
        "length": len(CONTEXT),
        "preview": CONTEXT[:200],
        "clipped": True,
        "sha256": sha(CONTEXT),
    }

    for line in of_type(lines, "iteration"):
        names = line["code_blocks"][0]["result"]["locals"]
        # Both names of the context refer to the context record by digest.
        assert names["context"] == names["context_0"] == context["summary"]
    last = of_type(lines, "iteration")[-1]["code_blocks"][0]["result"]["locals"]
    assert last["lines"]["type"] == "list" and last["lines"]["length"] == 100_000
    assert len(last["lines"]["preview"]) <= 200 and last["lines"]["clipped"] is True
    compact = json.dumps(CONTEXT.splitlines(), ensure_ascii=False, separators=(",", ":"))
    assert last["lines"]["sha256"] == sha(compact)
    assert last["n"] == {"type": "int", "preview": str(len(CONTEXT)), "sha256": sha(json.dumps(len(CONTEXT)))}  # fmt: skip


def test_each_iteration_carries_the_root_models_own_usage_and_the_run_closes_with_totals(
    tmp_path: Path,
) -> None:
    logger, result = scripted_run(tmp_path, many_iterations(), max_iterations=10)
    lines = records(logger)
    iterations = of_type(lines, "iteration")
    own = [line["usage"]["model_usage_summaries"]["scripted-log"] for line in iterations]
    assert all(u["total_calls"] == 1 and u["total_input_tokens"] > 0 for u in own)
    assert all(line["model_time"] >= 0 for line in iterations)
    sub = [
        c["usage_summary"]["model_usage_summaries"]["scripted-log"]
        for line in iterations
        for b in line["code_blocks"]
        for c in b["result"]["rlm_calls"]
    ]
    assert len(sub) == ITERATIONS - 3

    (closing,) = of_type(lines, "run_finished")
    totals = result.usage_summary
    assert closing["outcome"] == "answer" and closing["answer_source"] == "answer"
    assert closing["iterations"] == ITERATIONS and closing["final_call"] is False
    assert closing["response"] == "100000" and closing["error"] is None
    assert closing["usage_summary"] == totals.to_dict()
    assert closing["total_calls"] == totals.total_calls == ITERATIONS + len(sub)
    assert closing["input_tokens"] == totals.total_input_tokens
    assert closing["total_tokens"] == totals.total_tokens
    assert closing["total_cost"] == pytest.approx(totals.total_cost)
    assert closing["execution_time"] > 0
    # The log alone now adds up: root model calls plus sub-calls are the run's total.
    logged_in = sum(u["total_input_tokens"] for u in own + sub)
    assert logged_in == totals.total_input_tokens


def test_the_answer_now_call_is_marked_and_not_counted_as_an_iteration(tmp_path: Path) -> None:
    logger, result = scripted_run(
        tmp_path, [repl("print(1)")] * 3 + ["It is 42."], max_iterations=3
    )
    assert result.response == "It is 42."
    lines = records(logger)
    iterations = of_type(lines, "iteration")
    assert len(iterations) == 4
    assert [line.get("final_call", False) for line in iterations] == [False] * 3 + [True]
    assert iterations[-1]["model_time"] >= 0
    (closing,) = of_type(lines, "run_finished")
    assert closing["outcome"] == "max_iterations" and closing["answer_source"] == "default"
    assert closing["iterations"] == 3 and closing["final_call"] is True


def test_a_limit_is_the_outcome_of_the_closing_record(tmp_path: Path) -> None:
    logger = RLMLogger(log_dir=str(tmp_path))
    with pytest.raises(RLMLimitError):
        scripted_run(
            tmp_path, [repl("print(1)")] * 5, max_iterations=5, max_tokens=2500, logger=logger
        )
    logger.close()
    (closing,) = of_type(records(logger), "run_finished")
    assert closing["outcome"] == "limit" and closing["limit"] == "TokenLimitExceededError"
    assert closing["error"].startswith("TokenLimitExceededError") and closing["iterations"] == 1


def test_the_full_context_is_logged_once_only_when_asked(tmp_path: Path) -> None:
    logger = RLMLogger(log_dir=str(tmp_path), log_context=True)
    replies = [
        repl("print(len(context))"),
        repl("answer['content'] = 'ok'", "answer['ready'] = True"),
    ]
    with RLM(
        backend="scripted",
        backend_kwargs={"responses": replies * 2},
        logger=logger,
        persistent=True,
    ) as r:
        r.completion(CONTEXT[:100_000])
        r.completion(CONTEXT[:100_000])  # the same content again, in a second turn
    logger.close()
    lines = records(logger)
    contexts = of_type(lines, "context")
    assert len(of_type(lines, "run_started")) == 2
    assert {c["summary"]["sha256"] for c in contexts} == {sha(CONTEXT[:100_000])}
    assert len({c["run_id"] for c in contexts}) == 2  # each run names its context ...
    assert [c.get("value") for c in contexts].count(CONTEXT[:100_000]) == 1  # ... stored once


def test_long_texts_keep_head_and_tail_and_say_what_was_cut(tmp_path: Path) -> None:
    big = "B" * 300_000
    replies = [
        repl("print('<' + 'x' * 300000 + '>')", "y = llm_query('q' * 300000)"),
        repl("answer['content'] = 'ok'", "answer['ready'] = True"),
    ]
    logger = RLMLogger(log_dir=str(tmp_path), max_text_chars=1000, preview_chars=50)
    scripted_run(tmp_path, replies, context=big, logger=logger)
    block = of_type(records(logger), "iteration")[0]["code_blocks"][0]["result"]
    stdout = "<" + "x" * 300_000 + ">\n"
    assert block["stdout"].startswith("<xxx") and block["stdout"].endswith("xx>\n")
    assert len(block["stdout"]) < 1200 and "characters not logged" in block["stdout"]
    assert block["clipped"]["stdout"] == {"length": len(stdout), "sha256": sha(stdout)}
    (call,) = block["rlm_calls"]
    assert len(call["prompt"]) < 1200
    assert call["clipped"]["prompt"] == {"length": 300_000, "sha256": sha("q" * 300_000)}
    assert block["locals"]["context"]["preview"] == "B" * 50


def test_a_big_string_is_hashed_once_per_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hashed: list[int] = []
    real = summary_module.sha256_hex

    def counting(value: Any) -> str:
        if isinstance(value, str) and len(value) == len(CONTEXT):
            hashed.append(id(value))
        return real(value)

    monkeypatch.setattr(summary_module, "sha256_hex", counting)
    scripted_run(tmp_path, many_iterations(), max_iterations=10)
    assert len(hashed) == 1  # not 2 names x 6 iterations


def test_summaries_of_odd_values() -> None:
    loop: list[Any] = []
    loop.append(loop)
    recursive = summarize(loop)
    assert recursive["type"] == "list" and recursive["length"] == 1
    data = {"k": list(range(1000))}
    out = summarize(data, preview_chars=30)
    assert len(out["preview"]) <= 30 and out["clipped"] is True and out["length"] == 1
    assert out["sha256"] == sha(json.dumps(data, separators=(",", ":")))
    assert summarize(b"\x00\x01")["sha256"] == hashlib.sha256(b"\x00\x01").hexdigest()
    assert "clipped" not in summarize("short")
    assert clip_text("abc", None) == ("abc", None) and clip_text("abc", 3) == ("abc", None)


def test_an_rlms_style_logger_still_gets_metadata_and_iterations() -> None:
    class Minimal:
        def __init__(self) -> None:
            self.seen: list[str] = []

        def clear_iterations(self) -> None:
            self.seen.append("clear")

        def log_metadata(self, metadata: Any) -> None:
            self.seen.append("metadata")

        def log(self, iteration: RLMIteration) -> None:
            self.seen.append("iteration")

    bus, minimal = EventBus(), Minimal()
    scope = RunScope(bus, run_id="r")
    record_run(minimal, bus, "r")
    metadata = RLMMetadata("m", 1, 5, "scripted", {}, "local", {})
    scope.emit("run_started", prompt_preview="p", root_prompt="q", metadata=metadata)
    for n in (1, 2):
        iteration = RLMIteration("p", f"reply {n}", [])
        scope.emit("model_reply", iteration=n, response="r", usage=UsageSummary(), duration=0.1)
        scope.emit("iteration_finished", iteration=n, iteration_obj=iteration, duration=0.1)
    scope.emit("run_finished", response="x", usage=UsageSummary(), execution_time=0.1, error=None)
    assert minimal.seen == ["clear", "metadata", "iteration", "iteration"]


def test_direct_log_calls_summarize_too(tmp_path: Path) -> None:
    logger = RLMLogger(log_dir=str(tmp_path))
    result = REPLResult("", "", {"context": CONTEXT, "other": CONTEXT[:10]}, 0.1)
    logger.log(RLMIteration("p", "r", [CodeBlock("x", result)]))
    logger.log(RLMIteration("p", "r", [CodeBlock("x", result)]))
    logger.close()
    lines = records(logger)
    assert [line["type"] for line in lines] == ["context", "iteration", "iteration"]
    assert lines[0]["name"] == "context" and "run_id" not in lines[0]
    assert Path(str(logger.log_file_path)).stat().st_size < 5_000


def test_a_child_logger_keeps_the_settings_and_writes_no_file(tmp_path: Path) -> None:
    parent = RLMLogger(log_dir=str(tmp_path), log_context=True, preview_chars=7, max_text_chars=50)
    child = parent.child_logger()
    assert child.log_file_path is None and child.log_context is True
    result = REPLResult("o" * 400, "", {"context": CONTEXT}, 0.1)
    child.log_metadata(RLMMetadata("m", 1, 5, "scripted", {}, "local", {}))
    child.log(RLMIteration("p", "r", [CodeBlock("x", result)]))
    trajectory = child.get_trajectory()
    assert trajectory is not None
    (entry,) = trajectory["iterations"]
    block = entry["code_blocks"][0]["result"]
    assert block["locals"]["context"]["preview"] == CONTEXT[:7]
    assert block["clipped"]["stdout"]["length"] == 400
    assert list(tmp_path.iterdir()) == []
