"""Environment base classes and the capability protocols.

An environment runs model-written code in one persistent namespace. ``RLM`` talks to it
only through ``execute_code`` and, for multi-turn sessions, ``SupportsPersistence``.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from typing import Any

from rlm.base.ports import SupportsCustomTools, SupportsPersistence, SupportsSnapshot
from rlm.base.tools import (
    RESERVED_TOOL_NAMES,
    ToolInfo,
    extract_tool_value,
    format_tools_for_prompt,
    parse_custom_tools,
    parse_tool_entry,
    validate_custom_tools,
)
from rlm.base.types import REPLResult

DEFAULT_MAX_CONCURRENT_SUBCALLS = 4


class BaseEnv(ABC):
    """A REPL-like environment. Subclasses implement ``setup``, ``load_context`` and
    ``execute_code``; everything else has a working default."""

    def __init__(
        self,
        persistent: bool = False,
        depth: int = 1,
        max_concurrent_subcalls: int = DEFAULT_MAX_CONCURRENT_SUBCALLS,
        **kwargs: Any,
    ) -> None:
        self.persistent = persistent
        self.depth = depth
        self.max_concurrent_subcalls = max_concurrent_subcalls
        self.kwargs = kwargs

    @abstractmethod
    def setup(self) -> None:
        """Prepare the namespace (called once, by the constructor)."""

    def _initialize(self, context_payload: Any = None, setup_code: str | None = None) -> None:
        """``setup()``, bind ``context_payload``, run ``setup_code``: what a constructor
        does last. If any step fails, the environment is cleaned up and the original
        error raised (a failing cleanup never hides it)."""
        try:
            self.setup()
            if context_payload is not None:
                self.load_context(context_payload)
            if setup_code:
                self.execute_code(setup_code)
        except BaseException:
            with contextlib.suppress(Exception):
                self.cleanup()
            raise

    @abstractmethod
    def load_context(self, context_payload: Any) -> None:
        """Bind ``context_payload`` as ``context_0`` / ``context``."""

    @abstractmethod
    def execute_code(self, code: str) -> REPLResult:
        """Run one cell in the persistent namespace."""

    def lookup_variable(self, name: str) -> str | None:
        """``str()`` of a namespace variable, or ``None`` if it does not exist.

        Used for ``FINAL_VAR(name)``. The default runs a cell; in-process environments
        override it with a direct read.
        """
        if not name.isidentifier():
            return None
        result = self.execute_code(
            f"try:\n    print(str({name}), end='')\nexcept NameError:\n    print('\\x00', end='')"
        )
        if result.stderr or result.stdout == "\x00":
            return None
        return result.stdout

    def set_variable(self, name: str, value: str | int | float | bool | None) -> None:
        """Bind a simple value in the namespace (the default round-trips it via ``repr``)."""
        if not name.isidentifier():
            raise ValueError(f"not a valid variable name: {name!r}")
        self.execute_code(f"{name} = {value!r}")

    def reset_answer(self) -> None:
        """Reset the ``answer`` dict at the start of a turn."""
        self.execute_code('answer = {"content": "", "ready": False}')

    def _keep_tools(
        self, custom_tools: dict[str, Any] | None, custom_sub_tools: dict[str, Any] | None
    ) -> None:
        """Check ``custom_tools`` and keep them (``SupportsCustomTools``); the tools of
        child RLMs, ``custom_sub_tools``, default to the same."""
        if custom_tools:
            validate_custom_tools(custom_tools)
        self.custom_tools: dict[str, Any] = dict(custom_tools or {})
        self.custom_sub_tools = (
            custom_sub_tools if custom_sub_tools is not None else self.custom_tools
        )

    def cleanup(self) -> None:  # noqa: B027 - optional hook
        """Release the environment's resources. Safe to call more than once."""

    def __enter__(self) -> BaseEnv:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


class IsolatedEnv(BaseEnv, ABC):
    """Runs code on another machine or in a sandbox, isolated from the host process."""


class NonIsolatedEnv(BaseEnv, ABC):
    """Runs code on the host machine (in-process or in a local subprocess)."""


__all__ = [
    "RESERVED_TOOL_NAMES",
    "BaseEnv",
    "IsolatedEnv",
    "NonIsolatedEnv",
    "SupportsCustomTools",
    "SupportsPersistence",
    "SupportsSnapshot",
    "ToolInfo",
    "extract_tool_value",
    "format_tools_for_prompt",
    "parse_custom_tools",
    "parse_tool_entry",
    "validate_custom_tools",
]
