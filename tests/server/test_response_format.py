"""``response_format`` on the server's chat completions, end to end: uvicorn on a real
loopback port, driven by the official ``openai`` client; the RLM behind it is scripted
and its answers are validated (and repaired) by the engine."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("uvicorn")
openai = pytest.importorskip("openai")

from server_support import TOKEN, repl, serve_in_thread  # noqa: E402

from rlm import RLM  # noqa: E402
from rlm.base.types import Prompt  # noqa: E402
from rlm.server import create_app  # noqa: E402

CITY = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "population": {"type": "integer"}},
    "required": ["city", "population"],
    "additionalProperties": False,
}
VALID = {"city": "Lyon", "population": 522000}


def submit(value: Any) -> str:
    return repl(f"answer['content'] = {value!r}\nanswer['ready'] = True")


def respond(prompt: Prompt) -> str:
    """Refuses nothing itself: its first answer misses ``population``; once it has been
    told the schema check failed it answers in full. ``NEVER`` in the question: never
    a valid answer."""
    text = "\n".join(str(m.get("content")) for m in prompt if isinstance(m, dict))
    if "NEVER" in text:
        return submit({"city": 1})
    if "Schema check failed" in text:
        return submit(VALID)
    if "The final answer must be a JSON value" in text:  # the output schema's section
        return submit({"city": "Lyon"})
    return submit("plain text")


class Factory:
    def __init__(self) -> None:
        self.built: list[RLM] = []

    def __call__(self, *, session_id: str | None = None, trajectory: bool = False) -> RLM:
        rlm = RLM(
            backend="scripted",
            backend_kwargs={"model_name": "scripted", "responder": respond},
            max_iterations=4,
        )
        self.built.append(rlm)
        return rlm


@pytest.fixture(scope="module")
def client() -> Iterator[openai.OpenAI]:
    app = create_app(Factory(), token=TOKEN, model_ids=["rlm"])
    with serve_in_thread(app) as url:
        yield openai.OpenAI(base_url=url, api_key=TOKEN, max_retries=0, timeout=30)


def ask(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def json_schema(schema: dict[str, Any], name: str = "city") -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}}


def test_json_schema_answers_are_validated_and_repaired(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model="rlm", messages=ask("Which city?"), response_format=json_schema(CITY)
    )
    assert json.loads(completion.choices[0].message.content or "") == VALID
    assert completion.choices[0].finish_reason == "stop"


def test_without_response_format_nothing_changes(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(model="rlm", messages=ask("Which city?"))
    assert completion.choices[0].message.content == "plain text"


def test_streaming_with_a_schema_streams_the_json(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="rlm", messages=ask("Which city?"), response_format=json_schema(CITY), stream=True
    )
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert json.loads(text) == VALID


def test_json_object_takes_any_object(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model="rlm", messages=ask("Which city?"), response_format={"type": "json_object"}
    )
    assert json.loads(completion.choices[0].message.content or "") == {"city": "Lyon"}


def test_the_openai_parse_helper_gets_its_pydantic_model(client: openai.OpenAI) -> None:
    pydantic = pytest.importorskip("pydantic")

    class City(pydantic.BaseModel):
        city: str
        population: int

    chat = client.chat.completions
    parse = getattr(chat, "parse", None) or client.beta.chat.completions.parse
    completion = parse(model="rlm", messages=ask("Which city?"), response_format=City)
    assert completion.choices[0].message.parsed == City(**VALID)


def test_an_answer_that_never_matches_is_an_error_not_content(client: openai.OpenAI) -> None:
    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(
            model="rlm", messages=ask("NEVER right"), response_format=json_schema(CITY)
        )
    error = caught.value.body
    assert isinstance(error, dict)
    assert error["code"] == "schema_validation_failed"
    assert error["param"] == "response_format"
    assert "does not match the output schema 'city'" in error["message"]
    assert "$.city: expected string" in error["message"]


def test_a_stream_that_never_matches_ends_with_the_error(client: openai.OpenAI) -> None:
    with client.chat.completions.with_streaming_response.create(
        model="rlm", messages=ask("NEVER"), response_format=json_schema(CITY), stream=True
    ) as response:
        lines = [line for line in response.iter_lines() if line.startswith("data: {")]
    last = json.loads(lines[-1][len("data: ") :])
    assert last["error"]["code"] == "schema_validation_failed"
    contents = [
        json.loads(line[6:])["choices"][0]["delta"].get("content")
        for line in lines
        if '"choices"' in line
    ]
    assert not any(contents)  # the invalid answer was never sent as content


@pytest.mark.parametrize(
    ("response_format", "param"),
    [
        ({"type": "xml"}, "response_format"),
        ({"type": "json_schema"}, "response_format.json_schema.schema"),
        (json_schema({"type": "strnig"}), "response_format.json_schema.schema"),
        ("json", "response_format"),
    ],
)
def test_a_bad_response_format_is_a_400(
    client: openai.OpenAI, response_format: Any, param: str
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model="rlm", messages=ask("Which city?"), response_format=response_format
        )
    body = caught.value.body
    assert isinstance(body, dict) and body["param"] == param
