"""``llm_query(prompt, images=[...])`` from model code, end to end: a run's cell passes an
image (a file path, bytes, a value of ``context``) and the sub-call's request body, as
the loopback fake OpenAI server records it, carries it as an ``image_url`` part.

Two REPLs: LocalREPL (in this process) and the sandbox's worker subprocess
(``isolation="process"``: a real worker over the socket wire), where the cell writes the
file itself, so only the worker can read it. Plus what must go wrong clearly: a model
without vision (no request is sent), an image over the limit, a file that is not an
image; and what must never happen: image bytes in the run log or the event stream.
"""

from __future__ import annotations

import base64
import json
import os
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "clients"))
from fake_providers import FakeProviderServer, Reply, openai_chat

from rlm import RLM
from rlm.environments.worker.images import (
    MAX_IMAGE_BYTES,
    ImageError,
    image_part,
    sniff_mime,
    with_images,
)
from rlm.logger import RLMLogger

pytestmark = pytest.mark.skipif(
    __import__("importlib").util.find_spec("openai") is None, reason="openai is not installed"
)

# A 1x1 PNG; its base64 is what must reach the provider and never a log.
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)
PNG_B64 = base64.b64encode(PNG).decode()
GIF = b"GIF89a\x01\x00\x01\x00\x00\x00\x00;"
ENVIRONMENTS = ["local", "sandbox"]


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeProviderServer]:
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    with FakeProviderServer() as fake:
        yield fake


def _run(
    server: FakeProviderServer,
    environment: str,
    code: str,
    context: Any,
    model: str = "gpt-4o-mini",
    sub_replies: int = 1,
    **rlm_kwargs: Any,
) -> Any:
    """One run: the root model writes ``code``, each sub-call is answered, then FINAL."""
    replies = [Reply(200, openai_chat(f"```repl\n{code}\n```"))]
    replies += [Reply(200, openai_chat(f"seen {i}")) for i in range(sub_replies)]
    replies.append(Reply(200, openai_chat("FINAL(done)")))
    server.enqueue(*replies)
    env_kwargs = {"isolation": "process"} if environment == "sandbox" else {}
    rlm = RLM(
        backend="openai",
        backend_kwargs={
            "model_name": model,
            "base_url": f"{server.url}/v1",
            "api_key": "sk-t",
            "context_window": 128_000,  # no window probe: its GETs would take replies
        },
        environment=environment,
        environment_kwargs=env_kwargs,
        max_iterations=2,
        **rlm_kwargs,
    )
    try:
        with warnings.catch_warnings():  # process isolation warns that it isolates nothing
            warnings.simplefilter("ignore", RuntimeWarning)
            return rlm.completion(context, "What is in the picture?")
    finally:
        rlm.close()


def _image_requests(server: FakeProviderServer) -> list[dict[str, Any]]:
    """The bodies of the sub-calls that carried images (the root's calls carry none)."""
    found = []
    for request in server.requests:
        body = request.body
        if isinstance(body, dict) and "image_url" in json.dumps(body.get("messages")):
            found.append(body)
    return found


def _parts(body: dict[str, Any]) -> list[dict[str, Any]]:
    (message,) = body["messages"]
    assert message["role"] == "user"
    parts: list[dict[str, Any]] = message["content"]
    return parts


