"""``llm_query(prompt, schema=...)``: the REPL's side of a typed sub-call.

``TypedQuery.of(spec)`` accepts what a caller means by "the reply must look like this":

* a Pydantic model class (used by duck typing: ``model_json_schema``/``model_validate``);
* a ``TypedDict``, a dataclass, or a type hint (``int``, ``list[str]``,
  ``dict[str, float]``, ``Literal["yes", "no"]``, ``X | None``, an ``Enum``);
* a JSON Schema dict.

Its ``wire`` (``{"name", "schema"}``) goes to the engine with the prompt: the engine asks
the model in the provider's structured-output mode where it has one, checks the reply
against the schema and asks again with the errors (``rlm.core.typed_subcall``), then
answers with the value's JSON text, or ``Error: ...``. ``result(text)`` turns that text
into the caller's type: a model instance, a dataclass, a dict, a list, a value; an error
becomes a ``QueryError``, which is the ``Error: ...`` string an untyped ``llm_query``
returns, so a failed slot of a batch is a value like the others, never an exception.

Standard library only, Python 3.9 compatible: it runs where the REPL runs.
"""

from __future__ import annotations

import json
from typing import Any

from rlm.environments.worker.schema_types import build, type_schema

_ERROR = "Error: "


class QueryError(str):
    """A sub-call that gave no value: the ``"Error: ..."`` text, recognisable with
    ``isinstance(reply, QueryError)``; ``.error`` is the text after ``Error: ``."""

    __slots__ = ()

    @property
    def error(self) -> str:
        return self[len(_ERROR) :] if self.startswith(_ERROR) else str(self)


def _is_pydantic_model(spec: Any) -> bool:
    return (
        isinstance(spec, type)
        and callable(getattr(spec, "model_json_schema", None))
        and callable(getattr(spec, "model_validate", None))
    )


def _name(spec: Any) -> str:
    if getattr(spec, "__args__", None):  # list[int], X | None: no name of its own
        return "reply"
    name = getattr(spec, "__name__", None)
    return name if isinstance(name, str) and name.isidentifier() else "reply"


class TypedQuery:
    """One ``schema=`` argument, made ready to send and to read replies with."""

    __slots__ = ("kind", "name", "schema", "target")

    def __init__(self, kind: str, target: Any, schema: dict[str, Any], name: str) -> None:
        self.kind = kind  # "pydantic" | "type" | "json_schema"
        self.target = target
        self.schema = schema
        self.name = name

    @classmethod
    def of(cls, spec: Any) -> TypedQuery:
        """``TypeError`` for a ``spec`` that is none of the accepted forms."""
        if isinstance(spec, dict):
            title = spec.get("title")
            return cls("json_schema", None, spec, title if isinstance(title, str) else "reply")
        if _is_pydantic_model(spec):
            return cls("pydantic", spec, spec.model_json_schema(), spec.__name__)
        try:
            schema = type_schema(spec)
        except TypeError as exc:
            raise TypeError(
                "llm_query schema= must be a Pydantic model class, a TypedDict, a "
                f"dataclass, a type hint such as list[str], or a JSON Schema dict ({exc})"
            ) from None
        return cls("type", spec, schema, _name(spec))

    @property
    def wire(self) -> dict[str, Any]:
        return {"name": self.name, "schema": self.schema}

    def result(self, text: str) -> Any:
        """The engine's answer as the caller's type, or a ``QueryError``."""
        if text.startswith(_ERROR):
            return QueryError(text)
        try:
            value = json.loads(text)
        except ValueError:
            return QueryError(f"{_ERROR}the reply is not JSON: {text[:200]!r}")
        try:
            if self.kind == "pydantic":
                return self.target.model_validate(value)
            if self.kind == "type":
                return build(self.target, value)
        except Exception as exc:  # pydantic's ValidationError, a dataclass's TypeError
            what = getattr(self.target, "__name__", repr(self.target))
            return QueryError(f"{_ERROR}the reply does not make a {what}: {exc}")
        return value


__all__ = ["QueryError", "TypedQuery"]
