"""Load tests of ``rlm serve`` (issue 19), CI-sized, through the harness of
``benchmarks/serve_load.py``: real ``rlm serve`` subprocesses, a real fake upstream
process, 50 concurrent HTTP clients on loopback.

Every answer is checked: the fake upstream makes the RLM answer all the contexts its
REPL holds, so turn k of a conversation must list exactly its own turns 0..k. A
conversation that lost its earlier turns is *reset*, one holding another client's
context is *mixed*, any other wrong 200 is *bad*. An explicit error (410, 429, ...) is
not a silent loss: the conversation just stops there (*aborted*).

Marked ``load`` (``pytest -m "not load"`` leaves them out); they run by default.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
pytest.importorskip("httpx")

from load_support import (
    ci_options,
    postgres_database,
    serve_load,
    serve_load_upstream,
    serve_load_workload,
    summary,
)

pytestmark = pytest.mark.load

Step = serve_load_workload.Step


# -- the instrument itself -------------------------------------------------------------------


def test_the_answer_check_tells_reset_mixed_and_bad_apart() -> None:
    turn2 = Step(3, "c3:run-s7:turn2", "run-s7", 2, 7)
    classify = serve_load_workload.classify
    assert classify(turn2, "c3:run-s7:turn0 | c3:run-s7:turn1 | c3:run-s7:turn2") == "ok"
    assert classify(turn2, "c3:run-s7:turn2") == "reset"  # started over at this turn
    assert classify(turn2, "c3:run-s7:turn1 | c3:run-s7:turn2") == "reset"
    assert classify(turn2, "c3:run-s7:turn0 | c4:run-s9:turn0 | c3:run-s7:turn2") == "mixed"
    assert classify(turn2, "c3:run-s7:turn2 | XTALK:c5:run-o1:oneshot") == "mixed"
    assert classify(turn2, "") == "bad"
    assert classify(turn2, "c3:run-s7:turn0 | c3:run-s7:turn1 | c3:run-s7:turn1") == "bad"
    assert classify(turn2, "c3:run-s7:turn0 | c3:run-s7:turn2 | c3:run-s7:turn2") == "bad"
    oneshot = Step(1, "c1:run-o4:oneshot")
    assert classify(oneshot, "c1:run-o4:oneshot") == "ok"
    assert classify(oneshot, "c2:run-o5:oneshot") == "mixed"
    assert classify(oneshot, "") == "bad"


def test_the_plan_is_drawn_from_the_seed_and_keeps_turns_in_order() -> None:
    plan = serve_load_workload.build_plan(300, 50, turns=5, seed=19, run_id="t")
    assert plan == serve_load_workload.build_plan(300, 50, turns=5, seed=19, run_id="t")
    assert plan != serve_load_workload.build_plan(300, 50, turns=5, seed=20, run_id="t")
    steps = [step for client in plan for step in client]
    assert len(steps) == 300
    assert sum(1 for s in steps if s.session_id is None) == 150
    assert max(map(len, plan)) - min(map(len, plan)) <= 5  # the clients share the work
    for client in plan:
        turns = [(s.conversation, s.turn) for s in client if s.session_id is not None]
        assert turns == sorted(turns)  # one conversation after another, turns in order
    assert len({s.context for s in steps}) == 300


def test_the_upstream_options_are_checked() -> None:
    assert serve_load_upstream.parse_delay("0") == (0.0, 0.0)
    assert serve_load_upstream.parse_delay("0.05:0.2") == (0.05, 0.2)
    assert str(serve_load_upstream.parse_fault("500:30%")) == "500:30%"
    for bad in ("fast", "0.2:0.1", "-1"):
        with pytest.raises(ValueError, match="delay"):
            serve_load_upstream.parse_delay(bad)
    for bad in ("teapot", "500:150%", "500:x"):
        with pytest.raises(ValueError, match="fault"):
            serve_load_upstream.parse_fault(bad)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--kill-replica-at", "0.5"], "needs --replicas 2"),
        (["--replicas", "2", "--kill-replica-at", "1.5"], "fraction"),
        (["--clients", "0"], "at least 1"),
        (["--client-timeout", "0"], "--client-timeout"),
        (["--upstream-delay", "fast"], "delay"),
        (["--upstream-fault", "teapot"], "unknown fault"),
        (["--rlm-path", "/nonexistent/checkout"], "no rlm package"),
    ],
)
def test_the_command_refuses_bad_options_in_one_line(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stopped:
        serve_load.parse_args(argv)
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_the_harness_sees_a_reset_when_turns_land_on_in_memory_replicas_in_turn() -> None:
    """Two in-memory replicas, round-robin per request: a conversation's next turn
    reaches a replica that never saw it. The check must call that a reset."""
    opts = ci_options(clients=4, requests=40, replicas=2)
    report = serve_load.run_load(opts)
    assert report["reset"] > 0, summary(report)
    assert report["mixed"] == 0 and report["bad"] == 0, summary(report)


# -- rlm serve under load (issue 19) ----------------------------------------------------------


def test_in_memory_sessions_are_never_silently_reset_under_eviction() -> None:
    """50 clients, 30 conversations, 8 places: sessions are evicted between turns. A
    later turn of an evicted session must get an error, never a fresh session."""
    opts = ci_options(max_sessions=8, serve_args=["--session-grace=0"])
    report = serve_load.run_load(opts)
    metrics = report["replicas"][0]["metrics"]
    assert metrics.get("rlm_sessions_evicted_total", 0) > 0, summary(report)  # it was tested
    assert report["reset"] == 0, summary(report)
    assert report["mixed"] == 0, summary(report)
    assert report["bad"] == 0, summary(report)
    assert report["statuses"].get("5xx", 0) == 0, summary(report)
    assert report["sessions"]["ok"] > 0, summary(report)


def test_sqlite_sessions_survive_eviction_under_load() -> None:
    """The same load over a SQLite store: an evicted session comes back from the store
    with every turn it had."""
    opts = ci_options(max_sessions=8, session_store="sqlite")
    report = serve_load.run_load(opts)
    metrics = report["replicas"][0]["metrics"]
    assert metrics.get("rlm_sessions_rehydrated_total", 0) > 0, summary(report)
    assert report["reset"] == 0, summary(report)
    assert report["mixed"] == 0, summary(report)
    assert report["bad"] == 0, summary(report)
    assert report["statuses"].get("5xx", 0) == 0, summary(report)
    assert report["sessions"]["ok"] > 0, summary(report)


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    yield from postgres_database()


def test_two_replicas_over_postgresql_lose_nothing_when_one_is_killed(postgres_url: str) -> None:
    """Two replicas over one PostgreSQL store, turns round-robin; one replica is killed
    (kill -9) after half the requests. Its clients retry on the other with the same
    session and Idempotency-Key, waiting out a 409 (the dead replica's lease) as its
    Retry-After says: every conversation goes on from its last completed turn."""
    opts = ci_options(replicas=2, session_store=postgres_url, kill_replica_at=0.5, retries=40)
    report = serve_load.run_load(opts)
    assert report["killed"], summary(report)
    assert report["reset"] == 0, summary(report)
    assert report["mixed"] == 0, summary(report)
    assert report["bad"] == 0, summary(report)  # a retried turn that ran twice is bad
    assert report["statuses"].get("5xx", 0) == 0, summary(report)
    assert report["aborted"] == 0, summary(report)
    assert report["sessions"]["ok"] == report["sessions"]["sessions"] > 0, summary(report)


def test_slots_come_back_after_clients_give_up_on_a_hung_upstream() -> None:
    """4 clients hold all 4 slots on an upstream that hangs, then give up after 1 s. Once
    the upstream answers again, a new request gets a 200 within a bounded wait."""
    opts = ci_options(clients=4, max_concurrency=4, client_timeout=1.0, recover_wait=10.0)
    result = serve_load.run_hung(opts)
    assert result["gave_up"] == 4, result
    assert result["hung_upstream_calls"] == 4, result  # every slot was taken
    assert result["recovered"], result


@pytest.mark.parametrize(
    ("fault", "status"),
    [("html200", "5xx"), ("429", "429")],
    ids=["html-200-is-an-error", "upstream-429-is-a-429"],
)
def test_an_upstream_fault_is_an_error_never_content(fault: str, status: str) -> None:
    """An HTML page with a 200 is a provider error (5xx), never an (empty) answer; an
    upstream's 429 reaches the client as a 429 it can retry after."""
    opts = ci_options(
        clients=4,
        requests=8,
        oneshot_share=1.0,
        upstream_fault=fault,
        retries=0,
        client_timeout=30.0,
    )
    report = serve_load.run_load(opts)
    assert report["bad"] == 0, summary(report)
    assert report["statuses"] == {status: 8}, summary(report)
    assert not any("no Retry-After" in d for d in report["details"]), summary(report)
    assert report["upstream"]["requests_during_load"] <= 8 * 10, summary(report)  # bounded
