"""The surfaces over the store: ``rlm sessions list|show|rm|export``, ``rlm chat
--session NAME`` and the server's store-backed session registry."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path
from typing import Any

import pytest
from session_support import Program, durable_rlm, submit

from rlm import RLM
from rlm.cli import build_parser, main
from rlm.cli.chat import chat
from rlm.sessions import list_sessions, show

REPLIES = [
    "```repl\nx = globals().get('x', 0) + 42\nanswer['content'] = f'x is {x}'\n"
    "answer['ready'] = True\n```"
]


@pytest.fixture
def store(tmp_path: Path) -> str:
    path = str(tmp_path / "s.db")
    program = Program({"q": [submit("'first answer'", "v = 1")], "r": [submit("'second'")]})
    rlm = durable_rlm(program, path, "notes")
    rlm.completion("the notes", root_prompt="q")
    rlm.completion({"doc": "more"}, root_prompt="r")
    rlm.close()
    return path


def test_sessions_list_and_show(store: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sessions", "list", "--store", store]) == 0
    out = capsys.readouterr().out
    assert "notes" in out and "completed" in out
    assert main(["sessions", "list", "--store", store, "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert (row["id"], row["turns"], row["locked_by"]) == ("notes", 2, None)
    assert main(["sessions", "show", "notes", "--store", store]) == 0
    out = capsys.readouterr().out
    assert "[0] completed 'q' -> first answer" in out and "[1] completed 'r' -> second" in out
    assert main(["sessions", "show", "notes", "--store", store, "--json"]) == 0
    detail = json.loads(capsys.readouterr().out)
    assert [t["answer"] for t in detail["turns"]] == ["first answer", "second"]


def test_sessions_export_and_rm(store: str, tmp_path: Path, capsys) -> None:
    target = tmp_path / "notes.json"
    assert main(["sessions", "export", "notes", "--store", store, "-o", str(target)]) == 0
    data = json.loads(target.read_text("utf-8"))
    assert data["turns"][0]["context"] == "the notes"
    assert data["turns"][1]["context"]["pickle"]["trusted"] is False  # never unpickled
    args = ["sessions", "export", "notes", "--store", store, "-o", str(target), "--trust-pickles"]
    assert main(args) == 0
    data = json.loads(target.read_text("utf-8"))
    assert [t["context"] for t in data["turns"]] == ["the notes", {"doc": "more"}]
    assert data["turns"][0]["history"][0]["role"] == "system"
    assert main(["sessions", "export", "notes", "--store", store, "--no-contexts"]) == 0
    assert "context" not in json.loads(capsys.readouterr().out)["turns"][0]
    assert main(["sessions", "rm", "notes", "--store", store]) == 0
    assert list_sessions(store) == []
    assert main(["sessions", "show", "notes", "--store", store]) == 2  # no such session
    assert "no session 'notes'" in capsys.readouterr().err


def test_rm_refuses_a_session_in_use(store: str, capsys) -> None:
    rlm = durable_rlm(Program({}), store, "notes")
    try:
        assert main(["sessions", "rm", "notes", "--store", store]) == 1
        assert "in use by pid" in capsys.readouterr().err
    finally:
        rlm.close()


def run_chat(tmp_path: Path, store: str, lines: str) -> tuple[int, str, str]:
    script = tmp_path / "script.json"
    script.write_text(json.dumps({"model_name": "scripted", "responses": REPLIES}), "utf-8")
    args = build_parser().parse_args(
        ["chat", "--backend", "scripted", "--backend-kwargs", f"@{script}", "-q",
         "--history-file", "", "--session", "notes", "--store", store]
    )  # fmt: skip
    out, err = io.StringIO(), io.StringIO()
    code = chat(args, stdin=io.StringIO(lines), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def test_chat_session_is_durable(tmp_path: Path) -> None:
    store = str(tmp_path / "chat.db")
    code, out, err = run_chat(tmp_path, store, "remember\n")
    assert code == 0 and out.strip() == "x is 42"
    assert "new durable session 'notes'" in err
    code, out, err = run_chat(tmp_path, store, "again\n/history\n")
    assert code == 0 and out.strip() == "x is 84"  # x came back from the store
    assert "resumed session 'notes': 1 earlier message" in err
    assert "[0] remember" in err and "[1] again" in err
    code, out, err = run_chat(tmp_path, store, "/reset\nfresh\n")
    assert out.strip() == "x is 42"
    assert [t.root_prompt for t in show("notes", store).turns] == ["fresh"]


class DurableFactory:
    """Builds scripted RLMs; those of a session are durable in ``store``."""

    def __init__(self, store: str) -> None:
        self.store = store

    def __call__(self, *, session_id: str | None = None, trajectory: bool = False) -> RLM:
        program = Program({"REMEMBER": [submit("'stored'", "secret = 'plum'")],
                           "RECALL": [submit("secret")]})  # fmt: skip
        return RLM(
            backend="scripted",
            backend_kwargs={"responder": program},
            persistent=session_id is not None,
            session_id=session_id,
            session_store=self.store if session_id else None,
        )


def test_server_sessions_survive_a_restart(tmp_path: Path) -> None:
    pytest.importorskip("starlette")
    httpx = pytest.importorskip("httpx")
    from rlm.server import create_app
    from rlm.server.sessions import StoreBackedSessionRegistry

    store = str(tmp_path / "server.db")

    async def ask(app: Any, question: str) -> str:
        payload = {"model": "rlm", "session_id": "notes",
                   "messages": [{"role": "user", "content": question}]}  # fmt: skip
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            response = await client.post(
                "/v1/chat/completions", json=payload, headers={"Authorization": "Bearer tok"}
            )
        assert response.status_code == 200, response.text
        return str(response.json()["choices"][0]["message"]["content"])

    def server() -> tuple[Any, StoreBackedSessionRegistry[Any]]:
        registry: StoreBackedSessionRegistry[Any] = StoreBackedSessionRegistry(store)
        return create_app(DurableFactory(store), token="tok", sessions=registry), registry

    app, registry = server()
    assert asyncio.run(ask(app, "REMEMBER")) == "stored"
    registry.close()  # the server goes away: its sessions close and release their locks
    app, registry = server()
    assert [i.session_id for i in registry.list()] == ["notes"]  # known from the store
    assert asyncio.run(ask(app, "RECALL")) == "plum"
    assert [t.root_prompt for t in show("notes", store).turns] == ["REMEMBER", "RECALL"]
    assert registry.drop("notes")
    assert list_sessions(store) == [] and registry.list() == []
    registry.close()


def test_serve_session_store_flag_backs_the_registry(tmp_path: Path) -> None:
    pytest.importorskip("starlette")
    from rlm.cli.factory import SettingsFactory, from_args
    from rlm.cli.serve import build_app
    from rlm.server.sessions import InMemorySessionRegistry, StoreBackedSessionRegistry

    store = str(tmp_path / "srv.db")
    script = '{"responses": ["FINAL(1)"]}'
    argv = ["serve", "--backend", "scripted", "--backend-kwargs", script, "--session-store", store]
    args = build_parser().parse_args(argv)
    settings, setup = from_args(args)
    factory = SettingsFactory(settings, setup, session_store=args.session_store)
    app = build_app(settings, factory, "tok")
    assert isinstance(app.state.sessions, StoreBackedSessionRegistry)
    rlm = factory(session_id="s")
    assert rlm.durable and rlm.session_store == store
    rlm.close()
    assert factory().durable is False  # one-off requests stay in memory
    plain = SettingsFactory(settings, setup)
    assert type(build_app(settings, plain, "tok").state.sessions) is InMemorySessionRegistry


def test_the_public_surface_is_pinned() -> None:
    import rlm.sessions as sessions

    assert set(sessions.__all__) == {
        "STORE_ENV_VAR", "Checkpoint", "LockHolder", "PostgresSessionStore", "SQLiteSessionStore",
        "SessionDetail", "SessionError", "SessionLockedError", "SessionNotFoundError", "SessionRecord",
        "SessionStore", "SessionStoreError", "SessionSummary", "TurnRecord",
        "default_store_path", "delete", "export", "fork", "list_sessions", "open_store", "show",
    }  # fmt: skip
    for name in sessions.__all__:
        assert getattr(sessions, name) is not None, name
    with pytest.raises(AttributeError):
        _ = sessions.nothing_here
    import inspect

    params = inspect.signature(RLM.__init__).parameters
    assert params["session_store"].kind is inspect.Parameter.KEYWORD_ONLY
    assert params["durable"].kind is inspect.Parameter.KEYWORD_ONLY
    assert inspect.signature(RLM.completion).parameters["resume"].kind is (
        inspect.Parameter.KEYWORD_ONLY
    )
