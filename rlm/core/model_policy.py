"""Which models REPL code may name, and the errors of calls that are not made.

Model-written code chooses the ``model`` of ``llm_query``/``rlm_query``. By default it
may only name the models the operator registered: the root model, the
``other_backends`` models, the clients registered on the handler, and
``RLM(allowed_models=[...])``; ``allowed_models="*"`` lets it name any model. The check
is made where REPL code reaches the handler (``LMRoute``, the handler socket,
``rlm_query``); Python code calling the handler itself is not restricted.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any

from rlm.base.errors import ConfigurationError

ANY_MODEL = "*"
_SHOWN = 12  # allowed names listed in an error, at most

AllowedModels = Iterable[str] | str | None


class ModelNotAllowedError(ConfigurationError):
    """REPL code named a model the operator did not register."""

    def __init__(self, model: str, allowed: list[str]) -> None:
        self.model = model
        shown = ", ".join(repr(m) for m in allowed[:_SHOWN])
        if len(allowed) > _SHOWN:
            shown += f" and {len(allowed) - _SHOWN} more"
        names = f"only {shown}" if shown else "no model by name"
        super().__init__(
            f"model {model!r} is not available: code here may name {names}, or pass no "
            "model to use the default. The operator can allow more models with "
            "RLM(allowed_models=[...]), or any model with allowed_models='*'."
        )


class UnpricedModelError(ConfigurationError):
    """``max_budget`` is set and a call's model has no known price."""

    def __init__(self, model: str) -> None:
        self.model = model
        bare = model.rsplit("/", 1)[-1]
        super().__init__(
            f"model {model!r} has no known price, so max_budget cannot be enforced for it; "
            f"the call was not made. Register its price with "
            f"rlm.clients.pricing.register_price({bare!r}, input_usd_per_million, "
            "output_usd_per_million) (0, 0 for a free model), or run without max_budget."
        )


def validate_allowed_models(value: Any) -> tuple[str, ...] | str:
    """``"*"``, or the names as a tuple; raises ``ConfigurationError`` otherwise."""
    if value is None:
        return ()
    if isinstance(value, str):
        if value == ANY_MODEL:
            return ANY_MODEL
        raise ConfigurationError(
            f"allowed_models must be a list of model names or '*', got the string {value!r} "
            f"(did you mean allowed_models=[{value!r}]?)"
        )
    try:
        names = tuple(value)
    except TypeError:
        raise ConfigurationError(
            f"allowed_models must be a list of model names or '*', got {type(value).__name__}"
        ) from None
    for name in names:
        if not isinstance(name, str) or not name:
            raise ConfigurationError(f"allowed_models entries must be model names, got {name!r}")
    return names


class ModelPolicy:
    """The model names REPL code may pass (thread-safe; names can be added)."""

    def __init__(self, allowed: AllowedModels = None) -> None:
        checked = validate_allowed_models(allowed)
        self.any_model = checked == ANY_MODEL
        self._names: set[str] = set() if isinstance(checked, str) else set(checked)
        self._lock = threading.Lock()

    def allow(self, *names: str) -> None:
        """Let REPL code name each of ``names`` (empty names are ignored)."""
        with self._lock:
            self._names.update(n for n in names if n)

    @property
    def names(self) -> list[str]:
        with self._lock:
            return sorted(self._names)

    def allows(self, model: str | None) -> bool:
        if not model or self.any_model:
            return True
        with self._lock:
            return model in self._names

    def check(self, model: str | None) -> None:
        """Raise ``ModelNotAllowedError`` unless REPL code may name ``model``."""
        if not self.allows(model):
            assert model is not None
            raise ModelNotAllowedError(model, self.names)


def reports_cost(client: Any) -> bool:
    """True if ``client`` declares that each call's usage carries its real cost."""
    return getattr(client, "reports_cost", False) is True


__all__ = [
    "ANY_MODEL",
    "AllowedModels",
    "ModelNotAllowedError",
    "ModelPolicy",
    "UnpricedModelError",
    "reports_cost",
    "validate_allowed_models",
]
