"""``output_schema``: what the answer of a run must look like, and how it is checked.

``OutputSchema.of(spec)`` accepts a Pydantic model class (used by duck typing:
``model_json_schema``/``model_validate``; Pydantic is an optional extra,
``rlmx[pydantic]``), a ``TypedDict``, a dataclass, or a JSON Schema dict (checked with
``rlm.base.json_schema``, no Pydantic needed). Each becomes:

* ``json_schema``: the JSON Schema told to the model and to the provider
  (``response_schema()``, a ``ResponseSchema`` for structured-output calls);
* ``check(answer_text)``: ``(typed object, [])`` or ``(None, readable errors)``; the
  object is a Pydantic instance, a dataclass instance or a plain dict/list/value;
* ``dump(obj)``: the object's JSON text (the result's ``.response``).

The text a run submits is read as JSON, else as a Python literal (``str()`` of a dict
put in ``answer["content"]``), else as plain text.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import re
import textwrap
from typing import TYPE_CHECKING, Any, Literal

from rlm.base.errors import ConfigurationError, SchemaValidationError
from rlm.base.json_schema import (
    ResponseSchema,
    SchemaError,
    check_schema,
    response_name,
    strict_compatible,
    validate,
)
from rlm.base.types import RLMChatCompletion
from rlm.clients.base_lm import CallPurpose
from rlm.environments.worker.schema_types import (
    build,
    is_dataclass_type,
    is_typeddict,
    type_schema,
)

if TYPE_CHECKING:
    from rlm.core.config import RLMConfig
    from rlm.core.lm_handler import LMHandler

DEFAULT_SCHEMA_REPAIRS = 3
_FENCE = re.compile(r"^\s*```[A-Za-z0-9_-]*[ \t]*\r?\n(.*?)\r?\n\s*```\s*$", re.DOTALL)
_MAX_SCHEMA_CHARS = 12_000

Kind = Literal["pydantic", "dataclass", "typeddict", "json_schema"]


def _is_pydantic_model(spec: Any) -> bool:
    return (
        isinstance(spec, type)
        and callable(getattr(spec, "model_json_schema", None))
        and callable(getattr(spec, "model_validate", None))
    )


def _pydantic_issues(exc: Exception) -> list[str]:
    """A Pydantic ``ValidationError`` as ``$.path: message`` lines."""
    errors = getattr(exc, "errors", None)
    if not callable(errors):
        return [f"$: {exc}"]
    lines = []
    for error in errors():
        path = "$"
        for part in error.get("loc", ()):
            path += f"[{part}]" if isinstance(part, int) else f".{part}"
        lines.append(f"{path}: {error.get('msg', 'invalid')}")
    return lines or [f"$: {exc}"]


def decode_answer(text: str) -> Any:
    """The value a submitted answer's text stands for: JSON, else a Python literal (a
    dict put in ``answer["content"]`` arrives as its ``str()``), else the text itself.
    A fenced block (```json ... ```) is unwrapped first."""
    body = text.strip()
    fenced = _FENCE.match(body)
    if fenced:
        body = fenced.group(1).strip()
    try:
        return json.loads(body)
    except ValueError:
        pass
    if body[:1] in "{[(\"'":
        try:
            return ast.literal_eval(body)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            pass
    return text


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple | set | frozenset):
        return [_jsonable(v) for v in value]
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


def to_jsonable(obj: Any) -> Any:
    """A parsed answer as plain JSON values (Pydantic models, dataclasses, enums)."""
    dump = getattr(obj, "model_dump", None)
    if callable(dump) and not isinstance(obj, type):
        return dump(mode="json")
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return _jsonable(json.loads(json.dumps(dataclasses.asdict(obj), default=_default)))
    return _jsonable(json.loads(json.dumps(obj, default=_default)))


def _default(value: Any) -> Any:
    enum_value = getattr(value, "value", None)
    if enum_value is not None:
        return enum_value
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


class OutputSchema:
    """A normalised ``output_schema``; build it with ``OutputSchema.of``."""

    def __init__(
        self,
        kind: Kind,
        target: Any,
        json_schema: dict[str, Any],
        name: str,
        repairs: int = DEFAULT_SCHEMA_REPAIRS,
    ) -> None:
        if isinstance(repairs, bool) or not isinstance(repairs, int) or repairs < 0:
            raise ConfigurationError(f"schema_repairs must be an int >= 0, got {repairs!r}")
        self.kind = kind
        self.target = target
        self.json_schema = json_schema
        self.name = response_name(name)
        self.repairs = repairs  # refused answers the model is asked to fix, at most

    @classmethod
    def of(cls, spec: Any, name: str | None = None, repairs: int | None = None) -> OutputSchema:
        """``spec`` normalised, allowing ``repairs`` (default 3) refused answers to be
        fixed; ``ConfigurationError`` if it is none of the accepted forms or its schema
        is malformed."""
        try:
            made = cls._of(spec, name)
        except TypeError as exc:  # a type hint with no JSON Schema
            raise ConfigurationError(f"output_schema: {exc}") from exc
        if repairs is None:
            return made
        return cls(made.kind, made.target, made.json_schema, made.name, repairs)

    @classmethod
    def _of(cls, spec: Any, name: str | None) -> OutputSchema:
        if isinstance(spec, OutputSchema):
            return spec
        if _is_pydantic_model(spec):
            schema = spec.model_json_schema()
            return cls("pydantic", spec, schema, name or spec.__name__)
        if is_typeddict(spec):
            return cls("typeddict", spec, type_schema(spec), name or spec.__name__)
        if is_dataclass_type(spec):
            return cls("dataclass", spec, type_schema(spec), name or spec.__name__)
        if isinstance(spec, dict):
            try:
                check_schema(spec)
            except SchemaError as exc:
                raise ConfigurationError(
                    f"output_schema is not a usable JSON Schema: {exc}"
                ) from exc
            title = spec.get("title")
            return cls("json_schema", None, spec, name or (title if isinstance(title, str) else ""))
        raise ConfigurationError(
            "output_schema must be a Pydantic model class, a TypedDict, a dataclass or a JSON "
            f"Schema dict; got {spec!r}"
        )

    # -- checking ----------------------------------------------------------------------

    def validate(self, value: Any) -> tuple[Any, list[str]]:
        """``value`` as the typed object, or ``(None, errors)``."""
        if self.kind == "pydantic":
            try:
                return self.target.model_validate(value), []
            except Exception as exc:  # pydantic.ValidationError, without importing it
                return None, _pydantic_issues(exc)
        try:
            issues = validate(value, self.json_schema)
        except SchemaError as exc:
            raise ConfigurationError(f"output_schema cannot be checked: {exc}") from exc
        if issues:
            return None, [str(issue) for issue in issues]
        if self.kind in ("dataclass", "typeddict"):
            try:
                return build(self.target, value), []
            except (TypeError, ValueError) as exc:
                return None, [f"$: cannot build {self.target.__name__}: {exc}"]
        return _jsonable(value), []

    def check(self, text: str) -> tuple[Any, list[str]]:
        """A submitted answer's text, decoded and validated: ``(object, [])`` or
        ``(None, errors)``. Plain text is tried too when the decoded value fails (an
        answer that is a string)."""
        value = decode_answer(text)
        parsed, errors = self.validate(value)
        if errors and value is not text:
            plain, plain_errors = self.validate(text)
            if not plain_errors:
                return plain, []
        return parsed, errors

    def dump(self, obj: Any) -> str:
        """The JSON text of a validated object."""
        if self.kind == "pydantic":
            return str(obj.model_dump_json())
        return json.dumps(to_jsonable(obj), ensure_ascii=False)

    # -- telling -----------------------------------------------------------------------

    def schema_text(self) -> str:
        text = json.dumps(self.json_schema, indent=1, ensure_ascii=False)
        if len(text) > _MAX_SCHEMA_CHARS:
            text = json.dumps(self.json_schema, separators=(",", ":"), ensure_ascii=False)
        return text

    def response_schema(self) -> ResponseSchema:
        """The structured-output request a client sends for this schema."""
        return ResponseSchema(self.name, self.json_schema, strict_compatible(self.json_schema))

    def prompt_section(self) -> str:
        """What the system prompt says about the answer's form."""
        return textwrap.dedent(
            """\
            The final answer must be a JSON value that matches this JSON Schema ("{name}"):
            ```json
            {schema}
            ```
            Submit it as a Python object in the REPL: `answer["content"] = {{...}}` (a dict or
            list of plain values: str, int, float, bool, None, dict, list; for a Pydantic
            object or a dataclass pass `.model_dump()` / `dataclasses.asdict(...)`), then
            `answer["ready"] = True`. Or write FINAL(<the JSON>) at the start of a line outside
            any code block. The answer is checked against the schema; if it does not match, the
            errors are shown to you and you submit a corrected answer."""
        ).format(name=self.name, schema=self.schema_text())

    def repair_note(self, errors: list[str], repair: int, repairs: int) -> str:
        """The REPL output that tells the model its answer was refused and why."""
        shown = "\n".join(f"- {e}" for e in errors[:20])
        more = f"\n- ... ({len(errors) - 20} more)" if len(errors) > 20 else ""
        return (
            f"Schema check failed: the submitted answer does not match the output schema "
            f'"{self.name}" (repair {repair} of {repairs}). Errors:\n{shown}{more}\n'
            '`answer` is now {"content": "", "ready": False} again. Fix the answer and submit it '
            'again (set answer["content"] and then answer["ready"] = True, or FINAL(<the JSON>)).'
        )

    def final_prompt(self) -> str:
        """The "answer now" request when the iterations ran out."""
        return (
            "You have used all your turns. Reply now with your final answer to the query, "
            "based on what you have found so far, as a single JSON value matching the JSON "
            f'Schema "{self.name}" below, and nothing else:\n{self.schema_text()}'
        )


