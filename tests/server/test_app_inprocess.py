"""The HTTP server in-process through ``httpx.ASGITransport``: the guards and the format."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

pytest.importorskip("starlette")
httpx = pytest.importorskip("httpx")

from server_support import TOKEN, ScriptedFactory  # noqa: E402

from rlm.server import create_app  # noqa: E402
from rlm.server.client import iter_events, iter_stream  # noqa: E402

AUTH = {"Authorization": f"Bearer {TOKEN}"}
MODELS = ["rlm", "rlm:scripted"]


def client_for(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


def make_app(**kwargs: Any) -> Any:
    factory = kwargs.pop("factory", None) or ScriptedFactory()
    return create_app(factory, token=TOKEN, model_ids=MODELS, **kwargs)


def body(content: str = "hello", **extra: Any) -> dict[str, Any]:
    return {"model": "rlm", "messages": [{"role": "user", "content": content}], **extra}


def assert_openai_error(response: httpx.Response, status: int, code: str | None) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"] and error["code"] == code


async def post(app: Any, payload: Any, headers: dict[str, str] | None = None) -> httpx.Response:
    async with client_for(app) as client:
        return await client.post(
            "/v1/chat/completions", json=payload, headers=AUTH if headers is None else headers
        )


def test_missing_or_wrong_token_is_401() -> None:
    app = make_app()
    missing = asyncio.run(post(app, body(), headers={}))
    assert_openai_error(missing, 401, "invalid_api_key")
    assert missing.json()["error"]["type"] == "authentication_error"
    # the way out is readable: redaction must not eat the advice
    assert "'Authorization: Bearer <token>'" in missing.json()["error"]["message"]
    assert "***" not in missing.json()["error"]["message"]
    wrong = asyncio.run(post(app, body(), headers={"Authorization": "Bearer nope"}))
    assert_openai_error(wrong, 401, "invalid_api_key")
    assert "nope" not in wrong.text and TOKEN not in wrong.text


def test_bad_requests_are_400_with_param() -> None:
    app = make_app()
    no_messages = asyncio.run(post(app, {"model": "rlm", "messages": []}))
    assert_openai_error(no_messages, 400, "missing_messages")
    assert no_messages.json()["error"]["param"] == "messages"
    bad_role = asyncio.run(post(app, {"model": "rlm", "messages": [{"role": "x"}]}))
    assert_openai_error(bad_role, 400, None)
    assert bad_role.json()["error"]["param"] == "messages[0]"
    image = {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}
    assert asyncio.run(post(app, {"model": "rlm", "messages": [image]})).status_code == 400
    assert asyncio.run(post(app, body(n=2))).status_code == 400

    async def not_json() -> httpx.Response:
        async with client_for(app) as client:
            return await client.post("/v1/chat/completions", content=b"{oops", headers=AUTH)

    assert_openai_error(asyncio.run(not_json()), 400, "invalid_json")


def test_unknown_model_route_and_method_are_openai_errors() -> None:
    app = make_app()
    assert_openai_error(asyncio.run(post(app, body(model="gpt-4"))), 404, "model_not_found")

    async def other() -> tuple[httpx.Response, httpx.Response]:
        async with client_for(app) as client:
            return await client.get("/v1/nothing", headers=AUTH), await client.get(
                "/v1/chat/completions", headers=AUTH
            )

    missing, method = asyncio.run(other())
    assert_openai_error(missing, 404, "not_found")
    assert_openai_error(method, 405, "method_not_allowed")


def test_body_over_the_limit_is_413() -> None:
    app = make_app(max_body_bytes=1000)
    big = asyncio.run(post(app, body("x" * 2000)))
    assert_openai_error(big, 413, "request_too_large")

    async def chunked() -> httpx.Response:  # no Content-Length: counted while reading
        async def parts():  # type: ignore[no-untyped-def]
            for _ in range(5):
                yield b"x" * 400

        async with client_for(app) as client:
            return await client.post("/v1/chat/completions", content=parts(), headers=AUTH)

    assert_openai_error(asyncio.run(chunked()), 413, "request_too_large")


def test_overload_is_429_while_a_run_holds_the_only_slot() -> None:
    app = make_app(factory=ScriptedFactory(latency=0.5), max_concurrency=1)
    limit = app.state.server.limit

    async def main() -> tuple[httpx.Response, httpx.Response]:
        async with client_for(app) as client:
            first = asyncio.create_task(
                client.post("/v1/chat/completions", json=body(), headers=AUTH)
            )
            while limit.active == 0:
                await asyncio.sleep(0.01)
            second = await client.post("/v1/chat/completions", json=body(), headers=AUTH)
            return await first, second

    first, second = asyncio.run(main())
    assert first.status_code == 200
    assert_openai_error(second, 429, "overloaded")
    assert second.json()["error"]["type"] == "rate_limit_error"
    assert "--max-concurrency" in second.json()["error"]["message"]
    assert limit.active == 0


def test_models_list() -> None:
    async def main() -> httpx.Response:
        async with client_for(make_app()) as client:
            return await client.get("/v1/models", headers=AUTH)

    response = asyncio.run(main())
    assert response.status_code == 200
    payload = response.json()
    assert payload["object"] == "list"
    assert [m["id"] for m in payload["data"]] == MODELS
    assert all(m["object"] == "model" for m in payload["data"])


def test_completion_context_rule_and_usage() -> None:
    app = make_app()
    one = asyncio.run(post(app, body("abcdef"))).json()
    assert one["object"] == "chat.completion"
    assert one["choices"][0]["message"] == {"role": "assistant", "content": "str:6"}
    assert one["choices"][0]["finish_reason"] == "stop"
    assert one["usage"]["total_tokens"] > 0 and one["rlm"]["session_id"] is None
    # system + user + user: the last user message is the root prompt, two messages are context
    messages = [
        {"role": "system", "content": "s"},
        {"role": "user", "content": "doc"},
        {"role": "user", "content": "question?"},
    ]
    two = asyncio.run(post(app, {"model": "rlm", "messages": messages})).json()
    assert two["choices"][0]["message"]["content"] == "list:2"
    explicit = asyncio.run(post(app, {"model": "rlm", "messages": messages, "root_prompt": "q"}))
    assert explicit.json()["choices"][0]["message"]["content"] == "list:3"


def test_stream_has_role_events_content_finish_usage_and_done() -> None:
    app = make_app()

    async def main() -> list[str]:
        async with client_for(app) as client:
            payload = body("abc", stream=True, stream_options={"include_usage": True})
            async with client.stream(
                "POST", "/v1/chat/completions", json=payload, headers=AUTH
            ) as response:
                assert response.headers["content-type"].startswith("text/event-stream")
                return [line async for line in response.aiter_lines()]

    lines = asyncio.run(main())
    assert app.state.server.limit.active == 0  # the stream gave its slot back
    items = list(iter_stream(lines))
    kinds = [k for k, _ in items]
    assert kinds[0] == "chunk" and kinds[-1] == "done" and "event" in kinds
    chunks = [p for k, p in items if k == "chunk"]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "str:3"
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] > 0
    events = list(iter_events(lines))
    types = [e["type"] for e in events]
    assert types[0] == "run_started" and types[-1] == "run_finished"
    assert {"iteration_started", "model_reply", "code_cell_finished"} <= set(types)
    assert all(json.dumps(e) for e in events)  # JSON-safe all the way down


def test_stream_without_events_when_asked() -> None:
    async def main() -> list[str]:
        async with client_for(make_app()) as client:
            payload = body("abc", stream=True, rlm_events=False)
            async with client.stream(
                "POST", "/v1/chat/completions", json=payload, headers=AUTH
            ) as response:
                return [line async for line in response.aiter_lines()]

    assert not list(iter_events(asyncio.run(main())))


def test_a_limit_is_finish_reason_length_with_the_partial_answer() -> None:
    # RECALL in a fresh run fails its cell every time, so only the limit ends it.
    app = make_app(factory=ScriptedFactory(max_iterations=10, max_llm_calls=2))
    reply = asyncio.run(post(app, body("RECALL"))).json()
    assert reply["choices"][0]["finish_reason"] == "length"
    assert reply["rlm"]["limit"] == "LLMCallLimitExceededError"

    async def streamed() -> list[str]:
        async with client_for(app) as client:
            payload = body("RECALL", stream=True)
            async with client.stream(
                "POST", "/v1/chat/completions", json=payload, headers=AUTH
            ) as response:
                return [line async for line in response.aiter_lines()]

    chunks = [p for k, p in iter_stream(asyncio.run(streamed())) if k == "chunk"]
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