def _iteration_prompts(server: FakeProviderServer) -> str:
    """What the root model was shown (its REPL output) across the run."""
    return json.dumps([r.body for r in server.requests if isinstance(r.body, dict)])


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_an_image_from_a_path_and_from_bytes_reaches_the_provider(
    environment: str, server: FakeProviderServer
) -> None:
    # The cell writes the file (relative: the REPL's own folder, in the worker for the
    # sandbox), then sends it by path, and the same bytes from the context.
    code = (
        "open('dot.png', 'wb').write(context[0])\n"
        "print(llm_query('describe the file', images=['dot.png']))\n"
        "print(llm_query('describe the bytes', images=[context[0]]))"
    )
    result = _run(server, environment, code, [PNG], sub_replies=2)
    assert result.response == "done"
    bodies = _image_requests(server)
    assert len(bodies) == 2
    for body, text in zip(bodies, ("describe the file", "describe the bytes"), strict=True):
        assert body["model"] == "gpt-4o-mini"
        assert _parts(body) == [
            {"type": "text", "text": text},
            {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG_B64}"}},
        ]
    assert "seen 0" in _iteration_prompts(server)  # the reply reached the model


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_a_context_of_paths_and_batched_images_per_prompt(
    environment: str, server: FakeProviderServer, tmp_path: Path
) -> None:
    png, gif = tmp_path / "a.png", tmp_path / "b.gif"
    png.write_bytes(PNG)
    gif.write_bytes(GIF)
    code = (
        "r = llm_query_batched(['first', 'second', 'none'], "
        "images=[[context[0]], [context[1], context[0]], []])\n"
        "print(r)"
    )
    _run(server, environment, code, [str(png), str(gif)], sub_replies=3)
    bodies = sorted(_image_requests(server), key=lambda b: _parts(b)[0]["text"])
    assert [[p.get("image_url", {}).get("url", "")[:22] for p in _parts(b)] for b in bodies] == [
        ["", "data:image/png;base64,"],
        ["", "data:image/gif;base64,", "data:image/png;base64,"],
    ]
    plain = [
        r.body
        for r in server.requests
        if isinstance(r.body, dict) and r.body["messages"] == [{"role": "user", "content": "none"}]
    ]
    assert len(plain) == 1  # the prompt without images went as it always did


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_a_model_without_vision_is_told_and_nothing_is_sent(
    environment: str, server: FakeProviderServer
) -> None:
    code = "print(llm_query('describe', images=[context[0]]))"
    _run(server, environment, code, [PNG], model="gpt-3.5-turbo", sub_replies=0)
    assert _image_requests(server) == []  # no request carried the image
    shown = _iteration_prompts(server)
    assert "gpt-3.5-turbo does not take images (1 in the prompt)" in shown
    assert "nothing was sent" in shown


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_bad_images_end_the_cell_with_a_clear_error(
    environment: str, server: FakeProviderServer
) -> None:
    code = (
        "try:\n"
        "    llm_query('x', images=[b'not an image'])\n"
        "except ValueError as e:\n"
        "    print('refused:', e)\n"
        "try:\n"
        "    llm_query('x', images=['missing.png'])\n"
        "except ValueError as e:\n"
        "    print('refused:', e)\n"
        f"big = b'\\x89PNG\\r\\n\\x1a\\n' + bytes({MAX_IMAGE_BYTES})\n"
        "try:\n"
        "    llm_query('x', images=[big])\n"
        "except ValueError as e:\n"
        "    print('refused:', e)"
    )
    _run(server, environment, code, "ctx", sub_replies=0)
    assert _image_requests(server) == []
    shown = _iteration_prompts(server)
    assert "refused: the bytes image is not a PNG, JPEG, GIF or WEBP image" in shown
    assert "refused: image file not found: 'missing.png'" in shown
    assert "refused: the bytes image is 20.0 MB; an image may be at most 20 MB" in shown


def test_logs_and_events_keep_a_summary_never_the_bytes(
    server: FakeProviderServer, tmp_path: Path
) -> None:
    events: list[Any] = []
    logger = RLMLogger(log_dir=str(tmp_path), max_text_chars=None)
    replies = [
        Reply(200, openai_chat("```repl\nprint(llm_query('describe', images=[context[0]]))\n```")),
        Reply(200, openai_chat("a dot")),
        Reply(200, openai_chat("FINAL(done)")),
    ]
    server.enqueue(*replies)
    rlm = RLM(
        backend="openai",
        backend_kwargs={
            "model_name": "gpt-4o",
            "base_url": f"{server.url}/v1",
            "api_key": "k",
            "context_window": 128_000,
        },
        logger=logger,
        max_iterations=2,
    )
    rlm.events.subscribe(events.append)
    try:
        result = rlm.completion([PNG], "What is it?")
    finally:
        rlm.close()
    assert len(_image_requests(server)) == 1  # the image was sent...
    logged = "".join(p.read_text() for p in tmp_path.iterdir() if p.is_file())
    assert PNG_B64 not in logged  # ...and never logged
    assert PNG_B64[:40] not in logged
    assert "image/png, 70 bytes, sha256" in logged  # what the log keeps instead
    started = [e for e in events if e.type == "subcall_started"]
    assert started and started[0].data["prompt_preview"].startswith("describe [image: image/png")
    assert PNG_B64[:40] not in repr([e.data for e in events])
    calls = [c for it in (result.metadata or {}).get("iterations", []) for c in _calls(it)]
    assert len(calls) == 1  # the trajectory keeps the sub-call, with a summary of its image
    assert "image/png, 70 bytes, sha256" in json.dumps(calls, default=str)
    assert PNG_B64 not in json.dumps(calls, default=str)


