"""What code written for ``rlms`` reaches inside the client modules.

``rlms`` imports each SDK at the top of its client module, so its tests (and its users')
patch the SDK through that module: ``patch("rlm.clients.openai.openai.OpenAI")``,
``patch("rlm.clients.gemini.genai.Client")``. rlmx keeps its core free of third-party
packages, so each client module names its SDK lazily instead: a ``LazySDK`` backs the
module's ``__getattr__`` and imports the SDK on first access, raising ``MissingExtraError``
(an ``ImportError`` naming the extra) when it is not installed. Clients reach their SDK
through ``LazySDK.get``, which reads the module attribute, so whatever a test patched or
a user assigned there is what they use.

``EnvDefaults`` keeps ``rlms``'s ``DEFAULT_*_API_KEY`` module constants, and
``RlmsUsageAttributes`` its per-client usage attributes (``model_call_counts``,
``last_prompt_tokens``...), both backed by rlmx's own state.
"""

from __future__ import annotations

import importlib
import os
from collections import defaultdict
from collections.abc import Callable, Mapping
from typing import Any

from rlm.base.errors import MissingAPIKeyError, MissingExtraError
from rlm.base.types import ModelUsageSummary
from rlm.clients.usage import UsageTracker


class LazySDK:
    """A client module's SDK names, imported on first access.

    ``names`` maps each attribute to ``"module"`` or ``"module:attribute"``, e.g.
    ``{"genai": "google.genai", "Portkey": "portkey_ai:Portkey"}``. Use it as::

        _SDK = LazySDK(globals(), {"openai": "openai"}, "The openai backend", "openai")

        def __getattr__(name: str) -> Any:
            return _SDK.resolve(name)
    """

    def __init__(
        self,
        namespace: dict[str, Any],
        names: Mapping[str, str],
        what: str,
        extra: str,
        package: str | None = None,
    ) -> None:
        self._namespace = namespace
        self._module = str(namespace.get("__name__", "?"))
        self._names = dict(names)
        self._what, self._extra, self._package = what, extra, package

    @property
    def names(self) -> frozenset[str]:
        return frozenset(self._names)

    def resolve(self, name: str) -> Any:
        """The SDK object behind ``name`` (the module ``__getattr__``)."""
        target = self._names.get(name)
        if target is None:
            raise AttributeError(f"module {self._module!r} has no attribute {name!r}")
        module_name, _, attribute = target.partition(":")
        parts = module_name.split(".")
        try:  # each package on the way, so a blocked SDK blocks its submodules too
            module = importlib.import_module(parts[0])
            for depth in range(2, len(parts) + 1):
                module = importlib.import_module(".".join(parts[:depth]))
        except ImportError as exc:
            raise MissingExtraError(self._what, self._extra, self._package) from exc
        return getattr(module, attribute) if attribute else module

    def get(self, name: str) -> Any:
        """The module's attribute ``name``: a patched or assigned value, else the SDK's."""
        if name in self._namespace:
            return self._namespace[name]
        return self.resolve(name)

    def original(self, name: str) -> Any:
        """The SDK's own ``name`` whatever was patched (for its exception classes), or the
        module attribute when the SDK is not installed and a stand-in was assigned."""
        try:
            return self.resolve(name)
        except MissingExtraError:
            return self.get(name)


class EnvDefaults:
    """``rlms``'s ``DEFAULT_*`` constants: environment variables as read at import.

    ``rlms`` reads each variable once, at import; rlmx reads the environment again each
    time a client is built, so a variable set (or removed) later counts. A constant that
    was reassigned since import (``patch("rlm.clients.gemini.DEFAULT_GEMINI_API_KEY",
    None)``, or a plain assignment) wins over the environment, as it would in ``rlms``.
    """

    def __init__(self, namespace: dict[str, Any], constants: Mapping[str, str]) -> None:
        self._namespace = namespace
        self._env = dict(constants)  # constant name -> environment variable
        self._imported = {name: namespace.get(name) for name in constants}

    def value(self, constant: str) -> str | None:
        current = self._namespace.get(constant)
        if current != self._imported[constant]:
            return current if current is None else str(current)
        return os.environ.get(self._env[constant]) or None

    def for_env(self, env_var: str) -> str | None:
        """The key held by ``env_var``, through its constant when one mirrors it."""
        for constant, var in self._env.items():
            if var == env_var:
                return self.value(constant)
        return os.environ.get(env_var) or None


