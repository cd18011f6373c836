"""Typed sub-calls: ``llm_query(prompt, schema=...)`` and ``llm_query_batched(...,
schema=...)`` return checked values of the caller's type.

The root model and the sub-LM are ``ScriptedLM``s (the root writes the cell, the sub-LM
answers by prompt); the REPL, the relay, the engine's parse-and-retry rounds and the
validation are the real ones, in process, in the sandbox worker and over the handler
socket.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable
from typing import Any

import pytest

from rlm import RLM
from rlm.base.events import Event
from rlm.clients.scripted import ScriptedLM
from rlm.core.lm_handler import LMHandler
from rlm.environments.local_repl import LocalREPL
from rlm.environments.worker.typed_query import QueryError, TypedQuery

Responder = Callable[[Any], str]


def repl(code: str) -> str:
    return f"```repl\n{textwrap.dedent(code).strip()}\n```"


class SubLM:
    """A sub-LM answering each prompt from its own list of replies (keyed by a word of
    the prompt the cell passed), whatever order concurrent calls arrive in."""

    def __init__(self, replies: dict[str, list[str]]) -> None:
        self.replies = {k: list(v) for k, v in replies.items()}
        self.sent: list[list[dict[str, Any]]] = []
        self._lock = threading.Lock()

    def __call__(self, messages: list[dict[str, Any]]) -> str:
        with self._lock:
            self.sent.append(messages)
            asked = str(messages[0]["content"])
            for key, queue in self.replies.items():
                if key in asked:
                    return queue.pop(0) if len(queue) > 1 else queue[0]
        raise AssertionError(f"unexpected prompt {asked!r}")

    def sends(self, key: str) -> list[list[dict[str, Any]]]:
        return [m for m in self.sent if key in str(m[0]["content"])]


def run_cell(
    cell: str, sub: SubLM, environment: str = "local", **kwargs: Any
) -> tuple[str, list[Event], RLM]:
    """One completion whose root model runs ``cell`` (then submits); returns the cell's
    output, the run's events and the RLM (closed)."""
    code = textwrap.dedent(cell).strip() + '\nanswer["content"] = "done"\nanswer["ready"] = True'
    rlm = RLM(
        backend="scripted",
        backend_kwargs={"model_name": "root", "responses": [repl(code)]},
        other_backends=["scripted"],
        other_backend_kwargs=[{"model_name": "sub", "responder": sub}],
        environment=environment,
        **kwargs,
    )
    events: list[Event] = []
    rlm.events.subscribe(events.append)
    try:
        result = rlm.completion("(context)", "q")
    finally:
        rlm.close()
    assert result.response == "done"
    cells = [e for e in events if e.type == "code_cell_finished"]
    assert len(cells) == 1
    output = cells[0].data["result"]
    assert not output.stderr, output.stderr
    return output.stdout, events, rlm


PERSON = """
from typing import TypedDict

class Person(TypedDict):
    name: str
    age: int
"""


def test_an_invalid_reply_is_repaired_and_the_value_has_the_callers_type() -> None:
    sub = SubLM({"Ann": ['{"name": "Ann", "age": "x"}', '```json\n{"name": "Ann", "age": 3}\n```']})
    out, _, _ = run_cell(
        PERSON
        + """
p = llm_query("Who is Ann?", schema=Person)
print(type(p).__name__, p["name"], p["age"] + 1)
""",
        sub,
    )
    assert out.strip() == "dict Ann 4"
    first, second = sub.sends("Ann")
    assert "JSON Schema" in first[-1]["content"] and '"age"' in first[-1]["content"]
    # the repair shows the refused reply and why it was refused
    assert second[-2] == {"role": "assistant", "content": '{"name": "Ann", "age": "x"}'}
    assert "$.age: expected integer" in second[-1]["content"]


def test_nested_pydantic_models_are_built_in_the_repl() -> None:
    pytest.importorskip("pydantic")
    sub = SubLM(
        {
            "order": [
                '{"items": [{"name": "tea", "qty": "two"}]}',
                '{"items": [{"name": "tea", "qty": 2}]}',
            ]
        }
    )
    out, _, _ = run_cell(
        """
from pydantic import BaseModel

class Item(BaseModel):
    name: str
    qty: int

class Order(BaseModel):
    items: list[Item]
    paid: bool = False

o = llm_query("Read the order", schema=Order)
print(type(o).__name__, type(o.items[0]).__name__, o.items[0].qty * 10, o.paid)
""",
        sub,
    )
    assert out.strip() == "Order Item 20 False"
    assert len(sub.sends("order")) == 2


