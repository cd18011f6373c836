"""Warm spare workers: a worker started ahead of need, for the next environment.

A one-shot completion builds an environment and throws it away, and most of what that
costs is starting the worker (bubblewrap, the interpreter, its imports). ``WarmSpares``
keeps, per placement (``key``: the environment class, its transport's configuration and
the worker's arguments), one worker that has been started and has said ``ready`` but
has never run anything. The next environment with that placement takes it (``take``);
a new one is then started on a background thread (``refill``), never on a completion's
path.

The rules:

* a spare has run nothing: once taken it belongs to that one environment, dies with
  it, and is never handed out again;
* one pool per owner (an ``RLM``: its completions and its ``rlm_query`` children share
  it); an owner's spares are never given to another owner;
* a spare whose worker died meanwhile is discarded when taken (the environment then
  starts its own worker);
* ``close()`` kills every spare, ready or still starting, before it returns; the pool
  can be used again afterwards (``RLM.close()`` leaves the RLM usable);
* at most ``max_keys`` placements keep a spare (the oldest is dropped).

A spare never outlives the host process: like every worker, it dies with its host
(``rlm.environments.worker.lifeline``, bubblewrap's ``--die-with-parent``).
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from rlm.environments.transports.base import Transport

if TYPE_CHECKING:  # imported when a spare is started, not by ``import rlm``
    from rlm.environments.base_env import BaseEnv
    from rlm.environments.host.client import WorkerClient

DEFAULT_MAX_KEYS = 4
CLOSE_WAIT = 10.0  # seconds ``close`` waits for a spare still starting to be killed


@dataclass(frozen=True)
class SparePlan:
    """How to start a spare: a new transport, and the worker's arguments and limits."""

    make_transport: Callable[[], Transport]
    worker_args: Sequence[str]
    max_frame_bytes: int
    start_timeout: float


@dataclass
class Spare:
    """A started worker that has run nothing: its transport and its client."""

    transport: Transport
    client: WorkerClient

    @property
    def pid(self) -> int | None:
        """The host's process id of the worker (its transport's, where it has one)."""
        pid = getattr(self.transport, "pid", None)
        return pid if isinstance(pid, int) else None

    def discard(self) -> None:
        with contextlib.suppress(Exception):
            self.client.kill()
        with contextlib.suppress(Exception):
            self.transport.close()


@dataclass
class _Fill:
    """A spare being started on its own thread."""

    generation: int
    done: threading.Event = field(default_factory=threading.Event)
    transport: Transport | None = None
    thread: threading.Thread | None = None


def _ignore(message: dict[str, Any]) -> None:
    """A spare's messages before it is taken (a worker that ran nothing sends none)."""
    return None


