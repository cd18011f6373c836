"""The cloud providers (SDKs faked, see ``fake_sdks``) and the Jupyter kernel (real)
on a representative subset of the conformance and recovery suites, plus what is
specific to each: the SDK calls made, the text channel, kills, missing extras."""

from __future__ import annotations

import importlib
import sys
import time
from typing import Any
from unittest import mock

import pytest
import test_environment_conformance as conformance
import test_worker_recovery as recovery
from fake_sdks import installed
from worker_env_support import PROVIDERS, env_of, make_provider_env

import rlm.core.rlm as core_rlm
from rlm import RLM
from rlm.base.errors import MissingExtraError
from rlm.clients.scripted import ScriptedLM
from rlm.environments import environment_supports_persistence, get_environment

KINDS = [*PROVIDERS, "ipython"]
EXTRAS = {  # environment -> (SDK module, extra, package named in the message)
    "modal": ("modal", "modal", "modal"),
    "e2b": ("e2b_code_interpreter", "e2b", "e2b-code-interpreter"),
    "daytona": ("daytona", "daytona", "daytona"),
    "prime": ("prime_sandboxes", "prime", "prime-sandboxes"),
    "ipython": ("jupyter_client", "ipython", "ipykernel"),
}


# -- the shared suites, on a subset ---------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_persistence_protocol(kind: str) -> None:
    conformance.test_persistence_protocol_contexts_and_aliases(kind)


@pytest.mark.parametrize("kind", KINDS)
def test_llm_query_relay(kind: str) -> None:
    conformance.test_llm_query_is_relayed_with_usage(kind)


@pytest.mark.parametrize("kind", KINDS)
def test_snapshot_restore_after_a_crash(kind: str) -> None:
    recovery.test_crash_is_the_cells_error_and_the_session_continues(kind, "import os\nos._exit(1)")


IPYTHON_CONFORMANCE = [
    conformance.test_a_turn_as_the_engine_drives_it,
    conformance.test_output_errors_and_exit,
    conformance.test_scaffold_names_are_restored,
    conformance.test_answer_final_var_and_show_vars,
    conformance.test_variables_lookup_set_and_locals,
    conformance.test_custom_tools,
    conformance.test_rlm_query_is_relayed_to_subcall_fn,
    recovery.test_snapshot_restore_roundtrip,
    recovery.test_interrupt_keeps_the_namespace,
    recovery.test_timeout_that_needs_a_kill_restores_the_namespace,
    recovery.test_worker_dying_between_cells_is_noticed,
    recovery.test_cleanup_stops_the_worker,
]


@pytest.mark.parametrize(
    "check", IPYTHON_CONFORMANCE, ids=[f.__name__[5:] for f in IPYTHON_CONFORMANCE]
)
def test_ipython_conformance(check: object) -> None:
    check("ipython")  # type: ignore[operator]


# -- registry and extras ---------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_missing_sdk_fails_only_when_used(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    module_name, extra, package = EXTRAS[kind]
    monkeypatch.setitem(sys.modules, module_name, None)  # import now raises ImportError
    module = importlib.import_module(f"rlm.environments.{kind}_repl")
    assert module is not None  # importing needs no SDK
    with pytest.raises(MissingExtraError) as caught:
        get_environment(kind, {})
    assert f"pip install 'rlmx[{extra}]'" in str(caught.value)
    assert package in str(caught.value)
    assert environment_supports_persistence(kind)


# -- provider specifics ----------------------------------------------------------------


