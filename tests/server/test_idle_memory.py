"""After a burst of completions, once nothing is running, the server hands the freed
native memory back (``malloc_trim``): RSS followed the load up and never came down,
because trimming happened only when the expiry timer closed sessions. A real uvicorn
server on loopback, real RLMs over the scripted backend."""

from __future__ import annotations

import time
from typing import Any

import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from server_support import TOKEN, ScriptedFactory, serve_in_thread  # noqa: E402

import rlm.server.app as app_module  # noqa: E402
from rlm.server import create_app  # noqa: E402

AUTH = {"Authorization": f"Bearer {TOKEN}"}


def test_memory_is_trimmed_once_a_burst_is_over_and_not_while_idle(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    trims: list[int] = []

    def counting_trim() -> bool:
        trims.append(1)
        return True

    monkeypatch.setattr(app_module, "trim_native_memory", counting_trim)
    monkeypatch.setattr(app_module, "IDLE_TRIM_AFTER", 0.05)
    app = create_app(ScriptedFactory(), token=TOKEN)
    with serve_in_thread(app) as url:
        time.sleep(0.3)
        assert trims == []  # nothing ran: nothing to give back
        body: dict[str, Any] = {"model": "rlm", "messages": [{"role": "user", "content": "hi"}]}
        with httpx.Client(timeout=30) as client:
            for _ in range(3):
                r = client.post(f"{url}/chat/completions", json=body, headers=AUTH)
                assert r.status_code == 200, r.text
        end = time.monotonic() + 10
        while not trims and time.monotonic() < end:
            time.sleep(0.02)
        assert trims, "no trim after the burst"
        # a slow client may leave the server idle between two requests too: one more trim
        time.sleep(0.3)
        after_burst = len(trims)
        assert after_burst <= 3  # at most once per idle gap (two gaps, and the end)
        time.sleep(0.3)  # idle: no new completions, so no more trims
        assert len(trims) == after_burst
