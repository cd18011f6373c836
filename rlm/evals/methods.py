"""Methods: how a task is answered, on the same model and the same tasks.

A ``MethodSpec`` is JSON-able (it travels to Ray workers and into ``suite.json``):

* ``base``: the model called once with the context in the prompt, the context cut in
  the middle to fit the model's window (``context_window`` tokens, else the llama.cpp
  ``n_ctx``, else the model's known limit) and the cut stated in each result;
* ``rlm``: ``RLM(backend=..., backend_kwargs=..., **rlm_kwargs).completion(...)``;
  the presets ``rlm-d1`` and ``rlm-d2`` are ``max_depth`` 1 and 2;
* ``rlms``: the same ``RLM(...)`` arguments run by the ``rlms`` package in another
  interpreter (``python``), in a subprocess (``rlms_bridge``).

``rlm_kwargs`` may hold any ``RLM.__init__`` argument that is plain data (numbers,
strings, lists, tables); callables, loggers and session stores are refused.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from rlm.base.redact import is_sensitive_key, redact_secrets
from rlm.evals.records import digest

KINDS = ("base", "rlm", "rlms")
PRESETS: dict[str, tuple[str, dict[str, Any]]] = {
    "base": ("base", {}),
    "rlm-d1": ("rlm", {"max_depth": 1}),
    "rlm-d2": ("rlm", {"max_depth": 2}),
}
DEFAULT_METHODS = ("base", "rlm-d1", "rlm-d2")
# ``RLM(...)`` arguments a method never sets (with ``RUN_HOOKS``: callbacks, stores).
_NOT_DATA = {
    "self",
    "backend",
    "backend_kwargs",
    "persistent",
    "custom_tools",
    "custom_sub_tools",
    "depth",
}


class MethodError(ValueError):
    """A method is misconfigured (unknown kind or argument, missing interpreter...)."""


@lru_cache(maxsize=1)
def rlm_arguments() -> frozenset[str]:
    """The ``RLM(...)`` arguments a method may set (read from its signature)."""
    from rlm.core.config import RUN_HOOKS
    from rlm.core.rlm import RLM

    return frozenset(inspect.signature(RLM.__init__).parameters) - _NOT_DATA - RUN_HOOKS


def _without_secrets(kwargs: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in kwargs.items() if not is_sensitive_key(k)}


@dataclass(frozen=True)
class MethodSpec:
    """One way of answering; see the module docstring."""

    name: str
    kind: str
    backend: str
    backend_kwargs: dict[str, Any] = field(default_factory=dict)
    rlm_kwargs: dict[str, Any] = field(default_factory=dict)
    context_window: int | None = None
    python: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise MethodError(
                f"method {self.name!r}: unknown kind {self.kind!r} ({', '.join(KINDS)})"
            )
        bad = sorted(set(self.rlm_kwargs) - rlm_arguments())
        if bad:
            raise MethodError(
                f"method {self.name!r}: unknown RLM argument(s) {', '.join(bad)}; "
                f"known: {', '.join(sorted(rlm_arguments()))}"
            )
        if self.kind == "rlms" and not self.python:
            raise MethodError(f"method {self.name!r}: kind 'rlms' needs python = PATH")
        if self.context_window is not None and self.context_window < 64:
            raise MethodError(f"method {self.name!r}: context_window must be >= 64 tokens")

    @property
    def fingerprint(self) -> str:
        """What makes two runs of this method comparable (secrets left out)."""
        return digest(
            [
                self.kind,
                self.backend,
                _without_secrets(self.backend_kwargs),
                self.rlm_kwargs,
                self.context_window,
                self.python,
            ]
        )

    @property
    def model_name(self) -> str:
        return str(self.backend_kwargs.get("model_name") or self.backend)

    def describe(self) -> dict[str, Any]:
        """A JSON-able, secret-free description (for ``suite.json`` and the report)."""
        out: dict[str, Any] = {
            "name": self.name,
            "kind": self.kind,
            "backend": self.backend,
            "backend_kwargs": redact_secrets(_without_secrets(self.backend_kwargs)),
            "rlm_kwargs": redact_secrets(self.rlm_kwargs),
            "fingerprint": self.fingerprint,
        }
        if self.context_window is not None:
            out["context_window"] = self.context_window
        if self.python:
            out["python"] = self.python
        return out


def _for_kind(kind: str, backend_kwargs: dict[str, Any]) -> dict[str, Any]:
    """A base call is a plain completion: no ``code_prefill`` (it opens a REPL block)."""
    if kind == "base":
        return {k: v for k, v in backend_kwargs.items() if k != "code_prefill"}
    return dict(backend_kwargs)


def preset(
    name: str,
    backend: str,
    backend_kwargs: dict[str, Any],
    rlm_defaults: dict[str, Any] | None = None,
) -> MethodSpec:
    """A built-in method (``base``, ``rlm-d1``, ``rlm-d2``) on the given model."""
    try:
        kind, extra = PRESETS[name]
    except KeyError:
        raise MethodError(
            f"unknown method {name!r}; built in: {', '.join(PRESETS)} (define others in a "
            "[methods.NAME] table of the --config file)"
        ) from None
    rlm_kwargs = {} if kind == "base" else {**(rlm_defaults or {}), **extra}
    return MethodSpec(name, kind, backend, _for_kind(kind, backend_kwargs), rlm_kwargs)


def rlms_method(
    python: str,
    backend: str,
    backend_kwargs: dict[str, Any],
    rlm_defaults: dict[str, Any] | None = None,
    name: str = "rlms",
) -> MethodSpec:
    """``rlms`` itself at depth 1, in the interpreter ``python`` (local REPL by default:
    ``rlms`` has no ``sandbox`` environment)."""
    defaults = dict(rlm_defaults or {})
    if defaults.get("environment") in (None, "sandbox"):
        defaults["environment"] = "local"
    return MethodSpec(
        name, "rlms", backend, dict(backend_kwargs), {**defaults, "max_depth": 1}, python=python
    )


def method_from_table(
    name: str,
    table: dict[str, Any],
    backend: str,
    backend_kwargs: dict[str, Any],
    rlm_defaults: dict[str, Any],
) -> MethodSpec:
    """A method from a ``[methods.NAME]`` TOML table (model settings default to the
    file's ``[model]``, RLM settings to its ``[rlm]``)."""
    table = dict(table)
    kind = str(table.pop("kind", "rlm"))
    own_backend = str(table.pop("backend", backend))
    kwargs = table.pop("backend_kwargs", None)
    if kwargs is not None and not isinstance(kwargs, dict):
        raise MethodError(f"method {name!r}: backend_kwargs must be a table")
    merged = dict(backend_kwargs) if own_backend == backend else {}
    merged.update(kwargs or {})
    window = table.pop("context_window", None)
    python = table.pop("python", None)
    table.pop("description", None)
    if kind == "base":
        if table:
            raise MethodError(
                f"method {name!r}: a base method takes no RLM arguments ({', '.join(table)})"
            )
        rlm_kwargs: dict[str, Any] = {}
    else:
        rlm_kwargs = {**rlm_defaults, **table}
        if kind == "rlms" and rlm_kwargs.get("environment") in (None, "sandbox"):
            rlm_kwargs["environment"] = "local"
    return MethodSpec(
        name,
        kind,
        own_backend,
        _for_kind(kind, merged),
        rlm_kwargs,
        context_window=int(window) if window is not None else None,
        python=str(python) if python else None,
    )
