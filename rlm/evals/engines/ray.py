"""The Ray engine: each item is a Ray task; rows come back to the driver as they finish.

``pip install 'rlmx[ray]'``. With ``address`` the engine joins that cluster
(``"auto"``, ``"ray://host:10001"``...); without it, it uses the Ray instance already
initialised in this process, or starts a local one (``num_cpus`` workers) and stops it
afterwards. Each task runs ``execute`` in a Ray worker: it builds (or receives) its
task, its own RLM and its own environment (``sandbox`` by default, from the method),
so nothing is shared between items but the LM call cap.

The cap holds per cluster, not per worker: with ``max_inflight_llm_calls`` one
governor actor holds the budget and every LM call of every worker takes a permit from
it (one actor round trip per call, about a millisecond). Rows are written by the
driver only, in the order tasks finish, so results and resume work exactly as with
the local engine. At most ``max_pending`` tasks are queued at once (default: twice
the cluster's task slots), so a huge suite does not flood the scheduler. A task whose
worker process dies is retried once by Ray; after that its row is a failure of kind
``environment``.

Workers must import the same rlmx: a local cluster shares this interpreter; a remote
one needs rlmx installed on its nodes (or ``runtime_env``, passed to ``ray.init``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from rlm.evals.engines import OnResult
from rlm.evals.execute import crash_row, execute
from rlm.evals.records import WorkItem


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise RuntimeError(
            "the ray engine needs Ray: pip install 'rlmx[ray]' (or pip install ray)"
        ) from None
    return ray


class Governor:
    """The cluster's LM call budget (an async Ray actor; see the module docstring)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._semaphore = asyncio.Semaphore(limit)
        self.in_flight = 0
        self.peak = 0
        self.granted = 0

    async def acquire(self) -> None:
        await self._semaphore.acquire()
        self.in_flight += 1
        self.granted += 1
        self.peak = max(self.peak, self.in_flight)

    async def release(self) -> None:
        self.in_flight -= 1
        self._semaphore.release()

    async def stats(self) -> dict[str, int]:
        return {"limit": self.limit, "peak": self.peak, "granted": self.granted}


class RayPermit:
    """A ``Permit`` backed by the ``Governor`` actor."""

    def __init__(self, actor: Any) -> None:
        self.actor = actor

    def acquire(self) -> None:
        _ray().get(self.actor.acquire.remote())

    def release(self) -> None:
        _ray().get(self.actor.release.remote())


def run_on_worker(item: WorkItem, governor: Any) -> dict[str, Any]:
    """The Ray task: one item's row."""
    permit = RayPermit(governor) if governor is not None else None
    return execute(item, permit, "ray")


class RayEngine:
    """Runs items as Ray tasks (see the module docstring)."""

    name = "ray"

    def __init__(
        self,
        address: str | None = None,
        num_cpus: int | None = None,
        task_cpus: float = 1.0,
        max_pending: int | None = None,
        max_inflight_llm_calls: int | None = None,
        runtime_env: dict[str, Any] | None = None,
    ) -> None:
        self.address = address
        self.num_cpus = num_cpus
        self.task_cpus = task_cpus
        self.max_pending = max_pending
        self.cap = max_inflight_llm_calls
        self.runtime_env = runtime_env

    def _start(self, ray: Any) -> bool:
        if ray.is_initialized():
            return False
        options: dict[str, Any] = {"log_to_driver": False, "configure_logging": False}
        if self.runtime_env:
            options["runtime_env"] = self.runtime_env
        if self.address:
            ray.init(address=self.address, **options)
        else:
            ray.init(num_cpus=self.num_cpus, include_dashboard=False, **options)
        return True

    def run(self, items: Sequence[WorkItem], on_result: OnResult) -> dict[str, Any]:
        ray = _ray()
        started = self._start(ray)
        governor = None
        pending: dict[Any, WorkItem] = {}
        try:
            if self.cap:
                governor = ray.remote(num_cpus=0)(Governor).remote(self.cap)
            task = ray.remote(num_cpus=self.task_cpus, max_retries=1)(run_on_worker)
            slots = max(1, int(ray.cluster_resources().get("CPU", 1) / self.task_cpus))
            window = self.max_pending or 2 * slots
            queue = list(items)
            queue.reverse()
            while queue or pending:
                while queue and len(pending) < window:
                    item = queue.pop()
                    pending[task.remote(item, governor)] = item
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
                for ref in ready:
                    item = pending.pop(ref)
                    try:
                        row = ray.get(ref)
                    except Exception as exc:  # the worker died, or the task could not run
                        row = crash_row(item, exc, self.name)
                    on_result(row)
            facts: dict[str, Any] = {"engine": self.name, "workers": slots, "max_pending": window}
            if governor is not None:
                stats = ray.get(governor.stats.remote())
                facts.update(llm_call_cap=stats["limit"], llm_calls_peak=stats["peak"])
            return facts
        finally:
            for ref in pending:
                ray.cancel(ref, force=False)
            if governor is not None:
                ray.kill(governor)
            if started:
                ray.shutdown()
