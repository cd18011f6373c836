"""Execution environments and the registry that builds them by name.

Environments other than ``local`` are imported lazily, so their optional
dependencies are only needed when one is actually requested.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from rlm.environments.base_env import (
    RESERVED_TOOL_NAMES,
    BaseEnv,
    IsolatedEnv,
    NonIsolatedEnv,
    SupportsCustomTools,
    SupportsPersistence,
    SupportsSnapshot,
    ToolInfo,
    extract_tool_value,
    format_tools_for_prompt,
    parse_custom_tools,
    parse_tool_entry,
    validate_custom_tools,
)
from rlm.environments.local_repl import LocalREPL


@dataclass(frozen=True)
class _Entry:
    target: str  # "module:Class"
    persistent: bool = False  # implements SupportsPersistence

    @property
    def module(self) -> str:
        return self.target.partition(":")[0]

    @property
    def class_name(self) -> str:
        return self.target.partition(":")[2]


_REGISTRY: dict[str, _Entry] = {
    "local": _Entry("rlm.environments.local_repl:LocalREPL", persistent=True),
    "ipython": _Entry("rlm.environments.ipython_repl:IPythonREPL", persistent=True),
    "docker": _Entry("rlm.environments.docker_repl:DockerREPL", persistent=True),
    "modal": _Entry("rlm.environments.modal_repl:ModalREPL", persistent=True),
    "e2b": _Entry("rlm.environments.e2b_repl:E2BREPL", persistent=True),
    "daytona": _Entry("rlm.environments.daytona_repl:DaytonaREPL", persistent=True),
    "prime": _Entry("rlm.environments.prime_repl:PrimeREPL", persistent=True),
    "sandbox": _Entry("rlm.environments.sandbox_repl:SandboxREPL", persistent=True),
}

ENVIRONMENT_NAMES: tuple[str, ...] = tuple(_REGISTRY)


def environment_names() -> list[str]:
    """Every registered environment name (some may not be implemented yet)."""
    return list(ENVIRONMENT_NAMES)


def _entry(name: str) -> _Entry:
    entry = _REGISTRY.get(name)
    if entry is None:
        raise ValueError(f"Unknown environment: {name!r}. Supported: {list(ENVIRONMENT_NAMES)}")
    return entry


def _load_class(name: str) -> type[BaseEnv]:
    entry = _entry(name)
    try:
        module = importlib.import_module(entry.module)
    except ModuleNotFoundError as exc:
        # Only our own module being absent means "not written yet"; a missing
        # third-party dependency of an existing module keeps its own message.
        if exc.name != entry.module:
            raise
        raise NotImplementedError(f"Environment '{name}' is not available yet in rlmx") from exc
    cls: type[BaseEnv] = getattr(module, entry.class_name)
    return cls


def get_environment(environment: str, environment_kwargs: dict[str, Any]) -> BaseEnv:
    """Build the environment registered as ``environment`` with ``environment_kwargs``."""
    return _load_class(environment)(**environment_kwargs)


def environment_supports_persistence(name: str) -> bool:
    """Whether environment ``name`` keeps its namespace across completions."""
    return _entry(name).persistent


def __getattr__(attr: str) -> Any:
    # ``from rlm.environments import IPythonREPL`` works as in rlms, imported on demand.
    for name, entry in _REGISTRY.items():
        if entry.class_name == attr:
            try:
                return _load_class(name)
            except NotImplementedError as exc:
                raise AttributeError(str(exc)) from exc
    raise AttributeError(f"module {__name__!r} has no attribute {attr!r}")


__all__ = [
    "ENVIRONMENT_NAMES",
    "RESERVED_TOOL_NAMES",
    "BaseEnv",
    "IsolatedEnv",
    "LocalREPL",
    "NonIsolatedEnv",
    "SupportsCustomTools",
    "SupportsPersistence",
    "SupportsSnapshot",
    "ToolInfo",
    "environment_names",
    "environment_supports_persistence",
    "extract_tool_value",
    "format_tools_for_prompt",
    "get_environment",
    "parse_custom_tools",
    "parse_tool_entry",
    "validate_custom_tools",
]
