"""``rlm.base.json_schema``: the stdlib JSON Schema validator behind ``output_schema``.

No Pydantic here: a JSON Schema dict is checked by rlmx's own validator, and each
failure names its JSON path.
"""

from __future__ import annotations

from typing import Any

import pytest

from rlm.base.json_schema import (
    SchemaError,
    check_schema,
    response_name,
    strict_compatible,
    validate,
)

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 20},
        "age": {"type": "integer", "minimum": 0, "maximum": 150},
        "email": {"type": ["string", "null"], "pattern": "^[^@]+@[^@]+$"},
        "role": {"enum": ["admin", "user"]},
        "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 3, "uniqueItems": True},
        "kind": {"const": "person"},
    },
    "required": ["name", "age", "kind"],
    "additionalProperties": False,
}

TREE = {
    "$defs": {
        "node": {
            "type": "object",
            "properties": {
                "value": {"type": "number"},
                "children": {"type": "array", "items": {"$ref": "#/$defs/node"}},
            },
            "required": ["value", "children"],
            "additionalProperties": False,
        }
    },
    "$ref": "#/$defs/node",
}

SHAPE = {
    "anyOf": [
        {
            "type": "object",
            "properties": {"circle": {"type": "number", "exclusiveMinimum": 0}},
            "required": ["circle"],
            "additionalProperties": False,
        },
        {
            "type": "object",
            "properties": {
                "rect": {
                    "type": "array",
                    "prefixItems": [{"type": "number"}, {"type": "number"}],
                    "minItems": 2,
                    "maxItems": 2,
                }
            },
            "required": ["rect"],
            "additionalProperties": False,
        },
    ]
}

GOOD: list[tuple[dict[str, Any], Any]] = [
    (PERSON, {"name": "Ann", "age": 30, "kind": "person"}),
    (PERSON, {"name": "Bo", "age": 0, "kind": "person", "email": None, "tags": ["a", "b"]}),
    (PERSON, {"name": "Cy", "age": 150, "kind": "person", "email": "c@d.e", "role": "admin"}),
    (PERSON, {"name": "Cy", "age": 2.0, "kind": "person"}),  # 2.0 is an integer in JSON
    (TREE, {"value": 1, "children": []}),
    (TREE, {"value": 1.5, "children": [{"value": 2, "children": [{"value": 3, "children": []}]}]}),
    (SHAPE, {"circle": 2.5}),
    (SHAPE, {"rect": [1, 2]}),
    ({"type": "string", "nullable": True}, None),
    ({"type": "number", "multipleOf": 0.5}, 2.5),
    ({"type": "object", "additionalProperties": {"type": "integer"}}, {"a": 1, "b": 2}),
    ({"type": "array", "items": {"type": "boolean"}}, [True, False]),
    ({"oneOf": [{"type": "string"}, {"type": "integer"}]}, 3),
    ({"not": {"type": "null"}}, 0),
    ({"allOf": [{"minimum": 1}, {"maximum": 3}]}, 2),
    ({}, {"anything": ["goes"]}),
]

