"""Prompt text and the pure functions that assemble a turn's messages."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from typing import Any

from rlm.base.tools import format_tools_for_prompt
from rlm.base.types import QueryMetadata

RLM_SYSTEM_PROMPT = textwrap.dedent(
    """\
    You are a Recursive Language Model (RLM). You answer a query about a context that may be far
    too long to read at once. The context is not in this conversation: it lives in a Python REPL
    as the variable `context`, and you work on it by writing code.

    Write Python in ```repl``` blocks. Each block runs in one persistent namespace, and you see
    what it prints on the next turn. Only printed output comes back, and long output is
    shortened (its beginning and end are kept), so print slices, counts and summaries rather
    than whole texts. Bare expressions are not echoed: wrap them in print(...).

    The REPL gives you:
    - `context`: the data for the query (often a long `str`, or a `list`/`dict`).
    - `llm_query(prompt: str, model: str | None = None) -> str`: one call to a language model
      that sees only the prompt you pass. Use it to read, extract from or summarise a chunk;
      it can take several hundred thousand characters.
    - `llm_query_batched(prompts: list[str], model=None) -> list[str]`: many `llm_query` calls
      run concurrently; answers come back in the order of the prompts. Prefer it to a loop.
      Both take `schema=` (a JSON Schema dict, a TypedDict, dataclass or Pydantic class, or a
      type such as `list[str]`): each reply is then a checked value of that type, not text (a
      reply that never matched is a string starting with "Error: "), and `images=` (file
      paths, bytes or URLs; one list per prompt for the batch) for a model with vision.
    - `rlm_query(prompt, model=None)` and `rlm_query_batched(prompts, model=None)`: hand a
      sub-task to a child RLM that has its own REPL (they act like `llm_query` when recursion
      is off). Use them for sub-tasks that need several steps of their own.
    - `SHOW_VARS()`: returns the names and types of the variables you have made.
    - `budget()`: what remains of this run's limits, as a dict with `calls`, `tokens`, `usd`
      and `seconds` (None where there is no limit). Check it before a large fan-out; a
      sub-call that does not fit returns a string starting with "Error: budget exhausted".
      It also gives `sub_context_window` and `context_window`: the most tokens (about 4
      characters each) one `llm_query` prompt and your own prompt can hold (None if unknown).
      Size chunks well under `sub_context_window`: a longer prompt is not sent, and
      returns "Error: prompt is N tokens, MODEL takes M: split it ...".
    - `answer`: a dict, {{"content": "", "ready": False}}, through which you submit.
    {custom_tools_section}

    A good way to work: look at the context first (its type, length, a few lines), plan how to
    split the work, send chunks to sub-LLMs and keep their results in variables, then combine
    those results in code. Use plain Python (slicing, regular expressions, counting) wherever
    it is enough; use sub-LLMs where the meaning of text matters.

    To finish, set the answer inside a ```repl``` block:
    ```repl
    answer["content"] = "the final answer"
    answer["ready"] = True
    ```
    The run ends as soon as `answer["ready"]` is True. Alternatively, write FINAL(your answer)
    or FINAL_VAR(variable_name) at the start of a line outside any code block. Do not submit
    before you have looked at the context and checked your result.
    """
)

ORCHESTRATOR_ADDENDUM = textwrap.dedent(
    """\
    Think of yourself as the orchestrator. Your own window is small and precious: push reading
    and summarising into sub-LLM calls, give each call a focused, well-sized input (tens of
    thousands of characters, not a few words), and ask for short, structured answers you can
    combine in code. When a keyword search or a regular expression already pins down the
    answer, use it instead. If you are running out of turns, submit your best answer rather
    than none."""
)

USER_PROMPT = "Turn {iter_1}/{max_iter}:"

FIRST_TURN_NOTE = (
    "You have not looked at the REPL yet. Start by inspecting the context; do not submit an "
    "answer in this turn."
)

FINAL_ANSWER_PROMPT = (
    "You have used all your turns. Reply now with your final answer to the query, as plain "
    "text, based on what you have found so far."
)

_DEFAULT_MAX_ITERATIONS = 30


def render_system_prompt(
    system_prompt: str, custom_tools: dict[str, Any] | None, orchestrator: bool = True
) -> str:
    """Fill ``{custom_tools_section}`` and append the orchestrator addendum.

    Prompts written for ``str.format`` (doubled braces) and plain prompts both work.
    """
    tools = format_tools_for_prompt(custom_tools) if custom_tools else None
    section = f"- Custom tools and data:\n{tools}" if tools else ""
    if "{custom_tools_section}" in system_prompt:
        try:
            text = system_prompt.format(custom_tools_section=section)
        except (KeyError, IndexError, ValueError):
            text = system_prompt.replace("{custom_tools_section}", section)
    else:
        text = system_prompt + (f"\n\n{section}" if section else "")
    return f"{text.rstrip()}\n\n{ORCHESTRATOR_ADDENDUM}" if orchestrator else text


def describe_contexts(contexts: Sequence[QueryMetadata]) -> str:
    """One line per context: its variable name, type and size."""
    if len(contexts) == 1:
        meta = contexts[0]
        chunks = len(meta.context_lengths)
        shape = f" in {chunks} chunks" if meta.context_type != "str" and chunks > 1 else ""
        return (
            f"Your context is a {meta.context_type} of {meta.context_total_length:,} total "
            f"characters{shape}."
        )
    lines = [f"You have {len(contexts)} contexts (`context` is `context_0`):"]
    for i, meta in enumerate(contexts):
        lines.append(
            f"- context_{i}: {meta.context_type}, {meta.context_total_length:,} characters"
            f"{' (newest)' if i == len(contexts) - 1 else ''}"
        )
    return "\n".join(lines)


def build_metadata_prompt(
    contexts: Sequence[QueryMetadata],
    root_prompt: str | None = None,
    answers_available: int = 0,
) -> str:
    """The first user message of a turn: the query, then every context described."""
    parts = []
    if root_prompt:
        parts.append(f"Answer the following: {root_prompt}")
    parts.append(describe_contexts(contexts))
    if answers_available:
        last = answers_available - 1
        names = "final_answer_0" if last == 0 else f"final_answer_0 through final_answer_{last}"
        parts.append(
            f"Your final answers from earlier turns are in the REPL as {names} "
            "(None where a turn ended without one)."
        )
    parts.append("A sub-LLM call can take roughly 100k tokens at once.")
    return "\n\n".join(parts)


def build_rlm_system_prompt(
    system_prompt: str,
    query_metadata: QueryMetadata,
    custom_tools: dict[str, Any] | None = None,
    root_prompt: str | None = None,
    orchestrator: bool = True,
) -> list[dict[str, str]]:
    """The opening messages of a single-context run: system prompt and metadata."""
    return [
        {
            "role": "system",
            "content": render_system_prompt(system_prompt, custom_tools, orchestrator),
        },
        {"role": "user", "content": build_metadata_prompt([query_metadata], root_prompt)},
    ]


def build_user_prompt(
    root_prompt: str | None = None,
    iteration: int = 0,
    context_count: int = 1,
    history_count: int = 0,
    max_iterations: int = _DEFAULT_MAX_ITERATIONS,
) -> dict[str, str]:
    """The user message that opens iteration ``iteration`` (0-based) of a turn."""
    text = USER_PROMPT.format(iter_1=iteration + 1, max_iter=max_iterations)
    if iteration == 0:
        text = f"{FIRST_TURN_NOTE}\n\n{text}"
    if context_count > 1:
        text += (
            f"\n\nNote: You have {context_count} contexts available "
            f"(context_0 through context_{context_count - 1})."
        )
    if history_count == 1:
        text += (
            "\n\nNote: You have 1 prior conversation history available in the `history` "
            "variable (history_0)."
        )
    elif history_count > 1:
        text += (
            f"\n\nNote: You have {history_count} prior conversation histories available "
            f"(history_0 through history_{history_count - 1})."
        )
    return {"role": "user", "content": text}


COMPACTION_PROMPT = (
    "Summarise your progress so far so you can continue with a shorter history: what you "
    "have done, every concrete intermediate result (numbers, names, variable names) exactly, "
    "and your next step. Be brief: one to three paragraphs."
)


def build_compacted_history(
    messages: list[dict[str, Any]], summary: str, compaction_count: int
) -> list[dict[str, Any]]:
    """Keep the system and metadata messages; replace the rest with the summary."""
    return [
        *messages[:2],
        {"role": "assistant", "content": summary},
        {
            "role": "user",
            "content": (
                f"The conversation was compacted ({compaction_count} time(s)). Continue from "
                "the summary above without redoing finished work. `history` in the REPL holds "
                "the full record; SHOW_VARS() lists your variables."
            ),
        },
    ]
