"""Layered configuration for every ``rlm`` command: flags > environment > ``rlm.toml``.

The file is the first of ``--config``, ``$RLM_CONFIG``, ``./rlm.toml`` and
``~/.config/rlm/rlm.toml`` that exists. Model settings are top-level keys, backend
keyword arguments a ``[backend_kwargs]`` table, server settings a ``[serve]`` table and
``rlm mcp``'s a ``[mcp]`` table::

    backend = "openai_compatible"
    base_url = "http://127.0.0.1:8080/v1"
    model = "qwen2.5-7b-instruct"
    max_iterations = 20

    [serve]
    port = 8000

Secrets come from the environment only: a key that looks like one (``api_key``,
``token``, ...) in the file or in ``--backend-kwargs`` is an error, and ``api_key_env``
names the variable that holds the key instead.
"""

from __future__ import annotations

import argparse
import json
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlm.base.redact import redact_text
from rlm.cli.config import CLIUsageError

SECRET_WORDS = ("key", "token", "secret", "password")


@dataclass(frozen=True)
class Option:
    """One setting: its name (also the flag's dest and the toml key), its parser, its
    environment variable and the toml table it lives in (``""`` is the top level)."""

    name: str
    parse: Callable[[str], Any]
    env: str
    table: str = ""


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ValueError("expected a whole number") from None
    if value < 1:
        raise ValueError("must be at least 1")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError("expected a number") from None
    if value <= 0:
        raise ValueError("must be greater than 0")
    return value


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError("expected a number") from None
    if not value >= 0 or value == float("inf"):
        raise ValueError("must be 0 or more")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ValueError("expected a port number") from None
    if not 0 <= value <= 65535:
        raise ValueError("a port is a number from 0 to 65535")
    return value


def _environment(text: str) -> str:
    from rlm.environments import environment_names

    names = environment_names()
    if text not in names:
        raise ValueError(f"not an environment; choose from {', '.join(names)}")
    return text


def _backend(text: str) -> str:
    from rlm.clients.registry import backend_names

    names = backend_names()
    if text not in names:
        raise ValueError(f"not a backend; choose from {', '.join(names)}")
    return text


def _path_list(text: str) -> tuple[str, ...]:
    paths = tuple(p for p in text.split(os.pathsep) if p)
    if not paths:
        raise ValueError("expected one or more directories")
    return paths


