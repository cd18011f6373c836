"""Execution environments, and the registry: the one list of environment names.

``_REGISTRY`` names every environment ``RLM(environment=...)``, the CLI's ``--env``
and the engine accept, with its class, a one-line description of where it runs model
code (the CLI's help and notices show it), and whether it keeps a namespace across
completions and runs code isolated from the host. Everything else that lists
environments derives from it (``rlm.base.types.EnvironmentType`` is rlms's spelling of
the same names, checked against it by the tests).

Layout: the public classes are the ``*_repl`` modules here, each a thin composition;
``worker/`` runs inside a worker process (standard library only), ``transports/``
place a worker (a process, a sandbox, a container, a kernel), ``host/`` drives one
from this process, and ``inprocess/`` holds what runs model code in this process.
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
    description: str  # where it runs model code, in a few words
    persistent: bool = False  # implements SupportsPersistence
    isolated: bool = False  # an IsolatedEnv: model code cannot reach the host process
    spares: bool = False  # takes ``spares=`` (an RLM's warm spare workers, host/spares.py)

    @property
    def module(self) -> str:
        return self.target.partition(":")[0]

    @property
    def class_name(self) -> str:
        return self.target.partition(":")[2]


_PROVIDER = "the provider's cloud sandbox"
_REGISTRY: dict[str, _Entry] = {
    "local": _Entry(
        "rlm.environments.local_repl:LocalREPL",
        "this process, with its files, network and environment variables: no isolation",
        persistent=True,
    ),
    "ipython": _Entry(
        "rlm.environments.ipython_repl:IPythonREPL",
        "a local Jupyter kernel, as you: not a security boundary",
        persistent=True,
    ),
    "docker": _Entry(
        "rlm.environments.docker_repl:DockerREPL",
        "a docker container without network",
        persistent=True,
        isolated=True,
    ),
    "modal": _Entry(
        "rlm.environments.modal_repl:ModalREPL", _PROVIDER, persistent=True, isolated=True
    ),
    "e2b": _Entry("rlm.environments.e2b_repl:E2BREPL", _PROVIDER, persistent=True, isolated=True),
    "daytona": _Entry(
        "rlm.environments.daytona_repl:DaytonaREPL", _PROVIDER, persistent=True, isolated=True
    ),
    "prime": _Entry(
        "rlm.environments.prime_repl:PrimeREPL", _PROVIDER, persistent=True, isolated=True
    ),
    "sandbox": _Entry(
        "rlm.environments.sandbox_repl:SandboxREPL",
        "a bubblewrap sandbox: no network, read-only system, scrubbed environment",
        persistent=True,
        isolated=True,
        spares=True,
    ),
}

ENVIRONMENT_NAMES: tuple[str, ...] = tuple(_REGISTRY)


def environment_names() -> list[str]:
    """Every registered environment name (some may not be implemented yet)."""
    return list(ENVIRONMENT_NAMES)


def environment_descriptions() -> dict[str, str]:
    """``{name: where it runs model code}`` for every registered environment."""
    return {name: entry.description for name, entry in _REGISTRY.items()}


def environment_is_isolated(name: str) -> bool:
    """Whether environment ``name`` runs model code isolated from the host process
    (``local`` and ``ipython`` do not)."""
    return _entry(name).isolated


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


def environment_takes_spares(name: str) -> bool:
    """Whether environment ``name`` accepts ``spares=``, a ``WarmSpares`` pool of its
    owner's warm workers (``rlm.environments.host.spares``); False for unknown names."""
    entry = _REGISTRY.get(name)
    return entry is not None and entry.spares


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
    "environment_descriptions",
    "environment_is_isolated",
    "environment_names",
    "environment_supports_persistence",
    "environment_takes_spares",
    "extract_tool_value",
    "format_tools_for_prompt",
    "get_environment",
    "parse_custom_tools",
    "parse_tool_entry",
    "validate_custom_tools",
]
