"""The sub-call cache (``RLM(cache=...)``, ``rlm.core.call_cache``) in one process.

A real OpenAI client talks to a loopback OpenAI-compatible server (``loopback_model``)
that counts the requests it answers: a hit is a request that never arrives. The cache
is a real SQLite file in the test's folder.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import stat
import warnings
from pathlib import Path
from typing import Any

import pytest
from loopback_model import LoopbackModel, loopback_model

from rlm import RLM
from rlm.base.errors import ConfigurationError
from rlm.base.events import Event
from rlm.base.json_schema import ResponseSchema
from rlm.base.types import ModelUsageSummary, UsageSummary
from rlm.clients.scripted import ScriptedLM
from rlm.core.call_cache import CallCache, default_cache_path, open_cache
from rlm.core.lm_handler import LMHandler
from rlm.sessions.call_store import CallStore

pytest.importorskip("openai")

MODEL = "gpt-4o-mini"  # priced in rlm.clients.pricing: every call has a cost


def echo(n: int, body: dict[str, Any]) -> str:
    return "re: " + str(body["messages"][-1]["content"])


def client(server: LoopbackModel, model: str = MODEL, **sampling: Any) -> Any:
    from rlm.clients.openai import OpenAIClient

    return OpenAIClient(
        api_key="sk-test",
        model_name=model,
        base_url=server.url,
        sampling_args={"temperature": 0, **sampling},
    )


def handler(lm: Any, cache: CallCache | None) -> LMHandler:
    h = LMHandler(lm)
    h.cache = cache
    return h


def asked(server: LoopbackModel) -> list[str]:
    return [str(b["messages"][-1]["content"]) for b in server.bodies]


# -- hits, misses and what they cost ------------------------------------------------------


def test_a_repeated_call_is_answered_from_the_file_and_costs_nothing(tmp_path: Path) -> None:
    cache = CallCache(tmp_path / "calls.db")
    with loopback_model(echo) as server:
        h = handler(client(server), cache)
        first = h.call("hello")
        second = h.call("hello")
        assert server.calls == 1
    assert first.response == second.response == "re: hello"
    paid = first.usage_summary.model_usage_summaries[MODEL]
    free = second.usage_summary.model_usage_summaries[MODEL]
    assert (paid.total_calls, paid.cached_calls, paid.total_input_tokens) == (1, 0, 30)
    assert paid.total_cost is not None and paid.total_cost > 0
    assert (free.total_calls, free.total_input_tokens, free.total_output_tokens) == (0, 0, 0)
    assert free.total_cost == 0.0
    assert (free.cached_calls, free.saved_input_tokens, free.saved_output_tokens) == (1, 30, 5)
    assert free.saved_cost == paid.total_cost  # the cost saved is reported
    assert second.usage_summary.saved_cost == paid.total_cost
    assert second.usage_summary.saved_tokens == 35
    stats = cache.stats()
    assert (stats.entries, stats.hits, stats.saved_input_tokens) == (1, 1, 30)
    assert stats.saved_cost == pytest.approx(paid.total_cost)


def test_a_batch_half_cached_sends_exactly_the_other_half(tmp_path: Path) -> None:
    cache = CallCache(tmp_path / "calls.db")
    prompts = [f"item {i}" for i in range(8)]
    with loopback_model(echo) as server:
        h = handler(client(server), cache)
        warm = h.call_batched(prompts[::2])  # items 0, 2, 4, 6
        assert server.calls == 4
        before = len(server.bodies)
        results = h.call_batched(prompts)
        assert server.calls == 8  # exactly the four not cached
        assert sorted(asked(server)[before:]) == sorted(prompts[1::2])
    assert [r.response for r in results] == [f"re: {p}" for p in prompts]
    assert [r.usage_summary.cached_calls for r in results] == [1, 0] * 4
    assert [r.response for r in warm] == [f"re: {p}" for p in prompts[::2]]


def test_async_calls_hit_the_same_file(tmp_path: Path) -> None:
    cache = CallCache(tmp_path / "calls.db")
    with loopback_model(echo) as server:
        h = handler(client(server), cache)

        async def twice() -> list[str]:
            a = await h.acall("async hello")
            b = await h.acall("async hello")
            return [a.response, b.response]

        assert asyncio.run(twice()) == ["re: async hello"] * 2
        assert server.calls == 1
        assert h.call("async hello").usage_summary.cached_calls == 1  # sync reads it too
        assert server.calls == 1


def test_the_key_covers_model_prompt_sampling_and_schema(tmp_path: Path) -> None:
    cache = CallCache(tmp_path / "calls.db")
    schema = ResponseSchema("answer", {"type": "object", "properties": {}}, strict=False)
    with loopback_model(echo) as server:
        handler(client(server), cache).call("q")
        handler(client(server), cache).call("q")  # a new client, same key
        assert server.calls == 1
        handler(client(server, model="gpt-4o"), cache).call("q")
        handler(client(server), cache).call("q2")
        handler(client(server, max_tokens=7), cache).call("q")
        handler(client(server), cache).call("q", schema=schema)
        assert server.calls == 5
        handler(client(server), cache).call("q", schema=schema)
        assert server.calls == 5


def test_sampled_calls_are_cached_only_when_asked(tmp_path: Path) -> None:
    path = tmp_path / "calls.db"
    with loopback_model(echo) as server:
        hot = handler(client(server, temperature=0.7), CallCache(path))
        hot.call("warm")
        hot.call("warm")
        assert server.calls == 2  # temperature > 0: not cached
        unset = client(server)
        unset.sampling_args.pop("temperature")  # the provider's default samples
        plain = handler(unset, CallCache(path))
        plain.call("warm")
        plain.call("warm")
        assert server.calls == 4
        assert CallCache(path).stats().entries == 0
        asked_for = handler(client(server, temperature=0.7), open_cache(
            {"path": str(path), "nondeterministic": True}
        ))  # fmt: skip
        asked_for.call("warm")
        asked_for.call("warm")
        assert server.calls == 5


def test_a_client_that_cannot_be_keyed_is_never_cached(tmp_path: Path) -> None:
    cache = CallCache(tmp_path / "calls.db")
    scripted = ScriptedLM(responses=["one", "two"], model_name="scripted")
    h = handler(scripted, cache)
    assert [h.call("same").response, h.call("same").response] == ["one", "two"]
    assert cache.stats().entries == 0


# -- a run: root iterations, sub-calls, usage and events -------------------------------------

RUN_REPLY = (
    "```repl\nparts = llm_query_batched(['SUB a', 'SUB b'])\n"
    "answer['content'] = '|'.join(parts)\nanswer['ready'] = True\n```"
)


def run_reply(n: int, body: dict[str, Any]) -> str:
    last = str(body["messages"][-1]["content"])
    return "got " + last[-1] if last.startswith("SUB") else RUN_REPLY


def test_a_rerun_replays_from_the_cache_with_events_and_usage(tmp_path: Path) -> None:
    path = tmp_path / "calls.db"
    with loopback_model(run_reply) as server:
        kwargs = {"base_url": server.url, "model_name": MODEL, "api_key": "sk-test"}
        kwargs["sampling_args"] = {"temperature": 0}
        first = RLM(backend="openai", backend_kwargs=kwargs, cache=path, max_iterations=3)
        paid = first.completion("context", root_prompt="Q")
        assert server.calls == 3  # one root call, two sub-calls
        again = RLM(backend="openai", backend_kwargs=kwargs, cache=str(path), max_iterations=3)
        seen: list[Event] = []
        again.events.subscribe(seen.append)
        free = again.completion("context", root_prompt="Q")
        assert server.calls == 3
    assert paid.response == free.response == "got a|got b"
    usage = free.usage_summary
    assert (usage.total_calls, usage.cached_calls) == (0, 3)
    assert usage.saved_cost == pytest.approx(paid.usage_summary.total_cost)
    assert usage.to_dict()["model_usage_summaries"][MODEL]["cached_calls"] == 3
    replies = [e for e in seen if e.type == "model_reply"]
    assert replies and all(e.data.get("cached") is True for e in replies)
    finished = [e for e in seen if e.type == "subcall_finished"]
    assert finished and all(e.data["usage"].cached_calls == 2 for e in finished)


def test_usage_dicts_keep_rlms_keys_without_hits() -> None:
    plain = ModelUsageSummary(1, 10, 2, 0.5)
    assert set(plain.to_dict()) == {
        "total_calls",
        "total_input_tokens",
        "total_output_tokens",
        "total_cost",
    }
    hit = ModelUsageSummary(0, 0, 0, 0.0, cached_calls=1, saved_input_tokens=10,
                            saved_output_tokens=2, saved_cost=0.5)  # fmt: skip
    total = UsageSummary({"m": plain.copy()})
    total.merge(UsageSummary({"m": hit}))
    back = UsageSummary.from_dict(json.loads(json.dumps(total.to_dict())))
    m = back.model_usage_summaries["m"]
    assert (m.total_calls, m.cached_calls, m.saved_input_tokens, m.saved_cost) == (1, 1, 10, 0.5)


# -- the file: corrupt, private, validated ------------------------------------------------------


def test_a_corrupt_file_is_a_miss_not_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "calls.db"
    path.write_bytes(b"this is not a database" * 100)
    with loopback_model(echo) as server:
        h = handler(client(server), CallCache(path))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert h.call("x").response == "re: x"
            assert h.call("x").response == "re: x"
        assert server.calls == 2
    assert any("unusable" in str(w.message) for w in caught)
    assert path.read_bytes() == b"this is not a database" * 100  # never written to


@pytest.mark.parametrize(
    "value",
    ["not json", "[1, 2]", '{"text": 5, "model": "m", "usage": {}}',
     '{"text": "t", "model": "m", "usage": {"total_input_tokens": -3}}',
     '{"text": "t", "model": "m", "usage": {"total_cost": "free"}}'],
)  # fmt: skip
def test_a_corrupt_row_is_a_miss_and_is_replaced(tmp_path: Path, value: str) -> None:
    path = tmp_path / "calls.db"
    with loopback_model(echo) as server:
        h = handler(client(server), CallCache(path))
        h.call("row")
        with sqlite3.connect(path) as db:
            db.execute("UPDATE calls SET value = ?", (value,))
        assert h.call("row").response == "re: row"
        assert server.calls == 2  # the bad row was a miss
        assert h.call("row").usage_summary.cached_calls == 1  # and was replaced
        assert server.calls == 2


def test_a_new_file_is_private(tmp_path: Path) -> None:
    path = tmp_path / "new" / "folder" / "calls.db"
    with loopback_model(echo) as server:
        handler(client(server), CallCache(path)).call("p")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(path.parent.parent.stat().st_mode) == 0o700
    wal = path.with_name("calls.db-wal")
    if wal.exists():
        assert stat.S_IMODE(wal.stat().st_mode) & 0o077 == 0


def test_another_programs_database_is_never_written(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE notes (body TEXT)")
    before = path.read_bytes()
    store = CallStore(path)
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        store.put("k", {"text": "t"}, model="m", input_tokens=1, output_tokens=1, cost=None)
    store.close()
    assert path.read_bytes() == before
    with pytest.raises(sqlite3.DatabaseError, match="not an rlmx call cache"):
        CallStore(path).stats()


def test_a_cache_another_process_is_still_creating_opens(tmp_path: Path) -> None:
    # the moment between another process's CREATE TABLE and its user_version: the table
    # and SQLite's own index for its primary key exist, the format number does not yet
    path = tmp_path / "calls.db"
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TABLE calls (key TEXT PRIMARY KEY, model TEXT NOT NULL, "
            "value TEXT NOT NULL, input_tokens INTEGER NOT NULL DEFAULT 0, "
            "output_tokens INTEGER NOT NULL DEFAULT 0, cost REAL, created REAL "
            "NOT NULL, hits INTEGER NOT NULL DEFAULT 0, last_hit REAL)"
        )
    path.chmod(0o600)
    assert "sqlite_autoindex_calls_1" in {
        r[0] for r in sqlite3.connect(path).execute("SELECT name FROM sqlite_master")
    }
    store = CallStore(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        store.put("k", {"text": "t"}, model="m", input_tokens=1, output_tokens=1, cost=None)
        assert store.get("k", lambda v: v["text"]) == "t"
    store.close()


def test_cache_specs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RLM_CACHE_PATH", str(tmp_path / "env.db"))
    assert default_cache_path() == tmp_path / "env.db"
    assert open_cache(True) is not None and open_cache(True).path == tmp_path / "env.db"
    monkeypatch.delenv("RLM_CACHE_PATH")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_path() == tmp_path / "xdg" / "rlmx" / "calls.db"
    assert open_cache(None) is None and open_cache(False) is None
    mine = CallCache(tmp_path / "mine.db", include_sampled=True)
    assert open_cache(mine) is mine
    assert open_cache({"path": tmp_path / "d.db", "nondeterministic": True}).include_sampled
    for bad in (3, ["x"], {"path": 3}, {"pth": "x"}, tmp_path, ""):
        with pytest.raises(ConfigurationError):
            open_cache(bad)
    with pytest.raises(ConfigurationError, match="cache must be"):
        RLM(backend="openai", backend_kwargs={"model_name": "m", "api_key": "k"}, cache=1.5)
    assert not (tmp_path / "xdg").exists()  # nothing is created before the first call


def test_the_viewer_marks_cached_calls(tmp_path: Path) -> None:
    from rlm.logger import RLMLogger
    from rlm.viewer.build import build_view
    from rlm.viewer.source import load_source

    path = tmp_path / "calls.db"
    views = []
    with loopback_model(run_reply) as server:
        kwargs = {"base_url": server.url, "model_name": MODEL, "api_key": "sk-test"}
        kwargs["sampling_args"] = {"temperature": 0}
        for run in ("paid", "free"):
            logger = RLMLogger(log_dir=str(tmp_path / run))
            with RLM(backend="openai", backend_kwargs=kwargs, cache=path, logger=logger) as r:
                r.completion("context", root_prompt="Q")
            views.append(build_view(load_source(Path(str(logger.log_file_path)))))
    paid, free = views
    assert [it["cached"] for it in paid["iters"]] == [False]
    assert [it["cached"] for it in free["iters"]] == [True]
    calls = [c for b in free["iters"][0]["blocks"] for c in b["calls"]]
    assert [c["usage"]["cached"] for c in calls if c["usage"]] == [1, 1]
    assert free["iters"][0]["usage"]["cached"] == 3
    assert "cached" not in paid["iters"][0]["usage"]


def test_recording_with_a_cache_warns_that_the_cache_is_not_used(tmp_path: Path) -> None:
    with pytest.warns(UserWarning, match="cache= is not used while recording"):
        rlm = RLM(
            backend="scripted",
            backend_kwargs={"responses": ["FINAL(1)"]},
            record=str(tmp_path / "rec"),
            cache=str(tmp_path / "calls.db"),
        )
    rlm.close()
