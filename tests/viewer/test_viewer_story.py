"""The page's data tells the story: the question and the whole answer, what each
iteration did, the final "answer now" call as what it is, where time and tokens went,
variables as summaries that name the context. Older logs still render."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from viewer_data import (
    STORY_ANSWER,
    STORY_CONTEXT,
    STORY_MODEL,
    STORY_TASK,
    page_data,
    read_lines,
)

from rlm import RLM
from rlm.base.types import RLMChatCompletion
from rlm.logger import RLMLogger
from rlm.viewer import render_html
from rlm.viewer.story import (
    Tokens,
    fill_missing_tokens,
    iteration_title,
    question_from_prompt,
    timing,
)


def root_iterations(data: dict[str, Any]) -> list[dict[str, Any]]:
    return [data["iters"][i] for i in data["runs"][data["roots"][0]]["iterations"]]


def test_the_header_holds_the_question_the_whole_answer_and_true_totals(
    story_run: tuple[Path, RLMChatCompletion],
) -> None:
    log, result = story_run
    summary = page_data(render_html(log))["summary"]
    assert summary["question"] == STORY_TASK
    assert summary["answer"] == STORY_ANSWER == result.response  # whole, not a preview
    assert summary["outcome"] == "max_iterations"
    assert summary["iterations"] == 3 and summary["final_call"] is True
    assert summary["meta"]["max_iterations"] == 3
    assert summary["usage_reported"] is True
    usage = result.usage_summary
    assert summary["usage"]["calls"] == usage.total_calls
    assert summary["usage"]["input"] == usage.total_input_tokens
    digest = hashlib.sha256(STORY_CONTEXT.encode()).hexdigest()
    assert summary["context"] == f"str · {len(STORY_CONTEXT):,} chars · sha256 {digest[:12]}"
    assert summary["execution_time"] is not None and summary["execution_time"] > 0


def test_a_result_shows_the_root_prompt_as_the_question(
    story_run: tuple[Path, RLMChatCompletion],
) -> None:
    # write_html(result): the in-memory trajectory has no run records, only prompts.
    _, result = story_run
    summary = page_data(render_html(result))["summary"]
    assert summary["question"] == STORY_TASK
    assert summary["answer"] == STORY_ANSWER


def test_the_question_is_the_root_prompt_whatever_it_holds() -> None:
    def result(root_prompt: str | None, context: Any = "a long context " * 10) -> RLMChatCompletion:
        replies = {"responses": ["```repl\nprint(len(context))\n```", "FINAL(42)"]}
        with RLM(backend="scripted", backend_kwargs=replies, logger=RLMLogger()) as r:
            return r.completion(context, root_prompt=root_prompt)

    tricky = "First line.\n\nYour context is a trick question?"
    for root_prompt, context, question in [
        ("What is the answer?", "ctx", "What is the answer?"),
        (tricky, "ctx", tricky),  # the engine's own wording inside the question
        ("Which of them?", ["doc one", "doc two"], "Which of them?"),  # several contexts
        (None, "Summarise this, please.", "Summarise this, please."),  # no root prompt
    ]:
        summary = page_data(render_html(result(root_prompt, context)))["summary"]
        assert summary["question"] == question, (root_prompt, summary["question"])
    for prompt, expected in [
        ([{"role": "system", "content": "You are an RLM."}, {"role": "user", "content": "Answer the following: q?\n\nYou have 2 contexts (`context` is `context_0`):\n- context_0"}], "q?"),
        ([{"role": "system", "content": "SYSTEM"}, {"role": "user", "content": "Your context is a str of 3 total characters."}], None),
        ("Answer the following: plain", "plain"),
        ([{"role": "user", "content": "Another logger's task message"}], "Another logger's task message"),
    ]:  # fmt: skip
        assert question_from_prompt(prompt) == expected


def test_each_iteration_is_titled_by_what_it_did(story_run: tuple[Path, RLMChatCompletion]) -> None:
    iters = root_iterations(page_data(render_html(story_run[0])))
    assert [(i["title_kind"], i["title"]) for i in iters] == [
        ("code", "rows = context.splitlines()"),  # the comment and blank line skipped
        ("code", "check = llm_query('Are these counts plausible? ' + str(counts))"),
        ("code", "summary = rlm_query('Summarise: ' + str(dict(counts)))"),
        ("final", "Final answer call (the iteration limit was reached)"),
    ]
    assert [i["final_call"] for i in iters] == [False, False, False, True]
    assert not any(i["title"].startswith("```") for i in iters)


def test_time_and_tokens_per_iteration_add_up(story_run: tuple[Path, RLMChatCompletion]) -> None:
    log, result = story_run
    data = page_data(render_html(log))
    iters = root_iterations(data)
    for it in iters[:3]:
        assert it["timing"]["model"] is not None and it["timing"]["estimated"] is False
        assert it["tokens"]["model"] > 0 and it["tokens"]["derived"] is False
    third = iters[2]  # rlm_query: its time is sub-call time, inside the code's time
    assert third["timing"]["sub"] > 0
    assert third["timing"]["sub"] <= third["blocks"][0]["time"]
    final = iters[3]
    assert final["timing"]["model"] is not None  # the event's duration of that call
    # Logged, or (when the engine reports no usage for the "answer now" call) derived as
    # the rest of the run's total: either way the rows add up to the total.
    assert final["tokens"]["model"] is not None and final["tokens"]["model"] > 0
    total = result.usage_summary.total_tokens
    assert sum(i["tokens"]["model"] + i["tokens"]["sub"] for i in iters) == total


def test_one_missing_root_usage_is_the_rest_of_the_total() -> None:
    rows: list[Tokens] = [
        {"model": 100, "sub": 30, "derived": False},
        {"model": None, "sub": 0, "derived": False},
    ]
    fill_missing_tokens({"input": 150, "output": 20}, rows)
    assert rows[1] == {"model": 40, "sub": 0, "derived": True}
    two_missing: list[Tokens] = [{"model": None, "sub": 0, "derived": False}] * 2
    fill_missing_tokens({"input": 150}, two_missing)  # ambiguous: left unknown
    assert all(t["model"] is None for t in two_missing)


def test_variables_are_summaries_that_name_the_context(
    story_run: tuple[Path, RLMChatCompletion],
) -> None:
    log, _ = story_run
    first = root_iterations(page_data(render_html(log)))[0]["blocks"][0]["locals"]
    digest = hashlib.sha256(STORY_CONTEXT.encode()).hexdigest()
    head = f"str · {len(STORY_CONTEXT):,} chars · sha256 {digest[:12]} · = the run's context_0"
    assert first["context"].startswith(head + "\napple\nbanana")
    assert first["rows"].startswith("list · 100,000 items · sha256 ")
    lines = read_lines(log)
    assert len(json.dumps(lines)) < 60_000  # the 650 kB context is nowhere in the log


OLD_PROMPT = [
    {"role": "system", "content": "You are an RLM."},
    {"role": "user", "content": "Answer the following: how many words?"},
]


def old_format_log(path: Path) -> Path:
    """A log as the logger wrote it before format 2: no run records, whole variables,
    the "answer now" call as a plain fourth iteration."""
    meta = {"type": "metadata", "root_model": "old-model", "max_iterations": 3, "max_depth": 1}
    lines: list[dict[str, Any]] = [meta]
    for n in (1, 2, 3):
        code = f"# step {n}\nwords = context.split()\nprint(len(words))"
        result = {
            "stdout": "4\n",
            "stderr": "",
            "locals": {"context": "a b c d " * 1000, "words": ["a", "b"]},
            "execution_time": 0.5,
            "rlm_calls": [],
        }
        lines.append(
            {
                "type": "iteration",
                "iteration": n,
                "prompt": OLD_PROMPT,
                "response": f"```repl\n{code}\n```",
                "code_blocks": [{"code": code, "result": result}],
                "final_answer": None,
                "iteration_time": 2.0,
            }
        )
    last_prompt = [*OLD_PROMPT, {"role": "user", "content": "You have used all your turns."}]
    lines.append(
        {"type": "iteration", "iteration": 4, "prompt": last_prompt, "response": "4 words",
         "code_blocks": [], "final_answer": "4 words", "iteration_time": None}
    )  # fmt: skip
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    return path


def test_an_older_log_still_tells_its_story(tmp_path: Path) -> None:
    data = page_data(render_html(old_format_log(tmp_path / "old.jsonl")))
    summary = data["summary"]
    assert summary["question"] == "how many words?"  # the root prompt, not the template
    assert summary["answer"] == "4 words"
    assert summary["iterations"] == 3 and summary["final_call"] is True
    assert summary["outcome"] is None and summary["usage_reported"] is False
    iters = root_iterations(data)
    assert [i["title"] for i in iters[:3]] == ["words = context.split()"] * 3
    assert iters[3]["final_call"] is True and iters[3]["title_kind"] == "final"
    # No model_time in the log: the model's share is the iteration time minus the code's.
    assert iters[0]["timing"] == {"model": 1.5, "code": 0.5, "sub": 0.0, "estimated": True}
    assert iters[0]["tokens"] == {"model": None, "sub": 0, "derived": False}
    assert iters[0]["blocks"][0]["locals"]["words"] == '[\n "a",\n "b"\n]'
    assert iters[0]["blocks"][0]["locals"]["context"].startswith("a b c d")


def test_titles_and_timing_rules() -> None:
    assert iteration_title("", ["# only a comment\n\n  x = 1  \n"], 0, False) == ("code", "x = 1")
    assert iteration_title("", ["a = 1\nb = llm_query_batched(ps)"], 2, False) == (
        "code",
        "b = llm_query_batched(ps)",
    )
    prose = "```python\nnot run\n```\n## So the answer is 4\n"
    assert iteration_title(prose, [], 0, False) == ("text", "So the answer is 4")
    assert iteration_title("  ", [], 0, False) == ("empty", "(empty reply)")
    assert iteration_title("x", ["y"], 0, True)[0] == "final"
    long_line = "z = " + "1 + " * 100 + "1"
    assert len(iteration_title("", [long_line], 0, False)[1]) == 160
    # Batched sub-calls overlap: their time is capped at the block's.
    assert timing(1.0, 4.0, [(2.0, [1.5, 1.5])]) == {
        "model": 1.0,
        "code": 0.0,
        "sub": 2.0,
        "estimated": False,
    }
    assert timing(None, None, [])["model"] is None


def test_the_model_name_is_the_scripted_one(story_run: tuple[Path, RLMChatCompletion]) -> None:
    data = page_data(render_html(story_run[0]))
    assert data["summary"]["model"] == STORY_MODEL
    child = data["runs"][1]
    assert child["label"] == "child RLM" and child["response"].startswith("child summary:")
