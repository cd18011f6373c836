"""JSON Schema, validated with the standard library alone.

``validate(instance, schema)`` returns a list of ``SchemaIssue`` (empty: valid), each with
a JSON path (``$.people[0].age``) and a readable message. It covers what OpenAI's strict
structured outputs accept and a little more: ``type`` (a name or a list of names),
``properties``, ``required``, ``additionalProperties`` (a bool or a schema),
``patternProperties``, ``min/maxProperties``, ``items``, ``prefixItems``, ``min/maxItems``,
``uniqueItems``, ``enum``, ``const``, ``anyOf``, ``oneOf``, ``allOf``, ``not``, ``$ref`` to
``#``, ``#/$defs/...`` or ``#/definitions/...``, OpenAPI's ``nullable``, string
``minLength``/``maxLength``/``pattern``, and number ``minimum``/``maximum``/
``exclusiveMinimum``/``exclusiveMaximum``/``multipleOf``. Other keywords (``format``,
``description``, ``title``, ``default``) are annotations and are not checked.

``ResponseSchema`` is what a client is handed for a structured-output call: a name, the
schema and whether the provider may enforce it strictly (``strict_compatible``).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

TYPE_NAMES = frozenset({"string", "number", "integer", "boolean", "object", "array", "null"})
_NAME_CHARS = re.compile(r"[^A-Za-z0-9_-]")
_MAX_ISSUES = 50


@dataclass(frozen=True)
class SchemaIssue:
    """One reason an instance does not match: where (a JSON path) and why."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


@dataclass(frozen=True)
class ResponseSchema:
    """A structured-output request for a client: ``name`` (letters, digits, ``_``, ``-``;
    at most 64), the JSON ``schema``, and ``strict`` (the schema meets OpenAI's strict
    rules, so a provider may enforce it exactly)."""

    name: str
    schema: dict[str, Any] = field(hash=False)
    strict: bool = False
    description: str | None = None


class SchemaError(ValueError):
    """The schema itself is malformed (not the instance)."""


def response_name(name: str | None) -> str:
    """``name`` as a provider accepts it: ``[A-Za-z0-9_-]{1,64}`` (``answer`` if empty)."""
    cleaned = _NAME_CHARS.sub("_", name or "").strip("_")[:64]
    return cleaned or "answer"


def type_name(value: Any) -> str:
    """The JSON type of a Python value ("object" for a dict, "integer" for 3, ...)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _is_type(value: Any, name: str) -> bool:
    actual = type_name(value)
    if name == "number":
        return actual in ("integer", "number") and not (
            isinstance(value, float) and math.isnan(value)
        )
    if name == "integer" and isinstance(value, float):
        return value.is_integer()
    return actual == name


def _child(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    if key.isidentifier():
        return f"{path}.{key}"
    return f"{path}[{json.dumps(key)}]"


def _short(value: Any, limit: int = 60) -> str:
    try:
        text = json.dumps(value, ensure_ascii=False, default=repr)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _equal(a: Any, b: Any) -> bool:
    """JSON equality: 1 == 1.0, but True is not 1."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


