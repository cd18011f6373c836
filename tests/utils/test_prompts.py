"""Prompt assembly: per-iteration user prompts, the system prompt and the metadata."""

from __future__ import annotations

from rlm.base.types import QueryMetadata
from rlm.core.prompts import (
    FIRST_TURN_NOTE,
    ORCHESTRATOR_ADDENDUM,
    RLM_SYSTEM_PROMPT,
    build_metadata_prompt,
    build_rlm_system_prompt,
    build_user_prompt,
    render_system_prompt,
)

TOOLS = {
    "fetch": {"tool": lambda url: url, "description": "Fetch a URL"},
    "limit": 10,
}


# -- build_user_prompt -----------------------------------------------------------------


def test_user_prompt_is_a_user_message_with_turn_counter() -> None:
    msg = build_user_prompt(None, 4, max_iterations=9)
    assert msg["role"] == "user"
    assert "Turn 5/9:" in msg["content"]


def test_user_prompt_context_count_sentence() -> None:
    text = build_user_prompt(None, 1, context_count=3)["content"]
    assert "You have 3 contexts available (context_0 through context_2)." in text
    assert "contexts available" not in build_user_prompt(None, 1, context_count=1)["content"]


def test_user_prompt_history_sentences() -> None:
    assert "histor" not in build_user_prompt(None, 1, history_count=0)["content"]
    one = build_user_prompt(None, 1, history_count=1)["content"]
    assert "You have 1 prior conversation history available" in one
    assert "`history`" in one
    two = build_user_prompt(None, 1, history_count=2)["content"]
    assert "You have 2 prior conversation histories available (history_0 through history_1)." in two


def test_user_prompt_contexts_and_histories_together() -> None:
    text = build_user_prompt(None, 2, context_count=2, history_count=4)["content"]
    assert "You have 2 contexts available (context_0 through context_1)." in text
    assert "(history_0 through history_3)." in text


def test_first_turn_note_only_at_iteration_zero() -> None:
    first = build_user_prompt(None, 0)["content"]
    assert first.startswith(FIRST_TURN_NOTE)
    for i in (1, 2, 29):
        assert FIRST_TURN_NOTE not in build_user_prompt(None, i)["content"]


# -- render_system_prompt --------------------------------------------------------------


def test_default_system_prompt_renders_braces_and_addendum() -> None:
    text = render_system_prompt(RLM_SYSTEM_PROMPT, None)
    assert "{custom_tools_section}" not in text
    assert '{"content": "", "ready": False}' in text
    assert "{{" not in text
    assert text.endswith(ORCHESTRATOR_ADDENDUM)
    plain = render_system_prompt(RLM_SYSTEM_PROMPT, None, orchestrator=False)
    assert ORCHESTRATOR_ADDENDUM not in plain


def test_system_prompt_with_custom_tools_section() -> None:
    text = render_system_prompt(RLM_SYSTEM_PROMPT, TOOLS)
    assert "Custom tools and data" in text
    assert "- `fetch`: Fetch a URL" in text
    assert "- `limit`: A custom int value" in text


def test_custom_prompt_with_doubled_braces_and_placeholder() -> None:
    custom = 'Use {{"a": 1}} as a template.\n{custom_tools_section}\nEnd.'
    text = render_system_prompt(custom, TOOLS, orchestrator=False)
    assert text.startswith('Use {"a": 1} as a template.')
    assert "- `fetch`: Fetch a URL" in text
    assert "{custom_tools_section}" not in text
    assert text.rstrip().endswith("End.")
    # Without tools the placeholder just disappears.
    empty = render_system_prompt(custom, None, orchestrator=False)
    assert "{custom_tools_section}" not in empty and "Custom tools" not in empty


def test_custom_prompt_with_placeholder_and_stray_braces() -> None:
    custom = "Fill {name} later.\n{custom_tools_section}"
    text = render_system_prompt(custom, TOOLS, orchestrator=False)
    assert "Fill {name} later." in text
    assert "- `fetch`: Fetch a URL" in text


def test_custom_prompt_without_placeholder_is_kept_and_tools_appended() -> None:
    custom = 'Be brief. Braces stay: {{"x": 1}} {y}'
    text = render_system_prompt(custom, TOOLS, orchestrator=False)
    assert text.startswith(custom)
    assert text.index("- `fetch`") > len(custom)
    assert render_system_prompt(custom, None, orchestrator=False) == custom


def test_build_rlm_system_prompt_shape() -> None:
    messages = build_rlm_system_prompt(RLM_SYSTEM_PROMPT, QueryMetadata("abc"), root_prompt="Q?")
    assert [m["role"] for m in messages] == ["system", "user"]
    assert "Q?" in messages[1]["content"]


# -- build_metadata_prompt -------------------------------------------------------------


def test_metadata_single_context() -> None:
    text = build_metadata_prompt([QueryMetadata("x" * 1234)], "Who?")
    assert "Answer the following: Who?" in text
    assert "str of 1,234 total characters" in text
    assert "final_answer" not in text


def test_metadata_chunked_list_context() -> None:
    text = build_metadata_prompt([QueryMetadata(["aa", "bbb", "c"])])
    assert "list of 6 total characters in 3 chunks" in text


def test_metadata_describes_every_context() -> None:
    metas = [QueryMetadata("a" * 10), QueryMetadata(["x", "y"]), QueryMetadata({"k": "v"})]
    text = build_metadata_prompt(metas, answers_available=2)
    lines = [line for line in text.splitlines() if line.startswith("- context_")]
    assert len(lines) == 3
    assert lines[0].startswith("- context_0: str, 10 characters")
    assert lines[1].startswith("- context_1: list")
    assert lines[2].startswith("- context_2: dict") and lines[2].endswith("(newest)")
    assert "You have 3 contexts" in text
    assert "final_answer_0 through final_answer_1" in text


def test_metadata_mentions_single_final_answer() -> None:
    text = build_metadata_prompt([QueryMetadata("a"), QueryMetadata("b")], answers_available=1)
    assert "final_answer_0 " in text
    assert "through" not in text