def test_dataclasses_hints_and_json_schema_dicts() -> None:
    sub = SubLM(
        {
            "point": ['{"x": 1, "y": 2.5}'],
            "tags": ['["a", "b"]'],
            "verdict": ['"maybe"', '"yes"'],
            "schema": ['{"n": 7}'],
        }
    )
    out, _, _ = run_cell(
        """
import dataclasses
from typing import Literal

@dataclasses.dataclass
class Point:
    x: int
    y: float

p = llm_query("a point", schema=Point)
t = llm_query("tags please", schema=list[str])
v = llm_query("verdict?", schema=Literal["yes", "no"])
d = llm_query("by schema", schema={"type": "object", "properties": {"n": {"type": "integer"}},
                                   "required": ["n"]})
print(repr(p), t, v, d)
""",
        sub,
    )
    assert out.strip() == "Point(x=1, y=2.5) ['a', 'b'] yes {'n': 7}"


def test_a_reply_that_never_matches_is_a_query_error_after_three_sends() -> None:
    sub = SubLM({"Ann": ["not json at all"]})
    out, events, _ = run_cell(
        PERSON
        + """
p = llm_query("Who is Ann?", schema=Person)
print(type(p).__name__, isinstance(p, str), p.startswith("Error: "))
print(p.error)
""",
        sub,
    )
    first, second = out.strip().splitlines()
    assert first == "QueryError True True"
    assert second.startswith('the reply does not match the schema "Person" after 3 attempts')
    assert "$: the reply is not JSON: 'not json at all'" in second
    assert len(sub.sends("Ann")) == 3
    finished = [e for e in events if e.type == "subcall_finished"]
    assert finished and "does not match" in str(finished[0].data["error"])


def test_a_batch_repairs_only_its_failed_slots_and_one_bad_slot_never_crashes_it() -> None:
    sub = SubLM(
        {
            "Ann": ['{"name": "Ann", "age": 31}'],
            "Bob": ['{"name": "Bob", "age": "forty"}', '{"name": "Bob", "age": 40}'],
            "Cid": ["???"],
        }
    )
    out, events, _ = run_cell(
        PERSON
        + """
people = llm_query_batched(["Ann?", "Bob?", "Cid?"], schema=Person)
print([p["age"] if isinstance(p, dict) else type(p).__name__ for p in people])
""",
        sub,
    )
    assert out.strip() == "[31, 40, 'QueryError']"
    # one send for Ann; Bob repaired once; Cid asked three times
    assert [len(sub.sends(k)) for k in ("Ann", "Bob", "Cid")] == [1, 2, 3]
    finished = [e for e in events if e.type == "subcall_finished"]
    assert finished[0].data["error"].startswith("1 of 3 failed")


class PlainLM(ScriptedLM):
    """A client with no structured-output mode."""

    structured_output = False


def _handler(sub: Responder, structured: bool = True) -> tuple[LMHandler, ScriptedLM]:
    kind = ScriptedLM if structured else PlainLM
    client = kind(model_name="sub", responder=sub)
    return LMHandler(client), client


def test_the_structured_mode_is_used_where_the_client_has_one() -> None:
    sub = SubLM({"Ann": ['{"name": "Ann", "age": "x"}', '{"name": "Ann", "age": 3}']})
    handler, client = _handler(sub)
    wire = TypedQuery.of(
        {"title": "Person", "type": "object", "properties": {"age": {"type": "integer"}}}
    ).wire
    try:
        result = handler.route(1).llm_query("Who is Ann?", None, schema=wire)
    finally:
        handler.close()
    assert result.error is None and json.loads(result.response) == {"name": "Ann", "age": 3}
    assert [s.name for s in client.schemas] == ["Person", "Person"]
    # the usage of both sends is the call's
    usage = result.usage_summary.model_usage_summaries["sub"]
    assert usage.total_calls == 2


def test_without_a_structured_mode_the_schema_is_only_told_in_the_prompt() -> None:
    sub = SubLM({"Ann": ['{"age": 3}']})
    handler, client = _handler(sub, structured=False)
    wire = TypedQuery.of({"type": "object", "properties": {"age": {"type": "integer"}}}).wire
    try:
        result = handler.route(1).llm_query("Who is Ann?", None, schema=wire)
    finally:
        handler.close()
    assert result.parsed == {"age": 3}
    assert client.schemas == []
    assert '"age"' in sub.sent[0][-1]["content"]