class _Validator:
    def __init__(self, root: dict[str, Any]) -> None:
        self.root = root

    def resolve(self, ref: str) -> Any:
        if ref == "#":
            return self.root
        if not ref.startswith("#/"):
            raise SchemaError(f"$ref {ref!r}: only references inside the schema ('#/...') work")
        node: Any = self.root
        for part in ref[2:].split("/"):
            part = part.replace("~1", "/").replace("~0", "~")
            if not isinstance(node, dict) or part not in node:
                raise SchemaError(f"$ref {ref!r} points at nothing in the schema")
            node = node[part]
        return node

    def check(self, value: Any, schema: Any, path: str, depth: int = 0) -> Iterator[SchemaIssue]:
        if depth > 200:
            raise SchemaError("the schema's $ref chain does not end (over 200 levels)")
        if schema is True or schema == {}:
            return
        if schema is False:
            yield SchemaIssue(path, "no value is allowed here")
            return
        if not isinstance(schema, dict):
            raise SchemaError(f"a schema must be an object or a boolean, got {_short(schema)}")
        if "$ref" in schema:
            yield from self.check(value, self.resolve(schema["$ref"]), path, depth + 1)
            rest = {k: v for k, v in schema.items() if k not in ("$ref", "$defs", "definitions")}
            if not rest:
                return
            schema = rest
        if schema.get("nullable") is True and value is None:
            return
        if "type" in schema:
            names = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
            if not any(_is_type(value, n) for n in names):
                wanted = " or ".join(str(n) for n in names)
                yield SchemaIssue(
                    path, f"expected {wanted}, got {type_name(value)} {_short(value)}"
                )
                return
        if "const" in schema and not _equal(value, schema["const"]):
            yield SchemaIssue(path, f"must be {_short(schema['const'])}, got {_short(value)}")
        if "enum" in schema and not any(_equal(value, e) for e in schema["enum"]):
            allowed = ", ".join(_short(e, 30) for e in schema["enum"][:20])
            yield SchemaIssue(path, f"must be one of [{allowed}], got {_short(value)}")
        yield from self._combinators(value, schema, path, depth)
        kind = type_name(value)
        if kind == "object":
            yield from self._object(value, schema, path, depth)
        elif kind == "array":
            yield from self._array(list(value), schema, path, depth)
        elif kind == "string":
            yield from self._string(value, schema, path)
        elif kind in ("integer", "number"):
            yield from self._number(value, schema, path)

    def _combinators(
        self, value: Any, schema: dict[str, Any], path: str, depth: int
    ) -> Iterator[SchemaIssue]:
        for sub in schema.get("allOf", ()):
            yield from self.check(value, sub, path, depth + 1)
        if "anyOf" in schema or "oneOf" in schema:
            key = "anyOf" if "anyOf" in schema else "oneOf"
            results = [list(self.check(value, sub, path, depth + 1)) for sub in schema[key]]
            matched = sum(1 for issues in results if not issues)
            if matched == 0:
                closest = min(results, key=len)
                detail = "; ".join(str(i) for i in closest[:3])
                yield SchemaIssue(path, f"matches none of the {key} alternatives ({detail})")
            elif key == "oneOf" and matched > 1:
                yield SchemaIssue(path, f"matches {matched} oneOf alternatives, exactly 1 allowed")
        if "not" in schema and not list(self.check(value, schema["not"], path, depth + 1)):
            yield SchemaIssue(path, "matches a schema it must not match ('not')")

    def _object(
        self, value: dict[str, Any], schema: dict[str, Any], path: str, depth: int
    ) -> Iterator[SchemaIssue]:
        properties = schema.get("properties") or {}
        for name in schema.get("required", ()):
            if name not in value:
                yield SchemaIssue(_child(path, name), "required property is missing")
        patterns = schema.get("patternProperties") or {}
        extra = schema.get("additionalProperties", True)
        for key, item in value.items():
            if not isinstance(key, str):
                yield SchemaIssue(path, f"object keys must be strings, got {_short(key)}")
                continue
            where = _child(path, key)
            matched = False
            if key in properties:
                matched = True
                yield from self.check(item, properties[key], where, depth + 1)
            for pattern, sub in patterns.items():
                if re.search(pattern, key):
                    matched = True
                    yield from self.check(item, sub, where, depth + 1)
            if matched:
                continue
            if extra is False:
                allowed = ", ".join(sorted(properties)) or "none"
                yield SchemaIssue(where, f"unexpected property (allowed: {allowed})")
            elif isinstance(extra, dict):
                yield from self.check(item, extra, where, depth + 1)
        count = len(value)
        if "minProperties" in schema and count < schema["minProperties"]:
            yield SchemaIssue(path, f"needs at least {schema['minProperties']} properties")
        if "maxProperties" in schema and count > schema["maxProperties"]:
            yield SchemaIssue(path, f"takes at most {schema['maxProperties']} properties")

    def _array(
        self, value: list[Any], schema: dict[str, Any], path: str, depth: int
    ) -> Iterator[SchemaIssue]:
        prefix = schema.get("prefixItems") or []
        for index, sub in enumerate(prefix[: len(value)]):
            yield from self.check(value[index], sub, _child(path, index), depth + 1)
        items = schema.get("items")
        if isinstance(items, list):  # draft-4 tuple form
            for index, sub in enumerate(items[: len(value)]):
                yield from self.check(value[index], sub, _child(path, index), depth + 1)
        elif items is not None:
            for index in range(len(prefix), len(value)):
                yield from self.check(value[index], items, _child(path, index), depth + 1)
        if "minItems" in schema and len(value) < schema["minItems"]:
            yield SchemaIssue(path, f"needs at least {schema['minItems']} items, got {len(value)}")
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            yield SchemaIssue(path, f"takes at most {schema['maxItems']} items, got {len(value)}")
        if schema.get("uniqueItems"):
            for i, item in enumerate(value):
                if any(_equal(item, other) for other in value[:i]):
                    yield SchemaIssue(_child(path, i), "duplicate item (uniqueItems)")
                    break

    def _string(self, value: str, schema: dict[str, Any], path: str) -> Iterator[SchemaIssue]:
        if "minLength" in schema and len(value) < schema["minLength"]:
            yield SchemaIssue(path, f"needs at least {schema['minLength']} characters")
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            yield SchemaIssue(path, f"takes at most {schema['maxLength']} characters")
        if "pattern" in schema and not re.search(schema["pattern"], value):
            yield SchemaIssue(path, f"does not match the pattern {schema['pattern']!r}")

    def _number(self, value: float, schema: dict[str, Any], path: str) -> Iterator[SchemaIssue]:
        low, high = schema.get("minimum"), schema.get("maximum")
        xlow, xhigh = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")
        if isinstance(xlow, bool):  # draft 4: a flag on minimum
            xlow, low = (low, None) if xlow else (None, low)
        if isinstance(xhigh, bool):
            xhigh, high = (high, None) if xhigh else (None, high)
        if low is not None and value < low:
            yield SchemaIssue(path, f"must be >= {low}, got {value}")
        if high is not None and value > high:
            yield SchemaIssue(path, f"must be <= {high}, got {value}")
        if xlow is not None and value <= xlow:
            yield SchemaIssue(path, f"must be > {xlow}, got {value}")
        if xhigh is not None and value >= xhigh:
            yield SchemaIssue(path, f"must be < {xhigh}, got {value}")
        step = schema.get("multipleOf")
        if step:
            ratio = value / step
            if not math.isclose(ratio, round(ratio), rel_tol=0, abs_tol=1e-9):
                yield SchemaIssue(path, f"must be a multiple of {step}, got {value}")