def as_number(value: Any) -> float | None:
    """A reported count or cost; anything else (``None``, a test's ``MagicMock``) is unknown."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        return float(value)
    except ValueError:
        return None


def as_count(value: Any) -> int:
    """A reported token count, 0 when unknown."""
    return int(as_number(value) or 0)


class APIKeyRequiredError(MissingAPIKeyError, ValueError):
    """A ``MissingAPIKeyError`` that is also the ``ValueError`` ``rlms`` raises.

    ``provider`` (e.g. ``"Gemini"``) puts ``rlms``'s wording first:
    "Gemini API key is required. The 'gemini' backend needs an API key: set ...".
    """

    def __init__(self, backend: str, env_var: str, provider: str | None = None) -> None:
        super().__init__(backend, env_var)
        if provider:
            self.args = (f"{provider} API key is required. {self.args[0]}",)


def require_key(
    api_key: str | None,
    defaults: EnvDefaults,
    backend: str,
    provider: str,
    env_var: str,
    *fallbacks: str,
) -> str:
    """The explicit key, else the first of ``env_var`` and ``fallbacks`` that holds one.

    Variables are read through ``defaults``, so the module's ``DEFAULT_*`` constants count.
    """
    for name in (env_var, *fallbacks):
        api_key = api_key or defaults.for_env(name)
    if not api_key:
        raise APIKeyRequiredError(backend, env_var, provider)
    return api_key


def _per_model(
    usage: UsageTracker, field: Callable[[ModelUsageSummary], int | float | None]
) -> defaultdict[str, Any]:
    counts: defaultdict[str, Any] = defaultdict(int)
    for model, summary in usage.summary().model_usage_summaries.items():
        value = field(summary)
        if value is not None:
            counts[model] = value
    return counts


class RlmsUsageAttributes:
    """``rlms``'s usage attributes, read from this client's ``UsageTracker``.

    The ``model_*`` dictionaries are snapshots (``defaultdict``, so a model never called
    reads as 0). The ``last_*`` attributes describe the caller's last call and may be set,
    as ``rlms`` code does; ``get_last_usage`` then reports the values set.
    """

    _usage: UsageTracker

    @property
    def model_call_counts(self) -> defaultdict[str, int]:
        return _per_model(self._usage, lambda u: u.total_calls)

    @property
    def model_input_tokens(self) -> defaultdict[str, int]:
        return _per_model(self._usage, lambda u: u.total_input_tokens)

    @property
    def model_output_tokens(self) -> defaultdict[str, int]:
        return _per_model(self._usage, lambda u: u.total_output_tokens)

    @property
    def model_total_tokens(self) -> defaultdict[str, int]:
        return _per_model(self._usage, lambda u: u.total_tokens)

    @property
    def model_costs(self) -> defaultdict[str, float]:
        return _per_model(self._usage, lambda u: u.total_cost or None)

    @property
    def last_prompt_tokens(self) -> int:
        return self._usage.last().total_input_tokens

    @last_prompt_tokens.setter
    def last_prompt_tokens(self, value: int) -> None:
        self._usage.amend_last(total_input_tokens=value)

    @property
    def last_completion_tokens(self) -> int:
        return self._usage.last().total_output_tokens

    @last_completion_tokens.setter
    def last_completion_tokens(self, value: int) -> None:
        self._usage.amend_last(total_output_tokens=value)

    @property
    def last_cost(self) -> float | None:
        return self._usage.last().total_cost

    @last_cost.setter
    def last_cost(self, value: float | None) -> None:
        self._usage.amend_last(total_cost=value)