def test_a_malformed_json_schema_is_an_error_reply_and_makes_no_call() -> None:
    sub = SubLM({"Ann": ['{"age": 3}']})
    out, _, _ = run_cell(
        """
r = llm_query("Who is Ann?", schema={"type": 5})
print(type(r).__name__, r)
""",
        sub,
    )
    assert out.startswith("QueryError Error: llm_query schema is not a usable JSON Schema")
    assert sub.sent == []


def test_a_schema_of_no_accepted_form_raises_type_error_in_the_cell() -> None:
    sub = SubLM({"Ann": ['{"age": 3}']})
    rlm = RLM(
        backend="scripted",
        backend_kwargs={
            "responses": [
                repl('llm_query("Ann?", schema=42)'),
                repl('answer["content"]="x"\nanswer["ready"]=True'),
            ]
        },
        other_backends=["scripted"],
        other_backend_kwargs=[{"responder": sub}],
    )
    events: list[Event] = []
    rlm.events.subscribe(events.append)
    with rlm:
        rlm.completion("(context)", "q")
    first = next(e for e in events if e.type == "code_cell_finished").data["result"]
    assert "TypeError: llm_query schema= must be a Pydantic model class" in first.stderr
    assert sub.sent == []


def test_typed_calls_work_in_the_sandbox_worker() -> None:
    sub = SubLM({"point": ['{"x": "1"}', '{"x": 1, "y": 2}'], "many": ["[1, 2]"]})
    out, _, _ = run_cell(
        """
import dataclasses

@dataclasses.dataclass
class Point:
    x: int
    y: int

p = llm_query("a point", schema=Point)
bad = llm_query_batched(["many", "many"], schema=list[int])
print(repr(p), bad)
""",
        sub,
        environment="sandbox",
    )
    assert out.strip() == "Point(x=1, y=2) [[1, 2], [1, 2]]"
    assert len(sub.sends("point")) == 2


def test_typed_calls_over_the_handler_socket() -> None:
    """An rlms-era environment that only knows the handler's address: the schema
    travels in the socket request."""
    sub = SubLM({"Ann": ['{"name": "Ann"}', '{"name": "Ann", "age": 5}'], "Bob": ["nope"]})
    handler, _ = _handler(sub)
    address = handler.start()
    env = LocalREPL(lm_handler_address=address, lm_handler_token=handler.token, depth=1)
    try:
        result = env.execute_code(
            PERSON
            + """
one = llm_query("Ann?", schema=Person)
many = llm_query_batched(["Ann?", "Bob?"], schema=Person)
print(one, [type(m).__name__ for m in many])
"""
        )
    finally:
        env.cleanup()
        handler.close()
    assert not result.stderr, result.stderr
    assert result.stdout.strip() == "{'name': 'Ann', 'age': 5} ['dict', 'QueryError']"


def test_query_error_reads_like_an_untyped_error() -> None:
    error = TypedQuery.of(int).result("Error: budget exhausted: no calls left")
    assert isinstance(error, QueryError) and isinstance(error, str)
    assert error == "Error: budget exhausted: no calls left"
    assert error.error == "budget exhausted: no calls left"
    assert TypedQuery.of(int).result("12") == 12
    assert TypedQuery.of(float).result("12") == 12.0


def test_json_schema_sub_calls_work_without_pydantic() -> None:
    """With ``import pydantic`` failing, a dict schema and a TypedDict still work."""
    script = textwrap.dedent(
        """
        import sys
        sys.modules["pydantic"] = None  # any import of it fails
        from rlm.environments.worker.typed_query import TypedQuery
        from rlm.clients.scripted import ScriptedLM
        from rlm.core.lm_handler import LMHandler

        handler = LMHandler(ScriptedLM(model_name="s", responses=['{"n": "1"}', '{"n": 1}']))
        wire = TypedQuery.of({"type": "object", "properties": {"n": {"type": "integer"}}}).wire
        result = handler.route(1).llm_query("n?", None, schema=wire)
        handler.close()
        print(result.response, result.parsed)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "{\"n\": 1} {'n': 1}"