def validate(instance: Any, schema: dict[str, Any] | bool) -> list[SchemaIssue]:
    """Every way ``instance`` fails ``schema`` (at most 50), in document order; empty if
    it is valid. Raises ``SchemaError`` for a malformed schema (a dangling ``$ref``)."""
    root = schema if isinstance(schema, dict) else {}
    issues: list[SchemaIssue] = []
    for issue in _Validator(root).check(instance, schema, "$"):
        issues.append(issue)
        if len(issues) >= _MAX_ISSUES:
            break
    return issues


def check_schema(schema: Any) -> None:
    """Raise ``SchemaError`` if ``schema`` is not a usable JSON Schema: not an object,
    an unknown ``type`` name, a ``$ref`` that points at nothing."""
    if not isinstance(schema, dict):
        raise SchemaError(f"a JSON Schema must be a dict, got {type(schema).__name__}")
    validator = _Validator(schema)

    def walk(node: Any, where: str) -> None:
        if isinstance(node, list):
            for index, item in enumerate(node):
                walk(item, f"{where}[{index}]")
            return
        if not isinstance(node, dict):
            return
        kind = node.get("type")
        for name in kind if isinstance(kind, list) else [kind] if kind is not None else []:
            if name not in TYPE_NAMES:
                raise SchemaError(f"{where}: unknown type {name!r} (one of {sorted(TYPE_NAMES)})")
        if isinstance(node.get("$ref"), str):
            validator.resolve(node["$ref"])
        for key, sub in node.items():
            if key in ("enum", "const", "default", "examples"):
                continue
            if key in ("properties", "patternProperties", "$defs", "definitions"):
                if isinstance(sub, dict):
                    for name, child in sub.items():
                        walk(child, f"{where}.{key}.{name}")
                continue
            walk(sub, f"{where}.{key}")

    walk(schema, "schema")


def strict_compatible(schema: dict[str, Any]) -> bool:
    """True if ``schema`` meets OpenAI's strict mode: every object lists all its
    properties as required and forbids others, and no keyword strict mode rejects."""
    unsupported = {"patternProperties", "oneOf", "allOf", "not", "minProperties", "maxProperties"}

    def ok(node: Any) -> bool:
        if isinstance(node, list):
            return all(ok(item) for item in node)
        if not isinstance(node, dict):
            return True
        if unsupported & node.keys():
            return False
        kinds = node.get("type")
        is_object = kinds == "object" or (isinstance(kinds, list) and "object" in kinds)
        if is_object or "properties" in node:
            props = node.get("properties") or {}
            if node.get("additionalProperties") is not False:
                return False
            if set(node.get("required") or ()) != set(props):
                return False
        return all(
            ok(v) for k, v in node.items() if k not in ("enum", "const", "default", "examples")
        )

    return ok(schema)


__all__ = [
    "ResponseSchema",
    "SchemaError",
    "SchemaIssue",
    "check_schema",
    "response_name",
    "strict_compatible",
    "type_name",
    "validate",
]
