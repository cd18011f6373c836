"""``output_schema``: the answer is validated, refused answers are repaired by the model,
and the result carries ``.parsed`` next to ``.response`` (its JSON text).

The model is a ``ScriptedLM``: each test scripts what the root model writes, and the
REPL, the loop and the validation are the real ones.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import subprocess
import sys
import textwrap
from typing import Any, NotRequired, TypedDict
from unittest import mock

import pytest

import rlm.core.rlm as core_rlm
from rlm import RLM
from rlm.base.errors import ConfigurationError, SchemaValidationError
from rlm.base.events import Event
from rlm.clients.scripted import ScriptedLM

pydantic = pytest.importorskip("pydantic")


class Item(pydantic.BaseModel):
    name: str
    qty: int


class Order(pydantic.BaseModel):
    items: list[Item]
    total: float
    note: str | None = None


def repl(code: str) -> str:
    return f"```repl\n{textwrap.dedent(code).strip()}\n```"


def submit(value: Any) -> str:
    return repl(f'answer["content"] = {value!r}\nanswer["ready"] = True')


def run(
    replies: list[str],
    schema: Any,
    *,
    events: list[Event] | None = None,
    repairs: int | None = None,
    **kwargs: Any,
) -> tuple[Any, ScriptedLM]:
    """One completion with ``output_schema=schema`` by a model that says ``replies``."""
    lm = ScriptedLM(model_name="m", responses=replies, repeat_last=False)
    with mock.patch.object(core_rlm, "get_client", lambda backend, kw: lm):
        rlm = RLM(backend="openai", backend_kwargs={"model_name": "m"}, **kwargs)
        if events is not None:
            rlm.events.subscribe(events.append)
        try:
            result = rlm.completion(
                "Order: 2 apples at 1.5",
                "What was ordered?",
                output_schema=schema,
                schema_repairs=repairs,
            )
        finally:
            rlm.close()
    return result, lm


def prompt_text(prompt: Any) -> str:
    return "\n".join(str(m.get("content")) for m in prompt) if isinstance(prompt, list) else prompt


LOOK = repl("print(context)")


# -- the repair loop ---------------------------------------------------------------------


def test_an_invalid_answer_is_repaired_then_accepted() -> None:
    events: list[Event] = []
    bad = {"items": [{"name": "apple", "qty": "two"}]}
    good = {"items": [{"name": "apple", "qty": 2}], "total": 3.0}
    result, lm = run([LOOK, submit(bad), submit(good)], Order, events=events)

    assert isinstance(result.parsed, Order)
    assert result.parsed.items == [Item(name="apple", qty=2)]
    assert json.loads(result.response) == {**good, "note": None}
    assert result.to_dict()["parsed"] == {**good, "note": None}
    # The model saw the schema, and then the errors as the refused iteration's REPL output.
    assert '"Order"' in prompt_text(lm.prompts[0]) and '"qty"' in prompt_text(lm.prompts[0])
    repair_prompt = prompt_text(lm.prompts[2])
    assert "Schema check failed" in repair_prompt
    assert "$.items[0].qty" in repair_prompt and "$.total: Field required" in repair_prompt
    # Counted in the events and in the iteration records.
    repairs = [e.data for e in events if e.type == "schema_repair"]
    assert len(repairs) == 1
    assert repairs[0]["repair"] == 1 and repairs[0]["repairs"] == 3
    assert repairs[0]["iteration"] == 2
    assert any("$.items[0].qty" in err for err in repairs[0]["errors"])
    iterations = [e.data["iteration_obj"] for e in events if e.type == "iteration_finished"]
    assert [it.schema_errors is not None for it in iterations] == [False, True, False]
    assert iterations[1].final_answer is None  # refused: it did not end the run
    assert "schema_errors" in iterations[1].to_dict()
    final = [e.data for e in events if e.type == "final_answer"]
    assert final[-1]["source"] == "answer" and json.loads(final[-1]["answer"])["total"] == 3.0
    assert lm.schemas == []  # no structured call was needed


@pytest.mark.parametrize("environment", ["local", "sandbox"])
def test_a_refused_answer_is_not_left_ready(environment: str) -> None:
    """After a refusal the REPL's ``answer`` is open again: setting only the content
    submits nothing, and the next ``ready`` submits the fixed answer."""
    events: list[Event] = []
    bad = {"items": [{"name": "apple", "qty": "two"}]}
    good = {"items": [{"name": "apple", "qty": 2}], "total": 3.0}
    replies = [submit(bad), repl(f"print(answer)\nanswer['content'] = {good!r}"), submit(good)]
    result, _ = run(replies, Order, events=events, environment=environment)
    assert result.parsed.total == 3.0
    cells = [e.data["result"].stdout for e in events if e.type == "code_cell_finished"]
    assert cells[1].strip() == "{'content': '', 'ready': False}"
    iterations = [e.data["iteration_obj"] for e in events if e.type == "iteration_finished"]
    assert len(iterations) == 3 and iterations[1].final_answer is None


def test_exhausted_repairs_end_in_a_structured_call_then_schema_validation_error() -> None:
    events: list[Event] = []
    bad = {"items": "none", "total": 1}
    with pytest.raises(SchemaValidationError) as caught:
        run(
            [LOOK, submit(bad), submit(bad), '{"items": [], "total": "free"}'],
            Order,
            events=events,
            repairs=1,
        )
    error = caught.value
    assert error.answer == '{"items": [], "total": "free"}'  # the last invalid answer
    assert any(e.startswith("$.total") for e in error.errors)
    assert error.repairs == 1 and error.schema_name == "Order"
    assert "does not match the output schema 'Order'" in str(error)
    assert error.checkpoint is not None  # as every run error, it can be resumed
    assert len([e for e in events if e.type == "schema_repair"]) == 1
    finished = [e for e in events if e.type == "run_finished"]
    assert "SchemaValidationError" in finished[-1].data["error"]


def test_the_structured_final_call_can_still_save_the_run() -> None:
    bad = {"items": []}
    good = {"items": [], "total": 0}
    result, lm = run([LOOK, submit(bad), submit(bad), json.dumps(good)], Order, repairs=1)
    assert result.parsed == Order(items=[], total=0.0)
    (schema,) = lm.schemas  # the one structured-output request: the final call
    assert schema.name == "Order" and schema.schema == Order.model_json_schema()
    assert "JSON Schema" in prompt_text(lm.prompts[-1])


def test_running_out_of_iterations_asks_for_the_answer_in_structured_mode() -> None:
    events: list[Event] = []
    result, lm = run(
        [LOOK, LOOK, '```json\n{"items": [{"name": "pear", "qty": 1}], "total": 2}\n```'],
        Order,
        events=events,
        max_iterations=2,
    )
    assert result.parsed.items[0].name == "pear"
    assert len(lm.schemas) == 1
    assert [e.data["source"] for e in events if e.type == "final_answer"] == ["default"]


def test_final_with_json_is_an_answer_too() -> None:
    result, _ = run([LOOK, 'FINAL({"items": [], "total": 4.5})'], Order)
    assert result.parsed == Order(items=[], total=4.5)


def test_a_repair_resubmitted_through_final_var() -> None:
    result, _ = run(
        [
            LOOK,
            submit({"total": 1}),
            repl('fixed = {"items": [], "total": 1}') + "\n\nFINAL_VAR(fixed)",
        ],
        Order,
    )
    assert result.parsed == Order(items=[], total=1.0)


def test_without_a_schema_nothing_changes() -> None:
    lm = ScriptedLM(model_name="m", responses=[LOOK, submit({"a": 1})], repeat_last=False)
    with (
        mock.patch.object(core_rlm, "get_client", lambda backend, kw: lm),
        RLM(backend="openai", backend_kwargs={"model_name": "m"}) as rlm,
    ):
        result = rlm.completion("ctx")
    assert result.response == "{'a': 1}"  # str() of the content, as rlms gives it
    assert result.parsed is None and "parsed" not in result.to_dict()
    assert "The final answer must be a JSON value" not in prompt_text(lm.prompts[0])


def test_a_bad_schema_fails_before_any_model_call() -> None:
    lm = ScriptedLM(model_name="m", responses=[LOOK])
    with (
        mock.patch.object(core_rlm, "get_client", lambda backend, kw: lm),
        RLM(backend="openai", backend_kwargs={"model_name": "m"}) as rlm,
    ):
        with pytest.raises(ConfigurationError, match="unknown type 'strin'"):
            rlm.completion("ctx", output_schema={"type": "strin"})
        with pytest.raises(ConfigurationError, match="Pydantic model class, a TypedDict"):
            rlm.completion("ctx", output_schema=int)
        with pytest.raises(ConfigurationError, match="schema_repairs"):
            rlm.completion("ctx", output_schema=Order, schema_repairs=-1)
    assert lm.prompts == []


# -- the kinds of schema -----------------------------------------------------------------


class Person(TypedDict):
    name: str
    age: int
    nickname: NotRequired[str]


@dataclasses.dataclass
class Line:
    product: str
    qty: int


@dataclasses.dataclass
class Invoice:
    lines: list[Line]
    paid: bool
    memo: str | None = None


def test_a_typeddict_schema_gives_a_dict() -> None:
    result, _ = run(
        [LOOK, submit({"name": "Ann", "age": "30"}), submit({"name": "Ann", "age": 30})],
        Person,
    )
    assert result.parsed == {"name": "Ann", "age": 30}


def test_a_dataclass_schema_gives_nested_instances() -> None:
    events: list[Event] = []
    result, _ = run(
        [
            LOOK,
            submit({"lines": [{"product": "apple"}], "paid": True}),
            submit({"lines": [{"product": "apple", "qty": 2}], "paid": True}),
        ],
        Invoice,
        events=events,
    )
    assert result.parsed == Invoice([Line("apple", 2)], True)
    assert isinstance(result.parsed.lines[0], Line)
    (repair,) = [e.data for e in events if e.type == "schema_repair"]
    assert repair["errors"] == ["$.lines[0].qty: required property is missing"]


def test_a_json_schema_dict_is_checked_without_pydantic(tmp_path: Any) -> None:
    """In a fresh interpreter with Pydantic made unimportable."""
    script = textwrap.dedent(
        """
        import sys, json
        sys.modules["pydantic"] = None  # importing it now fails
        from unittest import mock
        import rlm.core.rlm as core_rlm
        from rlm import RLM
        from rlm.clients.scripted import ScriptedLM

        def repl(code):
            return "```repl\\n" + code + "\\n```"
        schema = {
            "type": "object",
            "properties": {"n": {"type": "integer", "minimum": 1}, "unit": {"enum": ["kg", "g"]}},
            "required": ["n", "unit"],
            "additionalProperties": False,
        }
        lm = ScriptedLM(model_name="m", repeat_last=False, responses=[
            repl("print(context)"),
            repl('answer["content"] = {"n": 0, "unit": "lb"}\\nanswer["ready"] = True'),
            repl('answer["content"] = {"n": 2, "unit": "kg"}\\nanswer["ready"] = True'),
        ])
        with mock.patch.object(core_rlm, "get_client", lambda b, k: lm):
            with RLM(backend="openai", backend_kwargs={"model_name": "m"}) as rlm:
                result = rlm.completion("2 kg of flour", output_schema=schema)
        repair = lm.prompts[2][-2]["content"] + lm.prompts[2][-1]["content"]
        print(json.dumps({"parsed": result.parsed, "response": result.response,
                          "repair": repair}))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["parsed"] == {"n": 2, "unit": "kg"}
    assert json.loads(out["response"]) == {"n": 2, "unit": "kg"}
    assert "$.n: must be >= 1, got 0" in out["repair"]
    assert '$.unit: must be one of ["kg", "g"], got "lb"' in out["repair"]