def _calls(iteration: dict[str, Any]) -> list[Any]:
    return [call for block in iteration.get("code_blocks", []) for call in _block_calls(block)]


def _block_calls(block: dict[str, Any]) -> list[Any]:
    result = block.get("result") or {}
    return list(result.get("rlm_calls") or [])


# -- the normalisation itself (stdlib, shared by every REPL) ---------------------------


def test_mime_types_come_from_the_magic_bytes() -> None:
    assert sniff_mime(PNG) == "image/png"
    assert sniff_mime(b"\xff\xd8\xff\xe0rest") == "image/jpeg"
    assert sniff_mime(GIF) == "image/gif"
    assert sniff_mime(b"RIFF\x00\x00\x00\x00WEBPVP8 ") == "image/webp"
    assert sniff_mime(b"%PDF-1.7") is None


def test_each_kind_of_image_becomes_one_part(tmp_path: Path) -> None:
    (tmp_path / "d.png").write_bytes(PNG)
    inline = {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG_B64}"}}
    assert image_part("d.png", str(tmp_path)) == inline  # relative: against the REPL's folder
    assert image_part(tmp_path / "d.png") == inline  # a PathLike
    assert image_part(bytearray(PNG)) == inline
    assert image_part(f"data:image/png;base64,{PNG_B64}") == inline
    url = "https://example.com/cat.jpg"
    assert image_part(url) == {"type": "image_url", "image_url": {"url": url}}
    with pytest.raises(ImageError, match="cannot send a int as an image"):
        image_part(7)
    with pytest.raises(ImageError, match="not valid base64"):
        image_part("data:image/png;base64,@@@")


def test_a_large_file_is_refused_before_it_is_read(tmp_path: Path) -> None:
    big = tmp_path / "big.png"
    with open(big, "wb") as handle:  # sparse: its size says it all
        handle.truncate(MAX_IMAGE_BYTES + 1)
    with pytest.raises(ImageError, match=r"is 20\.0 MB; an image may be at most 20 MB"):
        image_part(str(big))


def test_images_join_the_last_user_message_and_nothing_is_mutated() -> None:
    messages = [
        {"role": "system", "content": "terse"},
        {"role": "user", "content": "what is it?"},
        {"role": "assistant", "content": "?"},
    ]
    before = json.dumps(messages)
    out = with_images(messages, [PNG])
    assert json.dumps(messages) == before
    assert out[0] == messages[0] and out[2] == messages[2]
    assert out[1]["content"][0] == {"type": "text", "text": "what is it?"}
    assert out[1]["content"][1]["image_url"]["url"].startswith("data:image/png;base64,")
    assert with_images("plain", None) == "plain"
    assert with_images("plain", PNG)[0]["content"][1]["type"] == "image_url"  # one, not a list


@pytest.mark.skipif(
    __import__("importlib").util.find_spec("PIL") is None, reason="PIL is not installed"
)
def test_a_pil_image_is_sent_as_png() -> None:
    from PIL import Image

    part = image_part(Image.new("RGB", (2, 2), "red"))
    data = base64.b64decode(part["image_url"]["url"].split(",", 1)[1])
    assert sniff_mime(data) == "image/png"


def test_the_worker_module_needs_only_the_standard_library() -> None:
    source = Path(os.path.dirname(image_part.__code__.co_filename), "images.py").read_text()
    imports = [line for line in source.splitlines() if line.startswith(("import ", "from "))]
    assert all(
        line.split()[1].split(".")[0] in {"__future__", "base64", "binascii", "io", "os", "typing"}
        for line in imports
    ), imports
