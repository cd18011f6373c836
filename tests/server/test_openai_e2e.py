"""End to end: uvicorn on a real loopback port, driven by the official ``openai`` client."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

pytest.importorskip("uvicorn")
openai = pytest.importorskip("openai")

from server_support import TOKEN, ScriptedFactory, serve_in_thread  # noqa: E402

from rlm.server import create_app  # noqa: E402
from rlm.server.client import iter_events, iter_stream  # noqa: E402


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, ScriptedFactory]]:
    factory = ScriptedFactory()
    app = create_app(factory, token=TOKEN, model_ids=["rlm", "rlm:scripted"])
    with serve_in_thread(app) as url:
        yield url, factory


@pytest.fixture
def client(server: tuple[str, ScriptedFactory]) -> openai.OpenAI:
    return openai.OpenAI(base_url=server[0], api_key=TOKEN, max_retries=0, timeout=30)


def ask(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def test_completion(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(model="rlm", messages=ask("hello world"))
    assert completion.choices[0].message.content == "str:11"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.total_tokens > 0
    assert [m.id for m in client.models.list()] == ["rlm", "rlm:scripted"]


def test_streaming(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="rlm:scripted",
        messages=ask("abcd"),
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)  # the client skips the rlm-event comments and stops at [DONE]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "str:4"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0

    # The raw lines show both the [DONE] terminator and our event comments.
    with client.chat.completions.with_streaming_response.create(
        model="rlm", messages=ask("abcd"), stream=True
    ) as response:
        lines = list(response.iter_lines())
    assert [kind for kind, _ in iter_stream(lines)][-1] == "done"
    assert lines[-1] == "data: [DONE]" or "data: [DONE]" in lines
    events = list(iter_events(lines))
    assert events[0]["type"] == "run_started" and events[-1]["type"] == "run_finished"


def test_two_turn_session_reuses_state(
    client: openai.OpenAI, server: tuple[str, ScriptedFactory]
) -> None:
    session = {"session_id": "e2e-session"}
    first = client.chat.completions.create(
        model="rlm", messages=ask("REMEMBER swordfish"), extra_body=session
    )
    assert first.choices[0].message.content == "stored"
    second = client.chat.completions.create(model="rlm", messages=ask("RECALL"), extra_body=session)
    assert second.choices[0].message.content == "swordfish"  # the first turn's variable
    built = [r for r in server[1].built if r.session_id == "e2e-session"]
    assert len(built) == 1 and built[0].persistent
    env = built[0]._persistent_env
    assert env is not None and env.get_context_count() == 2 and env.get_history_count() == 2

    # Without the session, the variable does not exist: the run fails its cell and
    # falls back to a default answer instead of "swordfish".
    fresh = client.chat.completions.create(model="rlm", messages=ask("RECALL"))
    assert fresh.choices[0].message.content != "swordfish"


def test_session_from_user_field_streams_too(client: openai.OpenAI) -> None:
    client.chat.completions.create(model="rlm", messages=ask("REMEMBER otter"), user="u-1")
    stream = client.chat.completions.create(
        model="rlm", messages=ask("RECALL"), user="u-1", stream=True
    )
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "otter"


def test_auth_failure(server: tuple[str, ScriptedFactory]) -> None:
    bad = openai.OpenAI(base_url=server[0], api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as info:
        bad.chat.completions.create(model="rlm", messages=ask("hi"))
    assert info.value.status_code == 401
    assert info.value.code == "invalid_api_key"


def test_bad_request(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="rlm", messages=[])
    assert info.value.param == "messages"
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-4o", messages=ask("hi"))


def test_a_client_that_leaves_mid_stream_frees_its_slot() -> None:
    import time

    factory = ScriptedFactory(latency=0.5)
    app = create_app(factory, token=TOKEN, max_concurrency=1)
    limit = app.state.server.limit
    with serve_in_thread(app) as url:
        client = openai.OpenAI(base_url=url, api_key=TOKEN, max_retries=0, timeout=30)
        with client.chat.completions.with_streaming_response.create(
            model="rlm", messages=ask("slow"), stream=True
        ) as response:
            first = next(response.iter_lines())
            assert first.startswith("data: ")
            assert limit.active == 1
        deadline = time.monotonic() + 5
        while limit.active and time.monotonic() < deadline:
            time.sleep(0.02)
        assert limit.active == 0
        # the slot is usable again
        reply = client.chat.completions.create(model="rlm", messages=ask("ok"))
        assert reply.choices[0].message.content == "str:2"
