"""Python type hints as JSON Schema, and JSON values built back into those types.

``type_schema(tp)`` turns a ``TypedDict``, a dataclass or a plain hint (``str``,
``list[int]``, ``dict[str, float]``, ``X | None``, ``Literal[...]``, an ``Enum``, nested
TypedDicts and dataclasses) into a JSON Schema; ``build(tp, value)`` turns a value that
schema validated into the typed object (dataclass instances, enum members, tuples).
Standard library only, Python 3.9 compatible: the REPL uses it where it runs (a worker
included) for ``llm_query(..., schema=)``, the engine for ``output_schema``. Pydantic
models are handled by their own methods. A type with no JSON Schema raises
``TypeError``.
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

_PRIMITIVES: dict[Any, dict[str, Any]] = {
    str: {"type": "string"},
    int: {"type": "integer"},
    float: {"type": "number"},
    bool: {"type": "boolean"},
    type(None): {"type": "null"},
}
_REQUIRED_MARKERS = {"Required", "NotRequired", "ReadOnly"}
# ``X | Y`` (Python 3.10+) next to ``Union[X, Y]``.
_UNIONS = tuple(u for u in (Union, getattr(types, "UnionType", None)) if u is not None)


def is_typeddict(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, dict) and hasattr(tp, "__required_keys__")


def is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _required_key(tp: Any, name: str, hint: Any) -> bool:
    """Whether a TypedDict key is required. ``Required``/``NotRequired`` are read from
    the hint itself: Python 3.11 misses them in string annotations
    (``from __future__ import annotations``)."""
    marker = getattr(get_origin(hint), "_name", None)
    if marker == "NotRequired":
        return False
    if marker == "Required":
        return True
    return name in tp.__required_keys__


def _hints(tp: type, extras: bool = False) -> dict[str, Any]:
    try:
        return get_type_hints(tp, include_extras=extras)
    except Exception as exc:  # a forward reference that cannot be resolved
        raise TypeError(
            f"Cannot read the type hints of {tp.__name__} for a JSON Schema: {exc}"
        ) from exc


def _unwrap(tp: Any) -> Any:
    """``Required[X]``/``NotRequired[X]``/``Annotated[X, ...]`` -> ``X``."""
    while True:
        origin = get_origin(tp)
        name = getattr(origin, "_name", None) or getattr(origin, "__name__", "")
        if origin is typing.Annotated or name in _REQUIRED_MARKERS:
            tp = get_args(tp)[0]
        else:
            return tp


def type_schema(tp: Any, seen: tuple[Any, ...] = ()) -> dict[str, Any]:
    """The JSON Schema of the hint ``tp``. Raises ``TypeError`` for a type that
    has none (a recursive class, a callable, ...)."""
    tp = _unwrap(tp)
    if tp is Any or tp is object:
        return {}
    if tp in _PRIMITIVES:
        return dict(_PRIMITIVES[tp])
    if tp in seen:
        raise TypeError(
            f"{getattr(tp, '__name__', tp)} refers to itself: use a Pydantic model or a "
            "JSON Schema dict with $ref for a recursive schema"
        )
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return {"enum": [member.value for member in tp]}
    if is_typeddict(tp):
        hints = _hints(tp, extras=True)
        props = {name: type_schema(hint, (*seen, tp)) for name, hint in hints.items()}
        required = [name for name, hint in hints.items() if _required_key(tp, name, hint)]
        return _object(tp.__name__, props, required)
    if is_dataclass_type(tp):
        hints = _hints(tp)
        props, required = {}, []
        for f in dataclasses.fields(tp):
            props[f.name] = type_schema(hints.get(f.name, Any), (*seen, tp))
            no_default = f.default is dataclasses.MISSING
            if no_default and f.default_factory is dataclasses.MISSING:
                required.append(f.name)
        return _object(tp.__name__, props, required)
    origin, args = get_origin(tp), get_args(tp)
    if origin is Literal:
        return {"enum": list(args)}
    if origin in _UNIONS:
        return {"anyOf": [type_schema(a, seen) for a in args]}
    if origin in (list, set, frozenset) or (origin is not None and origin.__name__ == "Sequence"):
        return {"type": "array", "items": type_schema(args[0], seen) if args else {}}
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return {"type": "array", "items": type_schema(args[0], seen)}
        items = [type_schema(a, seen) for a in args]
        return {
            "type": "array",
            "prefixItems": items,
            "minItems": len(items),
            "maxItems": len(items),
        }
    if origin is dict or (origin is not None and origin.__name__ == "Mapping"):
        value = type_schema(args[1], seen) if len(args) == 2 else {}
        return {"type": "object", "additionalProperties": value}
    if tp in (list, tuple, set):
        return {"type": "array"}
    if tp is dict:
        return {"type": "object"}
    raise TypeError(f"no JSON Schema for the type {tp!r}")


def _object(title: str, props: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {
        "type": "object",
        "title": title,
        "properties": props,
        "required": required,
        "additionalProperties": False,
    }


def _matches(tp: Any, value: Any) -> bool:
    """Whether ``value`` has the shape of ``tp`` at its top level (which alternative of
    a union to build): the value already passed the union's schema as a whole."""
    tp = _unwrap(tp)
    if tp is Any or tp is object:
        return True
    if tp is type(None):
        return value is None
    if tp is bool or tp is str:
        return isinstance(value, tp)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return value in [member.value for member in tp]
    if is_typeddict(tp):
        return isinstance(value, dict) and set(tp.__required_keys__) <= set(value)
    if is_dataclass_type(tp):
        names = {f.name for f in dataclasses.fields(tp)}
        return isinstance(value, dict) and set(value) <= names
    origin, args = get_origin(tp), get_args(tp)
    if origin is Literal:
        return value in args
    if origin in _UNIONS:
        return any(_matches(a, value) for a in args)
    if origin in (list, set, frozenset, tuple) or tp in (list, tuple, set):
        return isinstance(value, list)
    if origin is dict or tp is dict:
        return isinstance(value, dict)
    return True


def build(tp: Any, value: Any) -> Any:
    """``value`` (valid against ``type_schema(tp)``) as the typed object: dataclasses are
    instantiated (nested too), enums become members, tuples and sets their types."""
    tp = _unwrap(tp)
    if value is None or tp is Any or tp is object or tp in _PRIMITIVES:
        if tp is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        return value
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return tp(value)
    if is_dataclass_type(tp):
        hints = _hints(tp)
        kwargs = {k: build(hints.get(k, Any), v) for k, v in value.items()}
        return tp(**kwargs)
    if is_typeddict(tp):
        hints = _hints(tp)
        return {k: build(hints.get(k, Any), v) for k, v in value.items()}
    origin, args = get_origin(tp), get_args(tp)
    if origin in _UNIONS:
        for option in args:  # the first alternative that builds from the value
            try:
                if _matches(option, value):
                    return build(option, value)
            except (TypeError, ValueError, KeyError, AttributeError):
                continue
        return value
    if origin in (list, set, frozenset) and args:
        items = [build(args[0], v) for v in value]
        return items if origin is list else origin(items)
    if origin is tuple and args:
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(build(args[0], v) for v in value)
        return tuple(build(a, v) for a, v in zip(args, value))  # noqa: B905 (3.9)
    if origin is dict and len(args) == 2:
        return {k: build(args[1], v) for k, v in value.items()}
    return value


__all__ = ["build", "is_dataclass_type", "is_typeddict", "type_schema"]