# -- an RLM at its depth limit: one call -----------------------------------------------


def ask_messages(prompt: Any, output: OutputSchema) -> list[dict[str, Any]]:
    if isinstance(prompt, str):
        messages = [{"role": "user", "content": prompt}]
    elif isinstance(prompt, dict) and "role" in prompt:
        messages = [dict(prompt)]
    elif isinstance(prompt, list) and all(isinstance(m, dict) and "role" in m for m in prompt):
        messages = [dict(m) for m in prompt]
    else:
        messages = [{"role": "user", "content": str(prompt)}]
    ask = (
        "Answer with a single JSON value matching the JSON Schema "
        f'"{output.name}" below, and nothing else:\n{output.schema_text()}'
    )
    return [*messages, {"role": "user", "content": ask}]


def _typed(completion: RLMChatCompletion, output: OutputSchema) -> RLMChatCompletion:
    parsed, errors = output.check(completion.response)
    if errors:
        raise SchemaValidationError(completion.response, errors, output.name, 0)
    completion.response, completion.parsed = output.dump(parsed), parsed
    return completion


def ask_directly(
    handler: LMHandler, prompt: Any, config: RLMConfig, output: OutputSchema
) -> RLMChatCompletion:
    """An RLM at its depth limit with ``output_schema``: one call in the provider's
    structured-output mode, validated (``SchemaValidationError`` if it does not match)."""
    messages = ask_messages(prompt, output)
    completion = handler.call(
        messages,
        config.model_override,
        0,
        None,
        purpose=CallPurpose.FINAL_ANSWER,
        schema=output.response_schema(),
    )
    return _typed(completion, output)


async def aask_directly(
    handler: LMHandler, prompt: Any, config: RLMConfig, output: OutputSchema
) -> RLMChatCompletion:
    """Async form of ``ask_directly``."""
    messages = ask_messages(prompt, output)
    completion = await handler.acall(
        messages,
        config.model_override,
        0,
        None,
        purpose=CallPurpose.FINAL_ANSWER,
        schema=output.response_schema(),
    )
    return _typed(completion, output)


__all__ = [
    "DEFAULT_SCHEMA_REPAIRS",
    "OutputSchema",
    "aask_directly",
    "ask_directly",
    "decode_answer",
    "to_jsonable",
]
