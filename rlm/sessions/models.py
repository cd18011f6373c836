"""The records a session store reads and writes: sessions, turns, and what a turn saves."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from rlm.sessions.locks import LockHolder

TurnStatus = Literal["completed", "stopped", "failed"]
SnapshotKind = Literal["parts", "bytes"]


@dataclass(frozen=True)
class SessionRecord:
    """A session: a named pointer to the last turn of its thread."""

    id: str
    head_turn: int | None
    created_at: float
    updated_at: float
    forked_from: str | None
    config: dict[str, Any]


@dataclass(frozen=True)
class TurnRecord:
    """One turn as stored (its blobs are read separately, on demand)."""

    id: int
    parent_id: int | None
    session_id: str  # the session that wrote it (forks share earlier turns)
    index: int  # N of context_N / history_N / final_answer_N
    status: TurnStatus
    root_prompt: str | None
    context_hash: str
    context_codec: str
    context_meta: dict[str, Any]
    history_hash: str
    answer: str | None
    error: str | None
    usage: dict[str, Any]
    cost: float | None
    iterations: int | None
    execution_time: float | None
    snapshot_kind: SnapshotKind | None
    snapshot_hash: str | None
    unrestorable: dict[str, str]
    checkpoint: dict[str, Any] | None
    created_at: float
    idempotency_key: str | None = None  # of the request that wrote it, if it had one

    @property
    def completed(self) -> bool:
        return self.status == "completed"


@dataclass
class SnapshotWrite:
    """An environment's namespace at the end of a turn.

    ``parts``: ``data`` is a JSON manifest of entries (each with the sha256 ``digest``
    of its body, if any), ``bodies`` the bodies not stored before, by digest.
    ``bytes``: ``data`` is the environment's own ``snapshot()`` bytes.
    """

    kind: SnapshotKind
    data: bytes
    bodies: dict[str, bytes] = field(default_factory=dict)
    digests: list[str] = field(default_factory=list)  # every body the manifest refers to
    unrestorable: dict[str, str] = field(default_factory=dict)
    # The bodies were hashed in this process (an in-process environment), so the store
    # need not hash them again; a worker's digests are never taken on trust.
    hashed_here: bool = False


@dataclass
class TurnWrite:
    """Everything one turn saves, written in one transaction."""

    index: int
    status: TurnStatus
    root_prompt: str | None
    context: Any
    context_meta: dict[str, Any]
    messages: list[dict[str, Any]]
    answer: str | None
    error: str | None
    usage: dict[str, Any]
    cost: float | None
    iterations: int | None
    execution_time: float | None
    snapshot: SnapshotWrite | None
    checkpoint: dict[str, Any] | None
    context_hash: tuple[str, str] | None = None  # (hash, codec) when already known
    replaces_head: bool = False  # a resumed turn takes the place of the stopped head
    idempotency_key: str | None = None  # stored with the turn: ``SessionStore.find_turn``


@dataclass(frozen=True)
class SnapshotRead:
    kind: SnapshotKind
    data: bytes | bytearray  # the manifest (parts) or the environment's bytes


@dataclass(frozen=True)
class SessionSummary:
    """A line of ``list_sessions``."""

    id: str
    turns: int
    created_at: float
    updated_at: float
    last_status: TurnStatus | None
    forked_from: str | None
    locked_by: LockHolder | None
    config: dict[str, Any]
