"""``DurableSession``: the store side of one durable ``RLM``.

It holds the session's write lock for as long as the RLM is open (a server sharing the
store with other processes lets go of it between turns: ``release_lock`` /
``reacquire``), restores the thread
into a fresh environment (namespace first, then contexts, histories and final
answers), and writes each finished turn, completed or not, in one transaction. The
engine calls it at two points only: when the persistent environment is created
(``restore``) and when a root turn closes (``record_turn``).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rlm.base.checkpoint import Checkpoint
from rlm.base.errors import ConfigurationError, RLMLimitError, SessionStoreError
from rlm.base.types import QueryMetadata, UsageSummary
from rlm.core import snapshots
from rlm.sessions.models import SessionRecord, TurnRecord, TurnStatus, TurnWrite
from rlm.sessions.store import LockHandle, MissingPartsError, SessionStore, open_store

if TYPE_CHECKING:
    from rlm.core.loop import TurnResult
    from rlm.core.turn import Turn


@dataclass(frozen=True)
class Restored:
    """What a restore put back: one ``QueryMetadata`` per context (by index), the turns,
    and ``{name: why}`` for the variables that are not back."""

    contexts: list[QueryMetadata]
    turns: int
    lost: dict[str, str]
    stopped_index: int | None  # the last turn's index if it did not complete


class DurableSession:
    """One session of ``store``, opened for writing (its lock is held until ``close``)."""

    def __init__(
        self,
        store: SessionStore,
        session_id: str,
        config: dict[str, Any],
        *,
        owns_store: bool = False,
        lock_timeout: float | None = None,
    ) -> None:
        self.store = store
        self.session_id = session_id
        self._owns_store = owns_store
        self._lock: LockHandle | None = store.acquire_lock(session_id, lock_timeout)
        try:
            self.info: SessionRecord = store.ensure_session(session_id, config)
            self.thread: list[TurnRecord] = store.thread(session_id)
        except BaseException:
            self.close()
            raise
        self._pending: Checkpoint | None = None
        self._matched: tuple[Any, tuple[str, str]] | None = None  # (prompt, its hash)
        self.idempotency_key: str | None = None  # stored with the next turn, then cleared

    # -- the write lock between turns --------------------------------------------------

    @property
    def holds_lock(self) -> bool:
        return self._lock is not None

    def release_lock(self) -> None:
        """Let another process write the session until ``reacquire``. Idempotent."""
        lock, self._lock = self._lock, None
        if lock is not None:
            lock.release()

    def reacquire(self, timeout: float | None = None) -> bool:
        """Take the lock back (waiting up to ``timeout``; raises ``SessionLockedError``).
        True when the stored thread is still the one held in memory; False when another
        process wrote, forked over or deleted the session meanwhile (then this object,
        and the environment built from it, are stale: rebuild them from the store)."""
        if self._lock is None:
            self._lock = self.store.acquire_lock(self.session_id, timeout)
        record = self.store.get_session(self.session_id)
        head = self.head
        return record is not None and record.head_turn == (head.id if head else None)

    @property
    def head(self) -> TurnRecord | None:
        return self.thread[-1] if self.thread else None

    # -- resume ------------------------------------------------------------------------

    def restore(self, env: Any) -> Restored:
        """Bind the thread into the fresh environment ``env``."""
        head = self.head
        if head is None:
            return Restored([], 0, {}, None)
        lost: dict[str, str] = {}
        try:
            snap = self.store.read_snapshot(head)
            if snap is not None:
                lost = snapshots.restore(env, snap, self.store.read_part)
            else:
                lost = {"*": "the environment that wrote this session could not save them"}
            contexts = []
            for turn in self.thread:
                payload = self.store.read_context(turn)
                contexts.append(QueryMetadata(payload))
                if turn.index >= env.get_context_count():
                    env.add_context(payload, turn.index)
                del payload
                if turn.index >= env.get_history_count():
                    env.add_history(self.store.read_history(turn), turn.index)
                env.set_variable(f"final_answer_{turn.index}", turn.answer)
        except SessionStoreError:
            raise
        except Exception as exc:
            raise SessionStoreError(
                f"session {self.session_id!r} could not be restored: {type(exc).__name__}: {exc}"
            ) from exc
        stopped = None if head.completed else head.index
        return Restored(contexts, len(self.thread), lost, stopped)

    def pending(self) -> Checkpoint | None:
        """The checkpoint of the last turn if it did not complete."""
        head = self.head
        if head is None or head.completed or head.checkpoint is None:
            return None
        if self._pending is None:
            history = self.store.read_history(head)
            self._pending = Checkpoint.from_record(head.checkpoint, history, self.session_id)
        return self._pending

    def same_request(self, prompt: Any, root_prompt: str | None) -> bool:
        """Whether ``prompt``/``root_prompt`` are those of the stopped last turn."""
        head = self.head
        if head is None or head.completed or head.root_prompt != root_prompt:
            return False
        if head.context_meta != QueryMetadata(prompt).to_dict():
            return False
        known = self.store.context_hash(prompt)
        if known[0] != head.context_hash:
            return False
        self._matched = (prompt, known)
        return True

    # -- turns -------------------------------------------------------------------------

    def record_turn(
        self, turn: Turn, result: TurnResult | None, error: BaseException | None
    ) -> None:
        """Save a finished root turn. A failure to save a turn that failed anyway is
        noted on its error rather than raised over it."""
        resumed, state = turn.resumed, turn.state
        try:
            self.record(
                turn.env, index=turn.index, prompt=turn.prompt,
                root_prompt=turn.loop_cfg.root_prompt, messages=state.messages,
                answer=result.answer if result is not None else None, error=error,
                usage=turn.usage, iterations=result.iterations if result else state.completed,
                started=turn.started, checkpoint=turn.checkpoint,
                replaces=resumed is not None and resumed.context_index == turn.index,
            )  # fmt: skip
        except Exception as exc:
            if error is None:
                raise
            error.add_note(f"This turn could not be saved to the session store: {exc}")

    def record(
        self,
        env: Any,
        *,
        index: int,
        prompt: Any,
        root_prompt: str | None,
        messages: list[dict[str, Any]],
        answer: str | None,
        error: BaseException | None,
        usage: UsageSummary,
        iterations: int | None,
        started: float,
        checkpoint: Checkpoint | None,
        replaces: bool,
    ) -> TurnRecord:
        """Write one finished turn; the namespace is captured from ``env`` first."""
        status: TurnStatus = "completed"
        if error is not None:
            status = "stopped" if isinstance(error, RLMLimitError) else "failed"
        matched = self._matched
        write = TurnWrite(
            index=index,
            status=status,
            root_prompt=root_prompt,
            context=prompt,
            context_meta=QueryMetadata(prompt).to_dict(),
            messages=messages,
            answer=answer,
            error=None if error is None else f"{type(error).__name__}: {error}",
            usage=usage.to_dict(),
            cost=usage.total_cost,
            iterations=iterations,
            execution_time=time.perf_counter() - started,
            snapshot=None,
            checkpoint=checkpoint.to_record() if checkpoint is not None else None,
            context_hash=matched[1] if matched is not None and matched[0] is prompt else None,
            replaces_head=replaces,
            idempotency_key=self.idempotency_key,
        )
        self._matched = None
        self.idempotency_key = None
        if self._lock is None:
            raise SessionStoreError(
                f"session {self.session_id!r} is not held by this process: "
                "reacquire() its lock before writing a turn"
            )
        try:
            write.snapshot = snapshots.capture(env)
            try:
                turn = self.store.write_turn(self.session_id, self._lock.owner, write)
            except MissingPartsError:  # an earlier delta never reached the store
                snapshots.forget(env)
                write.snapshot = snapshots.capture(env)
                turn = self.store.write_turn(self.session_id, self._lock.owner, write)
        except BaseException:
            snapshots.forget(env)  # the next capture must carry every body again
            raise
        if self.thread and turn.parent_id != self.thread[-1].id:
            self.thread.pop()  # the resumed turn took the stopped one's place
        self.thread.append(turn)
        self._pending = None
        return turn

    def fork(self, new_id: str) -> SessionRecord:
        return self.store.fork(self.session_id, new_id)

    def close(self) -> None:
        """Release the lock (and the store, if this session opened it). Idempotent."""
        lock, self._lock = getattr(self, "_lock", None), None
        if lock is not None:
            lock.release()
        if self._owns_store:
            self._owns_store = False
            self.store.close()


def open_durable(
    spec: SessionStore | str | os.PathLike[str] | None,
    session_id: str,
    *,
    persistent: bool,
    config: dict[str, Any],
) -> DurableSession:
    """Open ``session_id`` in the store ``spec`` names (``None``: the default store) for
    a durable ``RLM``; creates the session if it does not exist."""
    if not persistent:
        raise ConfigurationError(
            "a durable session (session_store=... or durable=True) needs persistent=True"
        )
    store = open_store(spec)
    try:
        return DurableSession(store, session_id, config, owns_store=store is not spec)
    except BaseException:
        if store is not spec:
            store.close()
        raise