def _json_object(text: str) -> dict[str, Any]:
    if text.startswith("@"):  # @FILE: scripts and long kwargs live better in a file
        try:
            text = Path(text[1:]).read_text(encoding="utf-8")
        except OSError as exc:
            raise ValueError(f"cannot read {text[1:]}: {exc.strerror or exc}") from None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:  # its msg and position, never the text
        raise ValueError(
            f"not a JSON object: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    if not isinstance(value, dict):
        raise ValueError(f"not a JSON object: got {_json_kind(value)}")
    return value


json_object = _json_object  # ``--backend-kwargs JSON|@FILE`` for commands outside Settings


def _json_kind(value: Any) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    return "a number"


OPTIONS: tuple[Option, ...] = (
    Option("backend", _backend, "RLM_BACKEND"),
    Option("model", str, "RLM_MODEL"),
    Option("base_url", str, "RLM_BASE_URL"),
    Option("api_key_env", str, "RLM_API_KEY_ENV"),
    Option("backend_kwargs", _json_object, "RLM_BACKEND_KWARGS"),
    Option("env", _environment, "RLM_ENV"),
    Option("max_iterations", _positive_int, "RLM_MAX_ITERATIONS"),
    Option("max_depth", _positive_int, "RLM_MAX_DEPTH"),
    Option("max_budget", _positive_float, "RLM_MAX_BUDGET"),
    Option("max_timeout", _positive_float, "RLM_MAX_TIMEOUT"),
    Option("max_tokens", _positive_int, "RLM_MAX_TOKENS"),
    Option("context_window", _positive_int, "RLM_CONTEXT_WINDOW"),
    Option("log_dir", str, "RLM_LOG_DIR"),
    Option("host", str, "RLM_HOST", "serve"),
    Option("port", _port, "RLM_PORT", "serve"),
    Option("max_concurrency", _positive_int, "RLM_MAX_CONCURRENCY", "serve"),
    Option("max_body_mb", _positive_float, "RLM_MAX_BODY_MB", "serve"),
    Option("max_sessions", _positive_int, "RLM_MAX_SESSIONS", "serve"),
    Option("session_ttl", _positive_float, "RLM_SESSION_TTL", "serve"),
    Option("header_timeout", _positive_float, "RLM_HEADER_TIMEOUT", "serve"),
    Option("idle_timeout", _positive_float, "RLM_IDLE_TIMEOUT", "serve"),
    Option("max_connections", _positive_int, "RLM_MAX_CONNECTIONS", "serve"),
    Option("session_grace", _non_negative_float, "RLM_SESSION_GRACE", "serve"),
    Option("body_timeout", _positive_float, "RLM_BODY_TIMEOUT", "serve"),
    Option("keep_alive", _positive_int, "RLM_KEEP_ALIVE", "serve"),
    Option("shutdown_timeout", _non_negative_float, "RLM_SHUTDOWN_TIMEOUT", "serve"),
    Option("context_roots", _path_list, "RLM_MCP_CONTEXT_ROOTS", "mcp"),
    Option("max_context_mb", _positive_float, "RLM_MCP_MAX_CONTEXT_MB", "mcp"),
)
_BY_NAME = {o.name: o for o in OPTIONS}


@dataclass(frozen=True)
class Settings:
    """The resolved configuration; ``sources`` says where each non-default came from."""

    backend: str | None = None
    model: str | None = None
    base_url: str | None = None
    api_key_env: str | None = None
    backend_kwargs: dict[str, Any] = field(default_factory=dict)
    env: str = "local"
    max_iterations: int | None = None  # None: the backend's default (30, or 4 embedded)
    max_depth: int = 1
    max_budget: float | None = None
    max_timeout: float | None = None
    max_tokens: int | None = None
    context_window: int | None = None  # the model's window in tokens (None: ask / table)
    log_dir: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    max_concurrency: int = 4
    max_body_mb: float = 32.0
    max_sessions: int | None = None  # None: 64, or --max-concurrency if that is more
    session_ttl: float = 3600.0
    header_timeout: float = 10.0  # rlm serve: seconds to receive a request's headers
    idle_timeout: float = 30.0  # ... and between bytes of its body
    max_connections: int = 256
    session_grace: float | None = None  # None: 120 s in memory, 0 with a session store
    body_timeout: float = 30.0  # seconds for a request's whole body to arrive
    keep_alive: int = 5  # seconds an idle keep-alive connection stays open
    shutdown_timeout: float = 10.0  # on SIGTERM: seconds to finish requests in flight
    context_roots: tuple[str, ...] = ()  # rlm mcp: () is the working directory
    max_context_mb: float = 100.0
    config_path: str | None = None
    sources: dict[str, str] = field(default_factory=dict)


# -- the three layers ----------------------------------------------------------------


def find_config_file(
    flag: str | None, environ: Mapping[str, str], cwd: Path, home: Path
) -> Path | None:
    explicit = flag or environ.get("RLM_CONFIG")
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise CLIUsageError(f"config file {explicit}: no such file")
        return path
    for candidate in (cwd / "rlm.toml", home / ".config" / "rlm" / "rlm.toml"):
        if candidate.is_file():
            return candidate
    return None


def _reject_secrets(where: str, mapping: Mapping[str, Any]) -> None:
    for key, value in mapping.items():
        if key != "api_key_env" and any(word in key.lower() for word in SECRET_WORDS):
            raise CLIUsageError(
                f"{where}: {key!r} looks like a secret; secrets come from the environment "
                "only (set api_key_env to the variable that holds the key)"
            )
        if isinstance(value, Mapping):
            _reject_secrets(where, value)


def backend_kwargs_flag(text: str) -> dict[str, Any]:
    """``--backend-kwargs``'s argparse type: its errors never echo the value (argparse's
    own "invalid value: ..." message would, keys and all)."""
    try:
        return _json_object(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{exc} (the value is not shown: it may hold "
                                         "secrets)") from None  # fmt: skip


def flag_type(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """``parse`` as an argparse ``type``: its ``ValueError`` becomes the message
    ("argument --max-depth: must be at least 1 (got '0')"), where argparse would say
    "invalid _positive_int value"."""

    def convert(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"{exc} (got {text!r})") from None

    convert.__name__ = parse.__name__.strip("_")
    return convert


POSITIVE_INT = flag_type(_positive_int)
POSITIVE_FLOAT = flag_type(_positive_float)
NON_NEGATIVE_FLOAT = flag_type(_non_negative_float)
PORT = flag_type(_port)


def _coerce(option: Option, value: Any, where: str) -> Any:
    try:
        if option.name == "backend_kwargs":
            if isinstance(value, str):
                return _json_object(value)
            if not isinstance(value, dict):
                raise ValueError("must be a table")
            return dict(value)
        if option.name == "context_roots" and isinstance(value, list | tuple):
            return _path_list(os.pathsep.join(str(v) for v in value))
        if isinstance(value, bool):  # bool is an int subclass; never a valid setting here
            raise ValueError("expected a number or a string")
        return option.parse(str(value))
    except ValueError as exc:
        if option.name == "backend_kwargs":  # may hold keys: never echoed, even redacted
            raise CLIUsageError(f"{where}: {exc} (the value is not shown: it may hold "
                                "secrets)") from None  # fmt: skip
        raise CLIUsageError(f"{where}: invalid value {redact_text(repr(value))} ({exc})") from None


def file_layer(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise CLIUsageError(f"config file {path}: {exc}") from None
    _reject_secrets(str(path), data)
    layer: dict[str, Any] = {}
    tables: list[tuple[str, dict[str, Any]]] = []
    for name in ("serve", "mcp"):
        entries = data.pop(name, {})
        if not isinstance(entries, dict):
            raise CLIUsageError(f"{path}: [{name}] must be a table")
        tables.append((name, entries))
    for table, entries in [("", data), *tables]:
        for key, value in entries.items():
            option = _BY_NAME.get(key)
            if option is None or option.table != table:
                where = f"[{table}] " if table else ""
                raise CLIUsageError(f"{path}: unknown setting {where}{key!r}")
            layer[key] = _coerce(option, value, f"{path}: {key}")
    return layer


def env_layer(environ: Mapping[str, str]) -> dict[str, Any]:
    return {o.name: _coerce(o, environ[o.env], o.env) for o in OPTIONS if environ.get(o.env)}


def flag_layer(args: argparse.Namespace) -> dict[str, Any]:
    layer: dict[str, Any] = {}
    for option in OPTIONS:
        value = getattr(args, option.name, None)
        if value is not None:
            layer[option.name] = tuple(value) if isinstance(value, list) else value
    if "backend_kwargs" in layer:
        _reject_secrets("--backend-kwargs", layer["backend_kwargs"])
    return layer


def resolve(
    args: argparse.Namespace,
    environ: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    home: Path | None = None,
) -> Settings:
    """Merge the layers: a flag beats an environment variable beats the file."""
    environ = os.environ if environ is None else environ
    path = find_config_file(
        getattr(args, "config", None), environ, cwd or Path.cwd(), home or Path.home()
    )
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for origin, layer in (
        ("file", file_layer(path)),
        ("env", env_layer(environ)),
        ("flag", flag_layer(args)),
    ):
        values.update(layer)
        sources.update(dict.fromkeys(layer, origin))
    return Settings(**values, config_path=str(path) if path else None, sources=sources)


# -- flags ---------------------------------------------------------------------------


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """The flags every command that builds an RLM shares (all default to None, so an
    unset flag lets the environment or the file decide)."""
    g = parser.add_argument_group("model and limits (flags > RLM_* env vars > rlm.toml)")
    g.add_argument("--config", metavar="FILE", help="an rlm.toml (default: ./rlm.toml, "
                   "then ~/.config/rlm/rlm.toml; env RLM_CONFIG)")  # fmt: skip
    from rlm.clients.registry import backend_names
    from rlm.environments import environment_names

    backends, envs = backend_names(), environment_names()
    g.add_argument("--backend", metavar="NAME", choices=backends,
                   help=f"one of: {', '.join(backends)} (default: from --base-url / API "
                   "keys, else llama_cpp, the embedded model)")  # fmt: skip
    g.add_argument("--model", help="model name (or a .gguf path for llama_cpp)")
    g.add_argument("--base-url", help="an OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1 "
                   "(it gets $OPENAI_API_KEY when set, as in Python; see --api-key-env)")  # fmt: skip
    g.add_argument("--api-key-env", metavar="VAR",
                   help="send the key held in $VAR (e.g. for a --base-url server)")  # fmt: skip
    g.add_argument(
        "--backend-kwargs",
        metavar="JSON|@FILE",
        type=backend_kwargs_flag,
        help="extra client arguments as a JSON object, e.g. '{\"timeout\": 60}'",
    )
    g.add_argument("--env", metavar="NAME", choices=envs,
                   help=f"where model-written code runs, one of: {', '.join(envs)} "
                   "(default: local)")  # fmt: skip
    g.add_argument("--max-iterations", type=POSITIVE_INT,
                   help="default 30 (4 for the embedded smoke-test model)")  # fmt: skip
    g.add_argument("--max-depth", type=POSITIVE_INT, help="recursion depth (default: 1)")
    g.add_argument("--max-budget", type=POSITIVE_FLOAT, metavar="USD",
                   help="stop above this spend")  # fmt: skip
    g.add_argument("--max-timeout", type=POSITIVE_FLOAT, metavar="SECONDS",
                   help="stop after this long")  # fmt: skip
    g.add_argument("--max-tokens", type=POSITIVE_INT, help="stop above this many tokens in + out")
    g.add_argument("--context-window", type=POSITIVE_INT, metavar="TOKENS",
                   help="the model's context window (default: what the server reports, "
                   "else rlmx's table); sub-call prompts that cannot fit fail before "
                   "they are sent")  # fmt: skip
    g.add_argument("--log-dir", help="write trajectories as JSONL into this directory")