class WarmSpares:
    """One owner's spare workers, one per placement key (see the module docstring)."""

    def __init__(self, max_keys: int = DEFAULT_MAX_KEYS) -> None:
        self.max_keys = max(1, max_keys)
        self._lock = threading.Lock()
        self._ready: dict[Hashable, Spare] = {}  # insertion order: oldest first
        self._filling: dict[Hashable, _Fill] = {}
        self._generation = 0  # bumped by ``close``: spares started before it are killed

    def take(self, key: Hashable, wait: float = 0.0) -> Spare | None:
        """The ready spare for ``key`` (now this caller's alone), or None. A spare still
        starting is waited for up to ``wait`` seconds: it is further along than a new
        worker would be. A spare that died meanwhile is discarded."""
        with self._lock:
            spare = self._ready.pop(key, None)
            fill = self._filling.get(key) if spare is None else None
        if fill is not None and wait > 0:
            fill.done.wait(wait)
            with self._lock:
                spare = self._ready.pop(key, None)
        if spare is not None and not spare.client.alive:
            spare.discard()
            return None
        return spare

    def refill(self, key: Hashable, plan: SparePlan) -> None:
        """Start a spare for ``key`` in the background, unless one is ready or starting."""
        with self._lock:
            if key in self._ready or key in self._filling:
                return
            fill = _Fill(self._generation)
            self._filling[key] = fill
            thread = threading.Thread(
                target=self._fill, args=(key, plan, fill), name="rlm-warm-spare", daemon=True
            )
            fill.thread = thread
        thread.start()

    def _fill(self, key: Hashable, plan: SparePlan, fill: _Fill) -> None:
        spare: Spare | None = None
        try:
            transport = plan.make_transport()
            with self._lock:
                fill.transport = transport
                cancelled = fill.generation != self._generation
            if cancelled:
                transport.close()
                return
            from rlm.environments.host.client import WorkerClient

            client = WorkerClient(transport, _ignore, max_frame_bytes=plan.max_frame_bytes)
            try:
                client.start(plan.worker_args, plan.start_timeout)
            except BaseException:
                transport.close()
                raise
            spare = Spare(transport, client)
        except Exception:
            spare = None  # the environment that wanted it starts its own (and reports why)
        finally:
            dropped: list[Spare] = []
            with self._lock:
                if self._filling.get(key) is fill:
                    del self._filling[key]
                if spare is not None and fill.generation == self._generation:
                    self._ready[key] = spare
                    while len(self._ready) > self.max_keys:
                        dropped.append(self._ready.pop(next(iter(self._ready))))
                elif spare is not None:
                    dropped.append(spare)
            for extra in dropped:
                extra.discard()
            fill.done.set()

    def wait_ready(self, key: Hashable | None = None, timeout: float = 60.0) -> bool:
        """Wait until no spare (of ``key``, or of any key) is starting; True if a spare
        of ``key`` (any spare, without a key) is then ready."""
        with self._lock:
            fills = [f for k, f in self._filling.items() if key is None or k == key]
        for fill in fills:
            fill.done.wait(timeout)
        with self._lock:
            return bool(self._ready) if key is None else key in self._ready

    def pids(self) -> list[int]:
        """The process ids of the ready spares' workers (tests, diagnostics)."""
        with self._lock:
            spares = list(self._ready.values())
        return [pid for pid in (s.pid for s in spares) if isinstance(pid, int)]

    def close(self, wait: float = CLOSE_WAIT) -> None:
        """Kill every spare, ready or starting; returns once they are gone (a spare
        still starting is waited for up to ``wait`` seconds). The pool stays usable."""
        with self._lock:
            self._generation += 1
            ready, self._ready = list(self._ready.values()), {}
            fills = list(self._filling.values())
        for spare in ready:
            spare.discard()
        for fill in fills:
            transport = fill.transport
            if transport is not None:  # its start then fails at once
                with contextlib.suppress(Exception):
                    transport.kill()
        if sys.is_finalizing():  # daemon threads are frozen: the spares die with us
            return
        current = threading.current_thread()
        for fill in fills:
            if fill.thread is not current:
                fill.done.wait(wait)


class SpareEnvFactory:
    """An owner's ``make_env(name, kwargs)``: environments that take spares
    (``environment_takes_spares``) are given this owner's pool, made on first need;
    every environment is built by ``make`` (the engine's patchable factory)."""

    __slots__ = ("_lock", "_make", "spares")

    def __init__(self, make: Callable[[str, dict[str, Any]], BaseEnv]) -> None:
        self._make = make
        self._lock = threading.Lock()
        self.spares: WarmSpares | None = None

    def __call__(self, name: str, kwargs: dict[str, Any]) -> BaseEnv:
        from rlm.environments import environment_takes_spares

        if "spares" not in kwargs and environment_takes_spares(name):
            with self._lock:
                if self.spares is None:
                    self.spares = WarmSpares()
                kwargs = {**kwargs, "spares": self.spares}
        return self._make(name, kwargs)

    def close(self) -> None:
        """Kill the owner's spares (the factory stays usable)."""
        spares = self.spares
        if spares is not None:
            spares.close()
