"""Keeps one environment's worker alive and runs its cells under the timeout policy.

The supervisor owns the transport, the current ``WorkerClient`` and the host-side
``WorkerState``. It starts workers, replaces dead or stuck ones (replaying inputs
and the last snapshot), answers the worker's sub-call requests, and runs cells:

1. wait for the cell for ``cell_timeout`` seconds of its own running time (time
   spent waiting for sub-call answers is not counted), and at most ``cell_wall_timeout``
   seconds of wall-clock time (sub-calls included: a cell that keeps one in flight from
   a thread cannot pause its clock forever);
2. then interrupt it in the worker and wait ``interrupt_grace`` seconds: if it ends,
   the namespace is intact;
3. otherwise kill the worker, start a new one and restore the namespace.

A cell is stopped the same way, at once, when the host asks (``interrupt_cell``: the
run was stopped): interrupted, then the worker replaced if it does not stop within
``interrupt_grace`` seconds; the worker otherwise stays, namespace and all.

After a cell the worker sends ``cell_done``, then its snapshot delta, then the cell's
reply: once ``execute_code`` returns, the host holds a snapshot that includes that
cell. Saving the delta has its own limit (``snapshot_timeout``).

What a worker can make the host spend is bounded: frames from it are capped
(``Limits.max_frame_bytes``; an oversize one is refused from its header and the worker
is replaced), and at most ``Limits.max_pending_subcalls`` of its sub-call requests are
answered at once, on a bounded pool of threads; further ones are refused with an
error the REPL sees.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any

from rlm.base.errors import EnvironmentError_, WorkerCrashedError, WorkerTimeoutError
from rlm.base.types import RLMChatCompletion
from rlm.environments.host.client import DEFAULT_MAX_FRAME_MB, NO_VALUE, Work, WorkerClient
from rlm.environments.host.recovery import CellClock, format_lost
from rlm.environments.host.state import WorkerState
from rlm.environments.host.subcall_relay import OPS, SubcallRelay, outcome_text
from rlm.environments.transports.base import Transport

Reply = dict[str, Any]
DEFAULT_MAX_PENDING_SUBCALLS = 32  # a worker's sub-call requests being answered at once


@dataclass
class Timeouts:
    """Seconds; see WorkerEnv for the defaults."""

    cell: float
    interrupt_grace: float
    start: float
    control: float
    snapshot: float
    wall: float = 0.0  # wall-clock cap per cell, sub-calls included; 0: 4 x ``cell``

    def __post_init__(self) -> None:
        self.wall = max(self.wall, self.cell) if self.wall > 0 else 4 * self.cell


@dataclass
class Limits:
    """What one worker may make the host spend (see WorkerEnv for the kwargs)."""

    max_frame_bytes: int = int(DEFAULT_MAX_FRAME_MB * 2**20)
    max_pending_subcalls: int = DEFAULT_MAX_PENDING_SUBCALLS


class WorkerSupervisor:
    """The worker of one environment: start, replace, run cells, relay sub-calls."""

    def __init__(
        self,
        transport: Transport,
        state: WorkerState,
        relay: SubcallRelay,
        timeouts: Timeouts,
        worker_args: list[str],
        tools: dict[str, Any] | None,
        owner: str,
        limits: Limits | None = None,
    ) -> None:
        self.transport = transport
        self.limits = limits or Limits()
        self._pending_subcalls = 0  # sub-call requests being answered, any worker
        self.state = state
        self.relay = relay
        self.timeouts = timeouts
        self._worker_args = worker_args
        self._tools = tools
        self._owner = owner
        self.client: WorkerClient | None = None
        self.notes: list[str] = []  # told to the model with the next cell's output
        self.calls: dict[int, list[RLMChatCompletion]] = {}
        self._calls_lock = threading.Lock()
        self._clock = CellClock()
        self._stop_lock = threading.Lock()
        self._running: int | None = None  # the cell ``run_cell`` waits for
        self._stopping = False  # ``interrupt_cell`` asked for that cell to stop
        self._wake = threading.Event()  # set by its reply and by ``interrupt_cell``

    # -- workers ------------------------------------------------------------------------

    def start(self, spare: WorkerClient | None = None) -> WorkerClient:
        """Start a worker on the transport, or take over ``spare`` (a started worker
        that has run nothing, on this transport: ``host.spares``)."""
        holder: list[WorkerClient] = []
        limit = self.state.limit_bytes + (1 << 20)  # one entry never exceeds the store
        threads = self.limits.max_pending_subcalls + 2
        if spare is not None:
            spare.adopt(lambda m: self._on_message(holder[0], m), limit, threads)
            holder.append(spare)
            return self._started(spare)
        client = WorkerClient(
            self.transport,
            lambda m: self._on_message(holder[0], m),
            limit,
            self.limits.max_frame_bytes,
            max_threads=threads,
        )
        holder.append(client)
        try:
            client.start(self._worker_args, self.timeouts.start)
        except (WorkerCrashedError, WorkerTimeoutError) as exc:
            tail = self.transport.stderr_tail().strip()
            detail = f":\n{tail[-2000:]}" if tail else ""
            message = f"{self._owner}: could not start the worker ({exc}){detail}"
            raise EnvironmentError_(message) from exc
        return self._started(client)

    def _started(self, client: WorkerClient) -> WorkerClient:
        if self._tools:
            reply = client.request("tools", self._tools, self.timeouts.control)
            for name, error in (reply.get("errors") or {}).items():
                self.notes.append(f"Warning: custom tool {name!r} could not be built: {error}")
        self.client = client
        return client

    def alive_client(self, last_cell: int) -> WorkerClient:
        """The running worker; a dead one is replaced first (and the model told)."""
        client = self.client
        if client is not None and client.alive:
            return client
        why = client.death() if client is not None else "it was not running"
        lost = self.restart()
        self.notes.append(
            f"Note: the worker had stopped after cell {last_cell} ({why}); it was restarted. "
            + format_lost(lost, self.state.after_cell, self.transport)
        )
        assert self.client is not None
        return self.client

    def restart(self) -> dict[str, str]:
        """Replace the worker; replay inputs and the snapshot. Returns the names that
        could not be restored, with reasons."""
        if self.client is not None:
            self.client.kill()
        self.state.discard_staged()
        client = self.start()
        self._replay_inputs(client)
        metas, bodies = self.state.restore_payload()
        lost = dict(self.state.unsaved)
        if metas:
            try:
                timeout = self.timeouts.control
                reply = client.request("restore", chunks=bodies, entries=metas, timeout=timeout)
                lost.update(reply.get("failed") or {})
            except (WorkerCrashedError, WorkerTimeoutError) as exc:
                # Loading the snapshot itself broke the worker: start clean instead.
                client.kill()
                self._replay_inputs(self.start())
                lost.update({m["name"]: f"restoring it stopped the worker ({exc})" for m in metas})
        self.state.forget(lost)
        return lost

    def _replay_inputs(self, client: WorkerClient) -> None:
        inputs, timeout = self.state.inputs, self.timeouts.control
        for index, value in sorted(inputs.contexts.items()):
            client.request("add_context", value, timeout, index=index)
        for index, value in sorted(inputs.histories.items()):
            client.request("add_history", value, timeout, index=index)
        for entry in inputs.compaction_history or []:
            client.request("append_compaction", entry, timeout)

    def control(self, op: str, last_cell: int, value: Any = NO_VALUE, **fields: Any) -> Reply:
        """A request outside cells; a dead or stuck worker is replaced and asked again
        (``value``, if given, is streamed after the request)."""
        for attempt in (1, 2):
            client = self.alive_client(last_cell)
            try:
                return client.request(op, value, self.timeouts.control, **fields)
            except (WorkerCrashedError, WorkerTimeoutError):
                client.kill()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    # -- cells --------------------------------------------------------------------------

    def run_cell(self, client: WorkerClient, code: str, cell: int) -> tuple[Reply | None, str]:
        """The cell's reply (None if the worker was replaced) and an error line for the
        model ("" when the cell simply ran)."""
        self._clock.start(cell)
        wake = threading.Event()
        with self._stop_lock:
            self._running, self._stopping, self._wake = cell, False, wake
        try:
            return self._run_cell(client, code, cell, wake)
        finally:
            with self._stop_lock:
                self._running, self._stopping = None, False

    def interrupt_cell(self) -> bool:
        """Stop the running cell (the run was stopped): ``run_cell`` interrupts it in
        the worker and, if it has not ended ``interrupt_grace`` seconds later, replaces
        the worker. Returns at once (any thread); True if a cell was running."""
        with self._stop_lock:
            if self._running is None:
                return False
            self._stopping = True
            self._wake.set()
            return True

    def _run_cell(
        self, client: WorkerClient, code: str, cell: int, wake: threading.Event
    ) -> tuple[Reply | None, str]:
        started, cap, wall = time.monotonic(), self.timeouts.cell, self.timeouts.wall

        def remaining() -> float:  # whichever limit is nearer: running time, wall clock
            if self._stopping:
                return 0.0
            return min(cap - self._clock.elapsed(), wall - (time.monotonic() - started))

        try:
            future = client.submit("exec", code=code, cell=cell)
            future.add_done_callback(lambda _: wake.set())
            if self._wait(future, cell, remaining, wake):
                return self._reply(client, future, cell), ""
            grace = self.timeouts.interrupt_grace
            if self._stopping:
                error, why = "KeyboardInterrupt", "was interrupted: the run was stopped"
                failed = (
                    f"was interrupted (the run was stopped) and did not stop within {grace:g} s"
                )
            else:
                if time.monotonic() - started >= wall:
                    limit = (
                        f"the {wall:g} s cell_wall_timeout (wall-clock time, "
                        "waiting for sub-calls included)"
                    )
                else:
                    limit = f"the {cap:g} s cell_timeout"
                error, why = "TimeoutError", f"ran longer than {limit} and was interrupted"
                failed = f"ran longer than {limit} and did not stop when interrupted"
            client.interrupt(cell)
            since = time.monotonic()
            if self._wait(future, cell, lambda: grace - (time.monotonic() - since), wake):
                reply = self._reply(client, future, cell)
                return reply, f"{error}: cell {cell} {why}; the namespace is intact."
            return None, self._replace(error, f"cell {cell} {failed}")
        except WorkerCrashedError:
            why = client.death()
            return None, self._replace(
                "WorkerCrashedError", f"the worker died while running cell {cell} ({why})"
            )
        except WorkerTimeoutError as exc:
            return None, self._replace("WorkerTimeoutError", f"after cell {cell}, {exc}")

    def _wait(
        self,
        future: Future[Reply],
        cell: int,
        remaining: Callable[[], float],
        wake: threading.Event,
    ) -> bool:
        """Wait while the cell runs; True once it has ended (``cell_done`` or reply),
        False once ``remaining()`` is used up (``interrupt_cell`` uses it up at once)."""
        while not (future.done() or self._clock.finished(cell)):
            left = remaining()
            if left <= 0:
                return False
            wake.clear()  # then look again: a reply that came meanwhile is not missed
            if future.done() or self._clock.finished(cell) or remaining() <= 0:
                continue
            # Wakes at the reply or an interrupt. The floor keeps a cell whose clock is
            # paused on a long sub-call from being polled in a tight loop.
            wake.wait(max(left, 0.05))
        return True

    def _reply(self, client: WorkerClient, future: Future[Reply], cell: int) -> Reply:
        """The reply of an ended cell; its snapshot may still be being saved."""
        for step in (self.timeouts.snapshot, self.timeouts.interrupt_grace):
            try:
                return future.result(step)
            except FutureTimeout:
                client.interrupt(cell)  # a value whose pickling hangs is skipped
        raise WorkerTimeoutError("the worker stopped answering while saving its snapshot")

    def _replace(self, error: str, what: str) -> str:
        lost = self.restart()
        restored = format_lost(lost, self.state.after_cell, self.transport)
        return f"{error}: {what}, so the worker was restarted. {restored}"

    def abandon(self, cell: int) -> None:
        """The host stopped waiting (Ctrl-C): stop the cell, or replace the worker."""
        client = self.client
        if client is None or not client.alive:
            return
        client.interrupt(cell)
        try:
            client.request("ping", timeout=self.timeouts.interrupt_grace)
        except Exception:
            try:
                self.restart()
            except Exception:
                client.kill()

    # -- the worker's messages (client reader thread) ------------------------------------

    def _on_message(self, client: WorkerClient, message: dict[str, Any]) -> Work | None:
        """In channel order (snapshot entries before their commit); a sub-call is
        returned as work for the client to run off the reading path (the client sends
        the reply it returns)."""
        op = message.get("op")
        if op == "entry":
            self.state.stage(message)
        elif op == "snapshot":
            self.state.commit(message)
        elif op == "cell_done":
            self._clock.finish(message.get("cell"))
        elif op == "budget":  # cheap: answered on the reading thread
            client.send({"re": message.get("id"), "value": self.relay.remaining()})
        elif op in OPS:
            cap = self.limits.max_pending_subcalls
            with self._calls_lock:
                refused = self._pending_subcalls >= cap
                if not refused:
                    self._pending_subcalls += 1
            if refused:  # answered at once, on the reading thread: no thread, no wait
                client.send({"re": message.get("id"), "error": _refusal(cap)})
                return None
            self._clock.enter(message.get("cell"))
            return lambda: self._answer(message)
        return None

    def _answer(self, message: dict[str, Any]) -> dict[str, Any]:
        """The reply to a sub-call request (never raises: the worker always gets one)."""
        cell, prompts, model = message.get("cell"), message.get("prompts"), message.get("model")
        count = len(prompts) if isinstance(prompts, list) else 1
        outcomes: list[Any] = []
        try:
            if not isinstance(prompts, list):
                raise TypeError("malformed sub-call request")
            op, model = str(message["op"]), model if isinstance(model, str) else None
            outcomes = self.relay.run(op, prompts, model, message.get("schema"))
            texts = [outcome_text(o) for o in outcomes]
        except BaseException as exc:  # never leave the worker waiting
            texts = [f"Error: LM query failed - {exc}"] * count
        finally:
            self._clock.leave(cell)
            with self._calls_lock:
                self._pending_subcalls -= 1
                calls = self.calls.get(cell) if isinstance(cell, int) else None
                if calls is not None:
                    calls.extend(o for o in outcomes if isinstance(o, RLMChatCompletion))
        return {"re": message.get("id"), "texts": texts}

    def collect_calls(self, cell: int | None) -> list[RLMChatCompletion]:
        """Start collecting ``cell``'s completions (None: stop); returns the last ones."""
        with self._calls_lock:
            previous = [c for calls in self.calls.values() for c in calls]
            self.calls = {cell: []} if cell is not None else {}
            return previous

    def close(self) -> None:
        client, self.client = self.client, None
        if client is not None:
            client.close()
        self.transport.close()
        self.relay.close()


def _refusal(cap: int) -> str:
    return (
        f"LM query refused - {cap} sub-call requests from this REPL are already being "
        "answered (max_pending_subcalls); wait for some to finish"
    )
