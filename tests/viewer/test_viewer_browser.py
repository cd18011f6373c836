"""The viewer in a real headless Chromium (Debian's ``chromium``, driven by Playwright;
see ``browser_support``)."""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path
from typing import Any

from browser_support import Watch, card, open_page, require_browser
from viewer_data import LONG_TAIL, MODEL, ROOT_TASK, XSS, read_lines, write_big_log

from rlm.base.types import RLMChatCompletion
from rlm.viewer import write_html

sync_api = require_browser()
expect = sync_api.expect
LEAD_SCREENSHOT = Path("/tmp/viewer-screenshot.png")


def sub_call_totals(log: Path) -> tuple[int, int, int]:
    calls = inputs = outputs = 0
    for line in read_lines(log):
        for block in line.get("code_blocks") or []:
            for call in block["result"]["rlm_calls"]:
                usage = call["usage_summary"]["model_usage_summaries"][MODEL]
                calls += usage["total_calls"]
                inputs += usage["total_input_tokens"]
                outputs += usage["total_output_tokens"]
    return calls, inputs, outputs


def test_real_run_in_chromium(
    page: tuple[Any, Watch], real_run: tuple[Path, RLMChatCompletion], tmp_path: Path
) -> None:
    pg, watch = page
    real_log, result = real_run
    html_path = write_html(real_log, tmp_path / "run.html")
    open_page(pg, html_path)

    # Header: question, answer, outcome and the run's true totals (closing record).
    summary = pg.locator("#summary")
    expect(summary.locator(".question")).to_contain_text(ROOT_TASK)
    expect(summary.locator(".answer")).to_contain_text("done")
    expect(summary).to_contain_text(MODEL)
    expect(summary).to_contain_text("answered")
    expect(summary).to_contain_text("4 iterations")
    expect(summary).to_contain_text("1 child run")
    expect(summary).to_contain_text("max depth: 2")
    usage = result.usage_summary
    calls, inputs, _ = sub_call_totals(real_log)
    assert usage.total_calls > calls and usage.total_input_tokens > inputs
    expect(summary.locator(".badge.usage")).to_contain_text(
        f"total: {usage.total_calls} calls · {usage.total_input_tokens:,} in / "
        f"{usage.total_output_tokens:,} out · $"
    )

    # Timeline: reply, code, stdout, stderr, truncation.
    expect(pg.locator("#timeline .iter")).to_have_count(4)
    first = card(pg, 1)
    expect(first.locator("pre.code")).to_have_text(
        "print('hello stdout', len(context))\nx = llm_query('summarise')\nprint(x)"
    )
    expect(first.locator("pre.stdout")).to_have_text("hello stdout 12\nplain:summarise\n")
    expect(first.locator(".call")).to_contain_text("plain:summarise")
    second = card(pg, 2)
    second.scroll_into_view_if_needed()
    expect(second).to_have_class(re.compile(r"\bhas-error\b"))
    expect(second.locator("pre.stderr")).to_contain_text("ZeroDivisionError: division by zero")
    third = card(pg, 3)
    third.scroll_into_view_if_needed()
    stdout = third.locator("pre.stdout")
    hidden = len("x" * 6000 + LONG_TAIL + "\n") - 2 * 1200
    toggle = stdout.locator("button.more")
    expect(toggle).to_have_text(f"… {hidden:,} characters hidden — show all")
    assert LONG_TAIL in stdout.inner_text()
    toggle.click()
    assert "x" * 6000 + LONG_TAIL in stdout.inner_text()
    stdout.locator("button.more", has_text="show less").click()
    expect(stdout.locator("button.more")).to_contain_text("characters hidden")

    # Untrusted model text shows as text and never runs.
    fourth = card(pg, 4)
    fourth.scroll_into_view_if_needed()
    expect(fourth.locator(".reply")).to_contain_text(XSS)
    assert pg.evaluate("window.__pwned") is None
    assert pg.locator("#detail img, #detail script").count() == 0

    # Tree: the child RLM shows after expanding the root, with its own iterations.
    child_row = pg.locator("#tree .kind.child")
    expect(child_row).to_have_count(0)
    pg.locator("#tree .tree-node .twisty").first.click()
    expect(child_row).to_be_visible()
    expect(pg.locator("#tree .node-prompt")).to_have_text([ROOT_TASK, "child task"])
    child_row.click()
    expect(pg.locator(".run-head h2")).to_have_text("child RLM")
    expect(pg.locator(".run-head")).to_contain_text("spawned by iteration #2")
    expect(pg.locator("#timeline .iter")).to_have_count(1)
    expect(card(pg, 1).locator("pre.stdout")).to_have_text("child out plain:leaf question\n")
    child_call = next(
        c
        for line in read_lines(real_log)
        for b in line.get("code_blocks") or []
        for c in b["result"]["rlm_calls"]
        if "metadata" in c
    )
    child_usage = child_call["usage_summary"]["model_usage_summaries"][MODEL]
    expect(pg.locator(".run-head .badge.usage")).to_contain_text(
        f"total: {child_usage['total_calls']} calls · {child_usage['total_input_tokens']:,} in"
    )
    pg.locator(".crumbs .link").first.click()  # back to the root
    expect(pg.locator(".run-head h2")).to_have_text("root run")
    card(pg, 2).locator(".open-child").click()  # and down through the sub-call
    expect(pg.locator(".run-head h2")).to_have_text("child RLM")
    pg.locator(".crumbs .link").first.click()

    # Search: count, highlighting, non-matching iterations hidden.
    search = pg.locator("#search")
    search.fill("ZeroDivisionError")
    expect(pg.locator("#match-count")).to_have_text("1 matching iteration in 1 run")
    expect(pg.locator("#timeline .iter")).to_have_count(1)
    expect(card(pg, 1)).to_have_count(0)
    expect(card(pg, 2).locator("mark").first).to_have_text("ZeroDivisionError")
    search.fill("plain:")
    expect(pg.locator("#match-count")).to_have_text("3 matching iterations in 2 runs")
    expect(pg.locator("#timeline .iter")).to_have_count(2)
    expect(card(pg, 3)).to_have_count(0)
    expect(pg.locator("#tree .match-badge").first).to_have_text("3 matches")
    search.fill("no such text anywhere")
    expect(pg.locator("#match-count")).to_have_text("0 matching iterations in 0 runs")
    expect(pg.locator("#timeline .iter")).to_have_count(0)
    search.press("Escape")
    expect(pg.locator("#timeline .iter")).to_have_count(4)
    expect(pg.locator("#match-count")).to_have_text("")

    shot = tmp_path / "viewer.png"
    search.blur()
    pg.locator("#detail").evaluate("d => d.scrollTop = 0")
    pg.screenshot(path=str(shot))
    assert shot.stat().st_size > 10_000
    shutil.copyfile(shot, LEAD_SCREENSHOT)

    assert watch.errors == [] and watch.dialogs == []
    assert all(url.startswith("file://") for url in watch.requests), watch.requests


