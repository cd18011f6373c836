"""The page tells the story, in a real headless Chromium: the question and the whole
answer on top, iterations titled by what they did, Markdown replies with nested fences
intact, the final "answer now" call labelled as such, a time/token chart, no empty
pager. The Markdown renderer is also driven directly with hostile and tricky input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from browser_support import Watch, card, open_page, require_browser
from viewer_data import NESTED_FENCE, STORY_TASK

from rlm.base.types import RLMChatCompletion
from rlm.viewer import write_html

sync_api = require_browser()
expect = sync_api.expect
STORY_SCREENSHOT = Path("/tmp/viewer-story.png")


def test_the_story_run_in_chromium(
    page: tuple[Any, Watch], story_run: tuple[Path, RLMChatCompletion], tmp_path: Path
) -> None:
    pg, watch = page
    log, result = story_run
    open_page(pg, write_html(log, tmp_path / "story.html"))

    # On top: the question, then the whole answer, not clipped.
    summary = pg.locator("#summary")
    expect(summary.locator(".question")).to_contain_text(STORY_TASK)
    answer = summary.locator(".answer .md")
    expect(answer).to_contain_text("Line 12 of the answer.")
    expect(answer.locator("table tr")).to_have_count(4)
    box = answer.evaluate("e => ({scroll: e.scrollHeight, client: e.clientHeight})")
    assert box["scroll"] <= box["client"] + 1, box  # nothing hidden inside the box
    assert box["client"] > 200  # far more than three lines
    assert answer.inner_text().count("of the answer.") == 12
    assert result.response.count("of the answer.") == 12

    # The final "answer now" call is not counted as an iteration.
    stats = summary.locator(".stats")
    expect(stats).to_contain_text("3 iterations")
    expect(stats).to_contain_text("+ final answer call")
    expect(stats).to_contain_text("answered by the final answer call")
    expect(summary).to_contain_text("max iterations: 3")
    expect(pg.locator(".toolbar h3")).to_have_text("3 iterations + final answer call")
    final = pg.locator("#timeline .iter.is-final-call")
    expect(final).to_have_count(1)
    expect(final.locator(".iter-n")).to_have_text("final")
    expect(final.locator(".preview")).to_have_text(
        "Final answer call (the iteration limit was reached)"
    )

    # Each card is titled by what its iteration did, never by a fence line.
    titles = pg.locator("#timeline .iter-head .preview")
    expect(titles).to_have_text(
        [
            "rows = context.splitlines()",
            "check = llm_query('Are these counts plausible? ' + str(counts))",
            "summary = rlm_query('Summarise: ' + str(dict(counts)))",
            "Final answer call (the iteration limit was reached)",
        ]
    )

    # Markdown with the nested fence intact: one code block that holds the inner fence.
    second = card(pg, 2)
    second.scroll_into_view_if_needed()
    reply = second.locator(".md.reply")
    expect(reply.locator("h5.md-h, h3.md-h, h4.md-h")).to_have_text("Plan")
    expect(reply.locator("strong")).to_have_text("count")
    expect(reply.locator("code.md-inline")).to_have_text("collections.Counter")
    code = reply.locator("pre.md-code")
    expect(code).to_have_count(1)
    assert code.locator("code").inner_text() == f"A block I will *not* run:\n{NESTED_FENCE}"
    # The fence that ran points at its code block instead of repeating it.
    expect(reply.locator(".fence-ref")).to_have_text(["⤷ code block 2 (below)"])
    assert reply.evaluate("e => [...e.querySelectorAll('pre')].every(p => p.innerText.trim())")

    # A link is text with its target shown; nothing on the page can navigate.
    third = card(pg, 3)
    third.scroll_into_view_if_needed()
    expect(third.locator(".md.reply li")).to_have_count(2)
    expect(third.locator(".md-url")).to_have_text(" (javascript:alert(1))")
    assert pg.locator("a").count() == 0

    # Where the time and tokens went: one row per iteration, the final call last.
    chart = pg.locator(".run-head .chart")
    expect(chart.locator(".chart-label")).to_have_text(["#1", "#2", "#3", "final"])
    assert chart.locator(".time-bar .seg").count() >= 4
    assert chart.locator(".tok-bar .seg-sub").count() == 2  # llm_query and rlm_query
    chart.locator(".chart-label", has_text="#2").click()
    expect(card(pg, 2)).to_be_in_viewport()

    # No empty pager at the end of a short list.
    expect(pg.locator("#show-more")).to_be_hidden()
    assert "Show 0 more" not in pg.locator("body").inner_text()

    pg.locator("#detail").evaluate("d => d.scrollTop = 0")
    shot = tmp_path / "story.png"
    pg.screenshot(path=str(shot))
    shutil.copyfile(shot, STORY_SCREENSHOT)
    assert watch.errors == [] and watch.dialogs == []
    assert all(url.startswith("file://") for url in watch.requests), watch.requests


MARKDOWN_CASES = r"""
(cases) => cases.map((text) => {
  const box = document.createElement("div");
  rlmMarkdown.render(box, text);
  const tags = [...box.querySelectorAll("*")].map((n) => n.tagName.toLowerCase());
  const codes = [...box.querySelectorAll("pre.md-code code")].map((n) => n.textContent);
  return {tags, codes, text: box.textContent};
})
"""


def test_a_page_from_a_result_shows_the_root_prompt_as_the_question(
    page: tuple[Any, Watch], story_run: tuple[Path, RLMChatCompletion], tmp_path: Path
) -> None:
    pg, watch = page
    open_page(pg, write_html(story_run[1], tmp_path / "result.html"))
    question = pg.locator("#summary .question .question-text")
    expect(question).to_have_text(STORY_TASK)  # not the system prompt, not the template
    expect(pg.locator("#summary .question")).not_to_contain_text("Your context is")
    expect(pg.locator("#summary .question")).not_to_contain_text("Recursive Language Model")
    assert watch.errors == [] and watch.dialogs == []


def test_markdown_renderer_cases(page: tuple[Any, Watch], story_run: Any, tmp_path: Path) -> None:
    pg, watch = page
    open_page(pg, write_html(story_run[0], tmp_path / "story.html"))
    hostile = '<img src=x onerror="window.__pwned=1"> **<script>window.__pwned=2</script>**'
    cases = [
        "````\n```repl\nx = 1\n```\n````\nafter",  # a longer fence holds a shorter one
        "~~~py\ncode ``` here\n~~~",  # tildes; backticks inside are text
        "```\nnever closed\nstill code",  # an unclosed fence runs to the end
        "```repl\nprint('a')\n```python\n```",  # an info string cannot close a fence
        hostile,
        "1. one\n2. two\n   - nested\n\n> quoted *text*",
        "| a | b |\n|---|---|\n| 1 | `x` |",
        "window.__pwned = 1 and snake_case_name and a `` code ` span ``",
        "```repl\n# x\n```python\ny = 1\n```\n```",  # what a small model wrote: no empty bar
    ]
    out = pg.evaluate(MARKDOWN_CASES, cases)
    assert out[0]["codes"] == ["```repl\nx = 1\n```"] and out[0]["text"].endswith("after")
    assert out[1]["codes"] == ["code ``` here"]
    assert out[2]["codes"] == ["never closed\nstill code"]
    assert out[3]["codes"] == ["print('a')\n```python"]
    assert (
        out[4]["text"] == '<img src=x onerror="window.__pwned=1"> <script>window.__pwned=2</script>'
    )
    assert "img" not in out[4]["tags"] and "script" not in out[4]["tags"]
    assert out[4]["tags"] == ["p", "strong"]
    assert out[5]["tags"][:5] == ["ol", "li", "p", "li", "p"] and "ul" in out[5]["tags"]
    assert "blockquote" in out[5]["tags"] and "em" in out[5]["tags"]
    assert out[6]["tags"].count("tr") == 2 and "code" in out[6]["tags"]
    assert out[7]["tags"] == ["p", "code"]  # no emphasis inside words
    assert "code ` span" in out[7]["text"]
    assert out[8]["codes"] == ["# x\n```python\ny = 1"] and out[8]["tags"][-1] == "p"
    assert out[8]["text"].endswith("```")
    assert pg.evaluate("window.__pwned") is None
    assert watch.errors == []


def test_hostile_text_in_the_new_records_stays_text(
    page: tuple[Any, Watch], tmp_path: Path
) -> None:
    pg, watch = page
    evil = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script>'
    md_evil = f"**{evil}** [x](javascript:window.__pwned=3) `{evil}`"
    summary = {"type": evil, "length": 5, "preview": evil, "sha256": evil}
    records = [
        {"type": "metadata", "root_model": evil, "max_iterations": 1, "log_version": 2},
        {"type": "run_started", "run_id": "r", "depth": 0, "question": md_evil},
        {"type": "context", "run_id": "r", "name": evil, "summary": summary},
        {
            "type": "iteration", "iteration": 1, "run_id": "r", "depth": 0,
            "prompt": [{"role": evil, "content": evil}], "response": md_evil,
            "code_blocks": [{"code": f"x = '{evil}'", "result": {
                "stdout": evil, "stderr": "", "locals": {evil: summary}, "rlm_calls": [
                    {"root_model": evil, "prompt": evil, "response": md_evil}]}}],
            "usage": {"model_usage_summaries": {evil: {"total_calls": 1}}},
        },
        {"type": "iteration", "iteration": 2, "run_id": "r", "final_call": True,
         "response": md_evil, "code_blocks": [], "final_answer": md_evil},
        {"type": "run_finished", "run_id": "r", "outcome": evil, "limit": evil,
         "response": md_evil, "error": evil, "usage_summary": {"model_usage_summaries": {
             evil: {"total_calls": 2, "total_input_tokens": 5}}}},
    ]  # fmt: skip
    log = tmp_path / "evil.jsonl"
    log.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    open_page(pg, write_html(log, tmp_path / "evil.html"))
    for n in (1, 2):  # cards start open; their bodies are built when they come into view
        card(pg, n).scroll_into_view_if_needed()
        expect(card(pg, n).locator(".iter-body.rendered")).to_have_count(1)
    pg.locator("#timeline details").evaluate_all("ds => ds.forEach(d => d.open = true)")
    expect(pg.locator("#summary .question")).to_contain_text(evil)
    expect(pg.locator("#summary .answer")).to_contain_text(evil)
    expect(pg.locator("#timeline .iter").first.locator(".preview")).to_have_text(f"x = '{evil}'")
    body = pg.locator("body").inner_text()
    assert body.count("window.__pwned=1") >= 6
    assert pg.evaluate("window.__pwned") is None
    assert pg.locator("body img, body a, body iframe").count() == 0
    assert pg.locator("script").count() == 2
    assert watch.errors == [] and watch.dialogs == []
