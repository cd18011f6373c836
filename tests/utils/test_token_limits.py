"""Context limits drive the compaction decision: they must be the *input* limit."""

from __future__ import annotations

import pytest

from rlm.clients.tokens import DEFAULT_CONTEXT_LIMIT, get_context_limit


@pytest.mark.parametrize(
    ("model", "limit"),
    [
        ("gpt-5", 272_000),  # 400K window = 272K input + 128K output
        ("gpt-5-mini", 272_000),
        ("openai/gpt-5-nano", 272_000),
        ("gpt-4.1-mini", 1_047_576),
        ("gpt-4o-mini", 128_000),
        ("us.anthropic.claude-sonnet-4", 200_000),  # Bedrock-style name
        ("Claude-3-Haiku", 200_000),
        ("some-local-model", DEFAULT_CONTEXT_LIMIT),
        (None, DEFAULT_CONTEXT_LIMIT),
    ],
)
def test_context_limit(model: str | None, limit: int) -> None:
    assert get_context_limit(model) == limit