def test_a_plain_string_schema_takes_the_text_as_it_is() -> None:
    result, _ = run([LOOK, "FINAL(Lyon)"], {"type": "string", "maxLength": 10})
    assert result.parsed == "Lyon" and result.response == '"Lyon"'


# -- acompletion, stream, and an RLM at its depth limit ----------------------------------


def test_acompletion_and_stream_take_an_output_schema() -> None:
    good = {"items": [], "total": 1}
    lm = ScriptedLM(model_name="m", responses=[LOOK, submit(good)] * 2, repeat_last=False)
    with (
        mock.patch.object(core_rlm, "get_client", lambda backend, kw: lm),
        RLM(backend="openai", backend_kwargs={"model_name": "m"}) as rlm,
    ):
        result = asyncio.run(rlm.acompletion("ctx", output_schema=Order))
        assert result.parsed == Order(items=[], total=1.0)
        stream = rlm.stream("ctx", output_schema=Order)
        seen = [event.type for event in stream]
        assert stream.result.parsed == Order(items=[], total=1.0)
        assert "final_answer" in seen


def test_an_rlm_at_its_depth_limit_makes_one_structured_call() -> None:
    lm = ScriptedLM(model_name="m", responses=['{"items": [], "total": 2}', "no json"])
    with (
        mock.patch.object(core_rlm, "get_client", lambda backend, kw: lm),
        RLM(backend="openai", backend_kwargs={"model_name": "m"}, depth=1) as rlm,
    ):
        result = rlm.completion("ctx", output_schema=Order)
        assert result.parsed == Order(items=[], total=2.0)
        assert len(lm.schemas) == 1
        with pytest.raises(SchemaValidationError) as caught:
            rlm.completion("ctx", output_schema=Order)
    assert caught.value.answer == "no json"