BAD: list[tuple[dict[str, Any], Any, str]] = [
    (PERSON, {"age": 30, "kind": "person"}, "$.name: required property is missing"),
    (PERSON, {"name": "", "age": 30, "kind": "person"}, "$.name: needs at least 1 characters"),
    (PERSON, {"name": "A", "age": -1, "kind": "person"}, "$.age: must be >= 0, got -1"),
    (PERSON, {"name": "A", "age": 1.5, "kind": "person"}, "$.age: expected integer"),
    (PERSON, {"name": "A", "age": True, "kind": "person"}, "$.age: expected integer, got boolean"),
    (
        PERSON,
        {"name": "A", "age": "3", "kind": "person"},
        '$.age: expected integer, got string "3"',
    ),
    (PERSON, {"name": "A", "age": 1, "kind": "robot"}, '$.kind: must be "person"'),
    (PERSON, {"name": "A", "age": 1, "kind": "person", "role": "boss"}, "$.role: must be one of"),
    (PERSON, {"name": "A", "age": 1, "kind": "person", "x": 1}, "$.x: unexpected property"),
    (PERSON, {"name": "A", "age": 1, "kind": "person", "email": "nope"}, "$.email: does not match"),
    (PERSON, {"name": "A", "age": 1, "kind": "person", "tags": [1]}, "$.tags[0]: expected string"),
    (PERSON, {"name": "A", "age": 1, "kind": "person", "tags": ["a", "a"]}, "$.tags[1]: duplicate"),
    (PERSON, {"name": "A", "age": 1, "kind": "person", "tags": list("abcd")}, "at most 3 items"),
    (PERSON, ["not", "an", "object"], "$: expected object, got array"),
    (TREE, {"value": 1, "children": [{"value": "x", "children": []}]}, "$.children[0].value"),
    (TREE, {"value": 1, "children": [{"value": 2}]}, "$.children[0].children: required"),
    (SHAPE, {"circle": 0}, "matches none of the anyOf alternatives"),
    (SHAPE, {"rect": [1]}, "matches none of the anyOf alternatives"),
    ({"type": "string"}, None, "$: expected string, got null"),
    ({"type": "number", "multipleOf": 0.5}, 2.3, "must be a multiple of 0.5"),
    ({"type": "object", "additionalProperties": {"type": "integer"}}, {"a": "1"}, "$.a: expected"),
    ({"oneOf": [{"type": "number"}, {"type": "integer"}]}, 3, "matches 2 oneOf alternatives"),
    ({"not": {"type": "null"}}, None, "must not match"),
    ({"type": "object", "properties": {"a b": {"type": "string"}}}, {"a b": 1}, '$["a b"]'),
    ({"type": "number", "exclusiveMaximum": 10}, 10, "must be < 10"),
    ({"type": "number"}, float("nan"), "expected number"),
]


@pytest.mark.parametrize(("schema", "instance"), GOOD)
def test_valid_instances_pass(schema: dict[str, Any], instance: Any) -> None:
    assert validate(instance, schema) == []


@pytest.mark.parametrize(("schema", "instance", "expected"), BAD)
def test_invalid_instances_name_the_path_and_the_reason(
    schema: dict[str, Any], instance: Any, expected: str
) -> None:
    issues = [str(i) for i in validate(instance, schema)]
    assert issues, f"{instance!r} passed {schema!r}"
    assert any(expected in issue for issue in issues), issues


def test_every_failure_is_reported_not_only_the_first() -> None:
    issues = [str(i) for i in validate({"name": 3, "age": "x", "extra": 1}, PERSON)]
    assert any(i.startswith("$.name:") for i in issues)
    assert any(i.startswith("$.age:") for i in issues)
    assert any(i.startswith("$.kind:") for i in issues)
    assert any(i.startswith("$.extra:") for i in issues)


def test_a_malformed_schema_is_refused() -> None:
    check_schema(PERSON)
    check_schema(TREE)
    with pytest.raises(SchemaError, match="unknown type 'strnig'"):
        check_schema({"type": "object", "properties": {"a": {"type": "strnig"}}})
    with pytest.raises(SchemaError, match="points at nothing"):
        check_schema({"$ref": "#/$defs/missing"})
    with pytest.raises(SchemaError, match="must be a dict"):
        check_schema(["type", "object"])
    with pytest.raises(SchemaError, match="only references inside"):
        validate(1, {"$ref": "https://example.com/schema.json"})


def test_strict_compatibility_follows_openai_rules() -> None:
    assert strict_compatible(PERSON) is False  # optional properties
    strict = {**PERSON, "required": list(PERSON["properties"])}
    assert strict_compatible(strict) is True
    assert strict_compatible(TREE) is True
    assert strict_compatible({"type": "object", "properties": {}}) is False  # extras allowed


def test_response_names_are_what_providers_accept() -> None:
    assert response_name("City facts!") == "City_facts"
    assert response_name("") == "answer"
    assert response_name(None) == "answer"
    assert len(response_name("x" * 100)) == 64
