"""The ``--config`` TOML file of ``rlm eval``: model, RLM defaults, suite, methods.

    title = "GPT-5 vs RLM(GPT-5) on my budget"
    [model]                 # every method's model unless it names its own
    backend = "openai"
    backend_kwargs = { model_name = "gpt-5" }
    [rlm]                   # RLM(...) defaults of the rlm and rlms methods
    environment = "sandbox"
    max_iterations = 30
    [suite]
    families = ["niah", "oolong", "pairs", "codeqa"]
    lengths = ["8k", "32k", "128k"]
    seeds = [0, 1, 2]
    methods = ["base", "rlm-d1", "mini-subcalls"]
    [families.niah]
    haystack = "my_book.txt"
    [[datasets]]
    name = "longbench-v2"
    path = "data/longbench-v2/data.json"
    limit = 50
    where = { domain = "Code Repository Understanding" }
    [methods.mini-subcalls]
    kind = "rlm"            # rlm | base | rlms
    max_depth = 1
    other_backends = ["openai"]
    other_backend_kwargs = [{ model_name = "gpt-5-mini" }]
    [engine]
    name = "ray"            # or "local"
    address = "auto"
    max_inflight_llm_calls = 32
    [rlms]
    python = "/opt/rlms-venv/bin/python"

Every section is optional; command-line flags override the file. ``load_config``
raises ``ConfigError`` naming the file and the key for anything it cannot use.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlm.evals.loaders import DatasetSource
from rlm.evals.methods import (
    DEFAULT_METHODS,
    PRESETS,
    MethodError,
    MethodSpec,
    method_from_table,
    preset,
    rlms_method,
)
from rlm.evals.records import parse_length

SECTIONS = ("title", "model", "rlm", "suite", "families", "datasets", "methods", "engine", "rlms")
ENGINE_KEYS = (
    "name",
    "address",
    "concurrency",
    "max_inflight_llm_calls",
    "num_cpus",
    "task_cpus",
    "max_pending",
)


class ConfigError(ValueError):
    """The config file cannot be read or holds something unusable."""


@dataclass
class EvalConfig:
    """The parsed file (``None``/empty: not given, so defaults or flags apply)."""

    path: Path | None = None
    title: str | None = None
    backend: str | None = None
    backend_kwargs: dict[str, Any] = field(default_factory=dict)
    rlm: dict[str, Any] = field(default_factory=dict)
    families: list[str] | None = None
    lengths: list[int] | None = None
    seeds: list[int] | None = None
    methods: list[str] | None = None
    method_tables: dict[str, dict[str, Any]] = field(default_factory=dict)
    datasets: list[DatasetSource] = field(default_factory=list)
    family_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    engine: dict[str, Any] = field(default_factory=dict)
    rlms_python: str | None = None


def _table(data: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: [{key}] must be a table")
    return value


def _strings(value: Any, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where} must be a list of strings")
    return list(value)


def _suite(config: EvalConfig, suite: dict[str, Any], where: str) -> None:
    unknown = set(suite) - {"families", "lengths", "seeds", "methods"}
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) in [suite]: {', '.join(sorted(unknown))}")
    if "families" in suite:
        config.families = _strings(suite["families"], f"{where}: suite.families")
    if "methods" in suite:
        config.methods = _strings(suite["methods"], f"{where}: suite.methods")
    if "lengths" in suite:
        if not isinstance(suite["lengths"], list):
            raise ConfigError(f'{where}: suite.lengths must be a list ("8k", 32768...)')
        try:
            config.lengths = [parse_length(v) for v in suite["lengths"]]
        except ValueError as exc:
            raise ConfigError(f"{where}: suite.lengths: {exc}") from None
    if "seeds" in suite:
        seeds = suite["seeds"]
        if not isinstance(seeds, list) or not all(isinstance(s, int) for s in seeds):
            raise ConfigError(f"{where}: suite.seeds must be a list of integers")
        config.seeds = list(seeds)


def _datasets(items: Any, where: str) -> list[DatasetSource]:
    if not isinstance(items, list):
        raise ConfigError(f"{where}: [[datasets]] must be an array of tables")
    sources = []
    for i, item in enumerate(items):
        if not isinstance(item, dict) or "name" not in item or "path" not in item:
            raise ConfigError(f"{where}: datasets[{i}] needs name and path")
        options = {k: str(v) for k, v in item.items() if k not in ("name", "path", "where")}
        where_table = item.get("where", {})
        if not isinstance(where_table, dict):
            raise ConfigError(f"{where}: datasets[{i}].where must be a table")
        options.update({f"where.{k}": str(v) for k, v in where_table.items()})
        sources.append(DatasetSource(str(item["name"]), str(item["path"]), options))
    return sources


def load_config(path: str | Path) -> EvalConfig:
    """Parse the config file at ``path`` (see the module docstring)."""
    file = Path(path).expanduser()
    where = str(file)
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {file}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where}: not valid TOML: {exc}") from None
    unknown = set(data) - set(SECTIONS)
    if unknown:
        raise ConfigError(
            f"{where}: unknown section(s) {', '.join(sorted(unknown))}; known: {', '.join(SECTIONS)}"
        )
    config = EvalConfig(path=file, title=data.get("title"))
    model = _table(data, "model", where)
    if set(model) - {"backend", "backend_kwargs"}:
        raise ConfigError(f"{where}: [model] takes backend and backend_kwargs only")
    config.backend = model.get("backend")
    config.backend_kwargs = dict(model.get("backend_kwargs") or {})
    config.rlm = dict(_table(data, "rlm", where))
    _suite(config, _table(data, "suite", where), where)
    config.family_options = {k: dict(v) for k, v in _table(data, "families", where).items()}
    config.datasets = _datasets(data.get("datasets", []), where)
    methods = _table(data, "methods", where)
    for name, table in methods.items():
        if not isinstance(table, dict):
            raise ConfigError(f"{where}: [methods.{name}] must be a table")
    config.method_tables = {name: dict(table) for name, table in methods.items()}
    config.engine = dict(_table(data, "engine", where))
    bad = set(config.engine) - set(ENGINE_KEYS)
    if bad:
        raise ConfigError(
            f"{where}: unknown [engine] key(s) {', '.join(sorted(bad))}; known: {', '.join(ENGINE_KEYS)}"
        )
    rlms = _table(data, "rlms", where)
    config.rlms_python = str(rlms["python"]) if rlms.get("python") else None
    return config


def build_methods(
    names: list[str] | None,
    backend: str,
    backend_kwargs: dict[str, Any],
    rlm_defaults: dict[str, Any],
    tables: dict[str, dict[str, Any]] | None = None,
    rlms_python: str | None = None,
) -> list[MethodSpec]:
    """The methods to run: ``names`` (else the file's tables, else the presets, plus
    ``rlms`` when an rlms interpreter is given)."""
    tables = tables or {}
    if names is None:
        names = list(tables) or list(DEFAULT_METHODS)
        if rlms_python and "rlms" not in names:
            names.append("rlms")
    methods = []
    for name in names:
        try:
            if name in tables:
                methods.append(
                    method_from_table(name, tables[name], backend, backend_kwargs, rlm_defaults)
                )
            elif name in PRESETS:
                methods.append(preset(name, backend, backend_kwargs, rlm_defaults))
            elif name == "rlms":
                if not rlms_python:
                    raise MethodError(
                        "method 'rlms' needs --rlms-python PATH (an interpreter with rlms)"
                    )
                methods.append(rlms_method(rlms_python, backend, backend_kwargs, rlm_defaults))
            else:
                raise MethodError(
                    f"unknown method {name!r}; built in: {', '.join([*PRESETS, 'rlms'])}; "
                    f"from the config: {', '.join(tables) or 'none'}"
                )
        except MethodError:
            raise
        except (TypeError, ValueError) as exc:
            raise MethodError(f"method {name!r}: {exc}") from None
    return methods
