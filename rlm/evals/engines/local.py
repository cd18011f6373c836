"""The local engine: ``concurrency`` daemon threads in this process.

Each thread takes the next item, runs ``execute`` and queues the row; the caller's
thread receives rows and hands them to ``on_result``. The threads are daemons, so
Ctrl-C (or any error in ``on_result``) returns at once: items in flight are abandoned
unrecorded and rerun on resume. ``max_inflight_llm_calls`` caps LM calls across all
threads (a ``ThreadPermit``).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Sequence
from typing import Any

from rlm.evals.engines import OnResult
from rlm.evals.execute import crash_row, execute
from rlm.evals.governor import ThreadPermit
from rlm.evals.records import WorkItem


class LocalEngine:
    """Runs items on threads of this process."""

    name = "local"

    def __init__(self, concurrency: int = 4, max_inflight_llm_calls: int | None = None) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        self.concurrency = concurrency
        self.permit = ThreadPermit(max_inflight_llm_calls) if max_inflight_llm_calls else None

    def run(self, items: Sequence[WorkItem], on_result: OnResult) -> dict[str, Any]:
        todo: queue.Queue[WorkItem] = queue.Queue()
        for item in items:
            todo.put(item)
        rows: queue.Queue[dict[str, Any]] = queue.Queue()
        stop = threading.Event()

        def worker() -> None:
            while not stop.is_set():
                try:
                    item = todo.get_nowait()
                except queue.Empty:
                    return
                try:
                    rows.put(execute(item, self.permit, self.name))
                except BaseException as exc:  # execute records run failures; this is a bug
                    rows.put(crash_row(item, exc, self.name))

        threads = [
            threading.Thread(target=worker, name=f"rlm-eval-{i}", daemon=True)
            for i in range(min(self.concurrency, len(items)))
        ]
        for thread in threads:
            thread.start()
        try:
            received = 0
            while received < len(items):
                try:
                    row = rows.get(timeout=0.5)
                except queue.Empty:
                    continue
                received += 1
                on_result(row)
        finally:
            stop.set()
            time.sleep(0)  # let idle threads see the flag
        facts: dict[str, Any] = {"engine": self.name, "workers": len(threads)}
        if self.permit is not None:
            facts["llm_call_cap"] = self.permit.limit
            facts["llm_calls_peak"] = self.permit.peak
        return facts
