"""Pure text functions: code blocks, answer markers, and formatting REPL output for the model."""

from __future__ import annotations

import re
import textwrap
from typing import Any, Literal, Protocol

from rlm.base.types import REPLResult, RLMIteration

# Output shown to the model per code block. Head and tail are both kept: the end of an
# output (totals, the last error) is often what matters most.
DEFAULT_MAX_OUTPUT_CHARS = 20_000

_REPL_BLOCK = re.compile(
    r"^[ \t]*```repl[ \t]*\r?\n(.*?)^[ \t]*```[ \t]*\r?$", re.DOTALL | re.MULTILINE
)
_ANY_FENCE = re.compile(r"^[ \t]*```.*?^[ \t]*```[ \t]*\r?$", re.DOTALL | re.MULTILINE)
_MARKER = re.compile(r"^[ \t]*(FINAL_VAR|FINAL)\(", re.MULTILINE)


def find_code_blocks(text: str) -> list[str]:
    """The contents of every ```` ```repl ```` block, in order (empty list if none).

    The closing fence must start a line, so code that contains ``` inside a string on a
    line of its own is the only thing that can end a block early.
    """
    if not text or "```repl" not in text:
        return []
    blocks = []
    for match in _REPL_BLOCK.finditer(text):
        code = match.group(1)
        if code.strip():
            blocks.append(_dedent(code).strip("\n"))
    return blocks


def _dedent(code: str) -> str:
    """``textwrap.dedent(code)``, which is ``code`` itself when no line starts with a
    space or a tab (no common margin, no whitespace-only line to clear)."""
    if code[:1] in (" ", "\t") or "\n " in code or "\n\t" in code:
        return textwrap.dedent(code)
    return code


def _outside_fences(text: str) -> str:
    """``text`` with every fenced block blanked out (offsets are not preserved)."""
    if "```" not in text:
        return text
    return _ANY_FENCE.sub("", text)


def _balanced_argument(text: str, start: int) -> str | None:
    """The text between the '(' before ``start`` and its matching ')', or None.

    Parentheses inside quoted strings are ignored. A ``'`` right after a letter or
    digit is an apostrophe ("it's", "students'"), not the start of a string.
    """
    depth, i, quote = 1, start, ""
    while i < len(text):
        ch = text[i]
        if quote:
            if ch == "\\":
                i += 2
                continue
            if ch == quote:
                quote = ""
        elif ch == '"' or (ch == "'" and not (i > start and text[i - 1].isalnum())):
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth == 0:
                return text[start:i]
        i += 1
    return None


FinalKind = Literal["FINAL", "FINAL_VAR"]


def find_final_marker(text: str) -> tuple[FinalKind, str] | None:
    """The first line-start ``FINAL(...)`` or ``FINAL_VAR(name)`` outside code fences.

    Returns the kind and the argument (stripped; for FINAL_VAR also unquoted).
    Parentheses are matched, so ``FINAL(f(x) = (a+b))`` yields ``f(x) = (a+b)``.
    """
    if not text or "FINAL" not in text:
        return None
    prose = _outside_fences(text)
    for match in _MARKER.finditer(prose):
        arg = _balanced_argument(prose, match.end())
        if arg is None:
            continue
        kind: FinalKind = "FINAL_VAR" if match.group(1) == "FINAL_VAR" else "FINAL"
        arg = arg.strip()
        if kind == "FINAL_VAR":
            arg = arg.strip("\"'` ")
            if not arg.isidentifier():
                continue
        return kind, arg
    return None


class _VariableSource(Protocol):
    def lookup_variable(self, name: str) -> str | None: ...