def test_two_thousand_iterations_stay_responsive(
    page: tuple[Any, Watch], tmp_path: Path, record_property: Any
) -> None:
    pg, watch = page
    html_path = write_html(write_big_log(tmp_path / "big.jsonl", 2000), tmp_path / "big.html")

    started = time.perf_counter()
    open_page(pg, html_path)
    loaded = time.perf_counter() - started
    pg.locator("#search").fill("needle-1400")
    expect(pg.locator("#match-count")).to_have_text("1 matching iteration")
    interactive = time.perf_counter() - started
    record_property("load_seconds", round(loaded, 3))
    record_property("interactive_seconds", round(interactive, 3))
    print(f"\n2,000 iterations: ready {loaded:.2f} s, searched {interactive:.2f} s")

    expect(pg.locator("#timeline .iter")).to_have_count(1)
    expect(card(pg, 1400).locator("mark")).to_have_text("needle-1400")
    pg.locator("#search").press("Escape")

    # Lazy: one page of cards, and no body is built until a card is opened.
    expect(pg.locator("#timeline .iter")).to_have_count(100)
    counts = pg.evaluate(
        "({bodies: document.querySelectorAll('.iter-body.rendered').length,"
        " blocks: document.querySelectorAll('.block').length,"
        " elements: document.getElementsByTagName('*').length})"
    )
    assert counts["bodies"] == 0 and counts["blocks"] == 0, counts
    assert counts["elements"] < 3000, counts
    card(pg, 5).locator(".iter-head").click()
    expect(card(pg, 5).locator("pre.code")).to_contain_text("context[5000:6000]")
    assert pg.locator(".iter-body.rendered").count() == 1

    # Scrolling to the button may already add a page (the pager watches it): at least one.
    pg.locator("#show-more").click()
    expect(pg.locator("#timeline .iter").nth(199)).to_be_attached()
    expect(pg.locator("#show-more")).to_contain_text("not shown yet")
    jump = pg.locator("input.jump")
    jump.fill("1500")
    jump.press("Enter")
    expect(card(pg, 1500).locator("pre.stdout")).to_contain_text("line 1500 of output")
    assert pg.locator(".iter-body.rendered").count() < 20
    assert watch.errors == []
