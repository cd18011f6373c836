"""Typed sub-calls: ``llm_query(prompt, schema=...)`` on the engine's side.

The REPL (``rlm.environments.worker.typed_query``) turns the caller's schema (a Pydantic
model, a TypedDict, a dataclass, a type hint or a JSON Schema dict) into its wire form,
``{"name": ..., "schema": {...}}``, and sends it with the prompt. Here, as data from
model-written code (perhaps from a worker), it is checked (``SubcallSchema.of``: a JSON
Schema no bigger than ``MAX_SCHEMA_CHARS``) and the call is made in rounds:

1. every prompt is sent with the schema told in a last user message, in the client's
   structured-output mode where it has one (``CallPipeline``'s ``schema=``);
2. each reply is read as JSON (a fenced block is unwrapped; a Python literal or, for a
   string schema, plain text is accepted) and checked against the schema;
3. a reply that does not match is asked again, its errors shown after it, up to
   ``ATTEMPTS`` sends in all; the prompts still pending go together, as one batch.

A prompt ends as a completion whose ``response`` is the value's JSON text and
``parsed`` the value, or as a failed completion whose ``error`` names the schema and
the last errors. A call that failed (a provider error after the governor's retries, a
refusal) is not asked again. The usage of every send is the prompt's.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from rlm.base.errors import ConfigurationError
from rlm.base.images import loggable
from rlm.base.json_schema import ResponseSchema
from rlm.base.types import Prompt, RLMChatCompletion, UsageSummary
from rlm.core.output_schema import OutputSchema, ask_messages, decode_answer

ATTEMPTS = 3  # sends per prompt at most: the first and two repairs
MAX_SCHEMA_CHARS = 64_000  # a schema's JSON text, as REPL code sent it
_SHOWN_ERRORS = 8

# Sends a list of prompts in structured-output mode; one completion per prompt (a
# failed one has ``error`` set), or raises for a single call that failed.
Send = Callable[[list[Prompt], ResponseSchema], list[RLMChatCompletion]]


class SubcallSchema:
    """The schema of one typed sub-call, checked."""

    __slots__ = ("output",)

    def __init__(self, output: OutputSchema) -> None:
        self.output = output

    @classmethod
    def of(cls, wire: Any) -> SubcallSchema:
        """The REPL's ``{"name", "schema"}`` (or a bare JSON Schema dict), checked;
        ``ConfigurationError`` saying what is wrong."""
        if not isinstance(wire, dict):
            raise ConfigurationError(
                f"llm_query schema must be a JSON Schema object, got {type(wire).__name__}"
            )
        schema, name = wire.get("schema", wire), wire.get("name")
        if not isinstance(schema, dict):
            raise ConfigurationError("llm_query schema must be a JSON Schema object")
        try:
            size = len(json.dumps(schema))
        except (TypeError, ValueError) as exc:
            raise ConfigurationError(f"llm_query schema is not JSON: {exc}") from exc
        if size > MAX_SCHEMA_CHARS:
            raise ConfigurationError(
                f"llm_query schema is {size:,} characters of JSON; at most "
                f"{MAX_SCHEMA_CHARS:,} are accepted"
            )
        try:
            output = OutputSchema.of(schema, name if isinstance(name, str) else None)
        except ConfigurationError as exc:
            raise ConfigurationError(str(exc).replace("output_schema", "llm_query schema")) from exc
        return cls(output)

    @property
    def name(self) -> str:
        return self.output.name

    def response_schema(self) -> ResponseSchema:
        return self.output.response_schema()

    def first_messages(self, prompt: Prompt) -> list[dict[str, Any]]:
        """``prompt`` as messages, the schema told in a last user message."""
        return ask_messages(prompt, self.output)

    def check(self, text: str) -> tuple[Any, list[str]]:
        """A reply's value and ``[]``, or ``None`` and what does not match (a reply that
        is not JSON at all is said to be so, not taken for a JSON string)."""
        value, errors = self.output.check(text)
        if errors and decode_answer(text) is text:
            shown = text.strip()
            shown = shown if len(shown) <= 80 else shown[:77] + "..."
            return None, [f"$: the reply is not JSON: {shown!r}"]
        return value, errors

    def repair_messages(
        self, sent: list[dict[str, Any]], reply: str, errors: list[str]
    ) -> list[dict[str, Any]]:
        """The conversation so far, the refused reply and why it was refused."""
        shown = "\n".join(f"- {e}" for e in errors[:_SHOWN_ERRORS])
        more = (
            f"\n- ... ({len(errors) - _SHOWN_ERRORS} more)" if len(errors) > _SHOWN_ERRORS else ""
        )
        note = (
            f'That reply does not match the JSON Schema "{self.name}":\n{shown}{more}\n'
            "Reply again with only the corrected JSON value, and nothing else."
        )
        return [*sent, {"role": "assistant", "content": reply}, {"role": "user", "content": note}]

    def refusal(self, errors: list[str], attempts: int) -> str:
        shown = "; ".join(errors[:_SHOWN_ERRORS])
        more = f"; ... ({len(errors) - _SHOWN_ERRORS} more)" if len(errors) > _SHOWN_ERRORS else ""
        tries = "attempt" if attempts == 1 else "attempts"
        return (
            f'the reply does not match the schema "{self.name}" after {attempts} {tries}: '
            f"{shown}{more}"
        )


def ask_typed(
    send: Send, prompts: list[Prompt], schema: SubcallSchema, attempts: int = ATTEMPTS
) -> list[RLMChatCompletion]:
    """Every prompt answered with a value that matches ``schema`` (see the module
    docstring), in prompt order."""
    started = time.perf_counter()
    response_schema = schema.response_schema()
    conversations = [schema.first_messages(p) for p in prompts]
    usage = [UsageSummary() for _ in prompts]
    results: list[RLMChatCompletion | None] = [None] * len(prompts)
    pending = list(range(len(prompts)))
    for attempt in range(1, attempts + 1):
        replies = send([conversations[i] for i in pending], response_schema)
        still: list[int] = []
        for i, reply in zip(pending, replies, strict=True):
            usage[i].merge(reply.usage_summary)
            if reply.error:
                results[i] = reply
                continue
            value, errors = schema.check(reply.response)
            if not errors:
                reply.response = json.dumps(value, ensure_ascii=False)
                reply.parsed = value
                results[i] = reply
            elif attempt == attempts:
                reply.error = schema.refusal(errors, attempts)
                reply.response = ""
                results[i] = reply
            else:
                conversations[i] = schema.repair_messages(conversations[i], reply.response, errors)
                still.append(i)
        pending = still
        if not pending:
            break
    elapsed = time.perf_counter() - started
    done: list[RLMChatCompletion] = []
    for i, result in enumerate(results):
        assert result is not None
        result.usage_summary = usage[i]
        result.prompt = loggable(prompts[i])
        result.execution_time = elapsed
        done.append(result)
    return done


def refused(prompts: list[Prompt], model: str | None, error: Exception) -> list[RLMChatCompletion]:
    """One failed completion per prompt: the schema could not be used."""
    now = time.perf_counter()
    return [
        RLMChatCompletion(
            root_model=model or "",
            prompt=loggable(p),
            response="",
            usage_summary=UsageSummary(),
            execution_time=time.perf_counter() - now,
            error=str(error),
        )
        for p in prompts
    ]


__all__ = ["ATTEMPTS", "MAX_SCHEMA_CHARS", "SubcallSchema", "ask_typed", "refused"]
