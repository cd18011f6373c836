"""Custom tools: values or functions that users inject into the REPL namespace.

A tool entry is either the value itself or ``{"tool": value, "description": "..."}``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Names the engine owns. Custom tools may not use them, and they are restored after
# every cell so model code cannot break the scaffold (``context = "x"`` does not stick).
RESERVED_TOOL_NAMES: frozenset[str] = frozenset(
    {
        "llm_query",
        "llm_query_batched",
        "rlm_query",
        "rlm_query_batched",
        "SHOW_VARS",
        "answer",
        "context",
        "history",
    }
)


@dataclass
class ToolInfo:
    """One parsed tool entry."""

    name: str
    value: Any
    description: str | None = None

    @property
    def is_callable(self) -> bool:
        return callable(self.value)


def extract_tool_value(entry: Any) -> Any:
    """The tool's value, unwrapping the ``{"tool": ..., "description": ...}`` form."""
    if isinstance(entry, dict) and "tool" in entry:
        return entry["tool"]
    return entry


def parse_tool_entry(name: str, entry: Any) -> ToolInfo:
    """Parse one entry into a ``ToolInfo``; a non-string description is ignored."""
    description = None
    if isinstance(entry, dict) and "tool" in entry:
        raw = entry.get("description")
        description = raw if isinstance(raw, str) else None
    return ToolInfo(name=name, value=extract_tool_value(entry), description=description)


def parse_custom_tools(custom_tools: dict[str, Any] | None) -> list[ToolInfo]:
    """Every entry of ``custom_tools`` as a ``ToolInfo`` (empty for ``None``)."""
    return [parse_tool_entry(n, e) for n, e in (custom_tools or {}).items()]


def format_tools_for_prompt(custom_tools: dict[str, Any] | None) -> str | None:
    """A bullet list describing the tools for the system prompt, or ``None``."""
    tools = parse_custom_tools(custom_tools)
    if not tools:
        return None
    lines = []
    for tool in tools:
        if tool.description:
            text = tool.description
        elif tool.is_callable:
            text = "A custom function"
        else:
            text = f"A custom {type(tool.value).__name__} value"
        lines.append(f"- `{tool.name}`: {text}")
    return "\n".join(lines)


def validate_custom_tools(custom_tools: dict[str, Any] | None) -> None:
    """Raise ``ValueError`` if a tool name is reserved or not a valid identifier."""
    if not custom_tools:
        return
    if not isinstance(custom_tools, dict):
        raise ValueError(f"custom_tools must be a dict, got {type(custom_tools).__name__}")
    conflicts = set(custom_tools) & RESERVED_TOOL_NAMES
    if conflicts:
        raise ValueError(
            f"Custom tools cannot override reserved REPL functions: {sorted(conflicts)}. "
            f"Reserved names: {sorted(RESERVED_TOOL_NAMES)}"
        )
    bad = [n for n in custom_tools if not (isinstance(n, str) and n.isidentifier())]
    if bad:
        raise ValueError(f"Custom tool names must be Python identifiers: {bad!r}")