def _gone(pid: int) -> bool:
    """Dead: no such process, or a zombie waiting to be reaped."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def _worker_pid(env: object) -> int:
    return int(env.execute_code("import os\nprint(os.getpid())").stdout)  # type: ignore[attr-defined]


@pytest.mark.parametrize("kind", PROVIDERS)
def test_kill_stops_the_worker_and_a_new_one_restores(kind: str) -> None:
    with env_of(kind) as env:
        env.execute_code("kept = [1, 'two']")
        pid = _worker_pid(env)
        env.transport.kill()  # in-band kill, then the provider's own
        deadline = time.monotonic() + 5
        while not _gone(pid):
            assert time.monotonic() < deadline, "the worker survived kill()"
            time.sleep(0.02)
        result = env.execute_code("print(kept)")
        assert result.stdout == "[1, 'two']\n"
        assert result.stderr.startswith("Note: the worker had stopped after cell 2 (")
        assert _worker_pid(env) != pid


@pytest.mark.parametrize("kind", PROVIDERS)
def test_channel_carries_any_bytes(kind: str) -> None:
    # Text-only SDKs (e2b, daytona) carry the channel as base64 lines.
    payload = bytes(range(256)) * 4096 + "é\n\r\x00☃".encode()
    with env_of(kind) as env:
        env.set_variable("blob", payload)
        result = env.execute_code(
            "import hashlib\nprint(len(blob), hashlib.sha256(blob).hexdigest()[:16])"
        )
        import hashlib

        assert result.stdout == f"{len(payload)} {hashlib.sha256(payload).hexdigest()[:16]}\n"


def test_modal_sandbox_is_created_closed_and_reused() -> None:
    env = make_provider_env("modal", cell_timeout=5)
    sandbox = env.sandbox  # type: ignore[attr-defined]
    assert sandbox.options["block_network"] is True and sandbox.options["timeout"] == 600
    env.execute_code("import os\nos._exit(0)")  # a restart runs in the same sandbox
    assert env.sandbox is sandbox and len(sandbox.processes) == 2  # type: ignore[attr-defined]
    env.cleanup()
    assert sandbox.terminated


def test_daytona_takes_rlms_image_keywords() -> None:
    env = make_provider_env("daytona", image="my/img", cpu=2, memory=4, auto_stop_interval=0)
    try:
        params = env.sandbox.options["params"]  # type: ignore[attr-defined]
        resources = ("resources", {"cpu": 2, "memory": 4})
        assert params == (
            "image",
            {"image": "my/img", "auto_stop_interval": 0, "resources": resources},
        )
    finally:
        env.cleanup()


def test_an_existing_sandbox_is_left_running() -> None:
    with installed("e2b") as sdk:
        sandbox = sdk.Sandbox.create(timeout=60)
        from rlm.environments.e2b_repl import E2BREPL

        env = E2BREPL(sandbox=sandbox, python=sys.executable)
    assert env.execute_code("print(1 + 1)").stdout == "2\n"
    env.cleanup()
    assert not sandbox.terminated
    assert all(p.proc.poll() is not None for p in sandbox.processes)
    sandbox.kill()


# -- ipython specifics -----------------------------------------------------------------


def test_ipython_syntax_and_kernel_interrupt() -> None:
    with env_of("ipython", cell_timeout=1.0) as env:
        result = env.execute_code("lines = !echo hi\n%time total = 1 + 2\nprint(lines, total)")
        assert result.stdout.endswith("['hi'] 3\n"), result.stderr
        assert "Wall time" in result.stdout
        started = time.perf_counter()
        result = env.execute_code("import time\ntime.sleep(30)")
        assert time.perf_counter() - started < 5
        assert "was interrupted; the namespace is intact" in result.stderr
        assert env.execute_code("print(lines)").stdout == "['hi']\n"


# -- end to end through RLM (the session routes sub-calls over the worker channel) ----


def _repl(code: str) -> str:
    return f"Working.\n```repl\n{code}\n```"


@pytest.mark.parametrize("kind", ["ipython", "e2b"])
def test_rlm_completion_end_to_end(kind: str) -> None:
    code = "answer['content'] = llm_query('q') + '|' + context\nanswer['ready'] = True"

    def responder(prompt: Any) -> str:
        return f"sub:{prompt}" if isinstance(prompt, str) else _repl(code)

    lm = ScriptedLM(model_name="root-model", responder=responder)
    options: dict[str, Any] = {"cell_timeout": 30}
    if kind in PROVIDERS:
        options["python"] = sys.executable
    with mock.patch.object(core_rlm, "get_client", lambda backend, kwargs: lm), installed("e2b"):
        rlm = RLM(backend="openai", environment=kind, environment_kwargs=options, persistent=True)
        try:
            assert rlm.completion("alpha").response == "sub:q|alpha"
            # Persistent: ``context`` stays the first turn's (``context_1`` is "beta").
            assert rlm.completion("beta").response == "sub:q|alpha"
            assert rlm._persistent_env.get_context_count() == 2  # type: ignore[union-attr]
        finally:
            rlm.close()