def find_final_answer(text: str, environment: Any | None = None) -> str | None:
    """The final answer a reply declares with ``FINAL(...)`` or ``FINAL_VAR(name)``.

    ``FINAL_VAR`` is resolved by reading the variable from ``environment``: an rlmx
    environment (one with ``lookup_variable``) is read directly, with no extra cell; any
    other object is asked the ``rlms`` way, by running ``print(FINAL_VAR('name'))`` in it
    and taking what it printed. Without an environment, or if the name is unbound, it is
    ``None``.
    """
    marker = find_final_marker(text)
    if marker is None:
        return None
    kind, arg = marker
    if kind == "FINAL":
        return arg
    if environment is None:
        return None
    if callable(getattr(type(environment), "lookup_variable", None)):
        source: _VariableSource = environment
        return source.lookup_variable(arg)
    result = environment.execute_code(f"print(FINAL_VAR({arg!r}))")
    return str(result.stdout).strip() or str(result.stderr).strip()


def truncate_middle(text: str, limit: int = DEFAULT_MAX_OUTPUT_CHARS) -> str:
    """Keep the first and last parts of ``text`` within about ``limit`` characters."""
    limit = max(limit, 0)
    if len(text) <= limit:
        return text
    head = limit * 2 // 3
    tail = limit - head
    omitted = len(text) - head - tail
    return (
        f"{text[:head]}\n... [{omitted:,} characters omitted; print a slice to see them] ...\n"
        f"{text[len(text) - tail :]}"
    )


_HIDDEN_VARS = frozenset({"__builtins__", "__name__", "__doc__", "answer"})
_SHOWN_TYPES = (str, int, float, bool, list, dict, tuple, set)
_MAX_LISTED_VARS = 40


def format_execution_result(result: REPLResult, max_chars: int | None = None) -> str:
    """One block's stdout, stderr and the names of its simple variables.

    With ``max_chars``, stdout and stderr share that budget (stderr at most a quarter of
    it) and are cut, head and tail, before anything else touches them, so a huge print
    is never copied whole.
    """
    stdout, stderr = result.stdout or "", result.stderr or ""
    # Both within the budget together: neither would be cut (no call, no copy).
    if max_chars is not None and len(stdout) + len(stderr) > max_chars:
        err_budget = min(len(stderr), max_chars // 4)
        stdout = truncate_middle(stdout, max_chars - err_budget)
        stderr = truncate_middle(stderr, max(err_budget, max_chars - len(stdout), 200))
    parts = [stream.rstrip("\n") for stream in (stdout, stderr) if stream]
    names = [
        k
        for k, v in result.locals.items()
        if not k.startswith("_") and k not in _HIDDEN_VARS and isinstance(v, _SHOWN_TYPES)
    ]
    if names:
        shown = names[:_MAX_LISTED_VARS]
        more = f" (+{len(names) - len(shown)} more)" if len(names) > len(shown) else ""
        parts.append(f"REPL variables: {shown}{more}")
    return "\n\n".join(parts) if parts else "No output"


def format_iteration(
    iteration: RLMIteration, max_character_length: int = DEFAULT_MAX_OUTPUT_CHARS
) -> list[dict[str, str]]:
    """The messages an iteration adds to the history: the assistant reply, then one user
    message with every block's (truncated) output, if any code ran."""
    messages = [{"role": "assistant", "content": iteration.response}]
    blocks = iteration.code_blocks
    if blocks:
        many = len(blocks) > 1
        parts = []
        for i, block in enumerate(blocks, 1):
            body = format_execution_result(block.result, max_character_length)
            parts.append(f"REPL output (block {i}):\n{body}" if many else f"REPL output:\n{body}")
        messages.append({"role": "user", "content": "\n\n".join(parts)})
    return messages


def convert_context_for_repl(context: Any) -> tuple[Any, str | None]:
    """Split a payload into (structured data, text): exactly one of the two is set.

    A list of chat messages becomes the list of their contents.
    """
    if isinstance(context, str):
        return None, context
    if (
        isinstance(context, list)
        and context
        and isinstance(context[0], dict)
        and "content" in context[0]
    ):
        return [m.get("content", "") for m in context], None
    return context, None
