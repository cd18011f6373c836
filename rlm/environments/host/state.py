"""What the host keeps to rebuild a worker: inputs and the namespace snapshot.

* Inputs: host-side copies of every context and history (``Inputs``, the same class
  the REPLs bind from), re-sent to a fresh worker. A ``str`` context is kept by
  reference (it is immutable), so a 500 MB context costs nothing extra here.
* Snapshot: the worker's entries, as opaque bytes. The host only stores them and sends
  them back to a worker; it never unpickles them (a worker is untrusted).

``to_blob``/``from_blob`` give ``SupportsSnapshot`` its bytes. ``delta`` gives a durable
store the same entries as parts: every entry's metadata with its body's sha256, and
only the bodies not given before, so a turn that leaves a 10 MB variable alone writes
a few hundred bytes. It leaves the inputs out: the store keeps each turn's context and
history itself, once. The digests are computed here, by the host, from the bytes it
holds; a ``digest`` a worker puts in an entry's metadata is dropped. The blob is a pickle
made by the host of host-made data plus those opaque entries: treat it like any pickle
(restore only blobs this host stored).

Provenance: a blob names the kind of environment whose namespace it holds (``origin``,
set by the host when it makes the blob, never by the worker). Entries written where
model code ran with fewer privileges are not loaded where it would gain some (an
isolated worker's into the host process), unless the reader trusts snapshots:
``refusal`` says why not. See docs/security.md.
"""

from __future__ import annotations

import copy
import hashlib
import pickle
import threading
from typing import Any

from rlm.environments.worker.namespace import Inputs

BLOB_FORMAT = "rlmx-worker-snapshot"
BLOB_VERSION = 1

Entry = tuple[dict[str, Any], bytes | None]
# A durable delta: (every entry's meta with "digest", new bodies by digest, unsaved).
Delta = tuple[list[dict[str, Any]], dict[str, bytes], dict[str, str]]

# Who wrote a snapshot, from most to least trusted by the host process.
ORIGIN_HOST = "host"  # this process (LocalREPL, in-process IPython): model code ran here
ORIGIN_LOCAL_PROCESS = "local-process"  # a subprocess as this user (IPython kernel)
ORIGIN_ISOLATED = "isolated"  # sandbox, docker, modal, e2b, daytona, prime
ORIGIN_UNKNOWN = "unknown"  # written before rlmx recorded provenance
_TRUST = {ORIGIN_HOST: 2, ORIGIN_LOCAL_PROCESS: 1, ORIGIN_ISOLATED: 0, ORIGIN_UNKNOWN: 0}
_WRITERS = {
    ORIGIN_LOCAL_PROCESS: "an IPython kernel process",
    ORIGIN_ISOLATED: "an isolated environment (sandbox or container)",
}


def refusal(writer: str, reader: str) -> str | None:
    """Why entries written in a ``writer`` environment are not loaded in a ``reader``
    one (the reader would run their class bodies and unpickle them with more
    privileges than the code that made them had), or ``None`` if they may be."""
    if _TRUST.get(reader, 2) <= _TRUST.get(writer, 0):
        return None
    if writer in _WRITERS:
        saved_by = f"saved by {_WRITERS[writer]}"
    else:
        saved_by = "saved by an environment this rlmx version did not record"
    where = "the host process" if reader == ORIGIN_HOST else "a less isolated environment"
    return f"not loaded: {saved_by}, and this REPL runs in {where}"


def host_copy(value: Any) -> Any:
    """What the host keeps of a value it sends: containers are copied so the caller
    may keep mutating its own (``deepcopy`` returns str/bytes/numbers themselves)."""
    return copy.deepcopy(value)


class WorkerState:
    """Inputs and snapshot entries of one environment. Entries arrive on the client's
    reader thread (``stage``/``commit``) while the env thread reads them: one lock."""

    def __init__(self, compaction: bool, limit_bytes: int) -> None:
        self.inputs = Inputs(compaction)
        self.limit_bytes = limit_bytes
        self.entries: dict[str, Entry] = {}
        self.unsaved: dict[str, str] = {}
        self.after_cell = 0  # the cell the stored snapshot was taken after
        self.origin = ORIGIN_UNKNOWN  # who wrote the blob this state was read from
        self._staged: list[Entry] = []
        self._given: dict[str, tuple[bytes, str]] = {}  # name -> (body, digest) in a delta
        self._lock = threading.Lock()

    # -- snapshot deltas (reader thread) -----------------------------------------------

    def stage(self, message: dict[str, Any]) -> None:
        """Hold one ``entry`` message until its snapshot is complete. Bodies beyond the
        limit are dropped at once: a worker cannot make the host hoard memory."""
        body = message.pop("body", None)
        meta = {k: v for k, v in message.items() if k not in ("op", "stream", "full")}
        meta.pop("after_cell", None)
        with self._lock:
            staged = sum(_size(b) for _, b in self._staged)
            if body is not None and staged + len(body) > self.limit_bytes:
                meta["dropped"] = True
                body = None
            self._staged.append((meta, body))

    def commit(self, message: dict[str, Any]) -> None:
        """Apply the staged entries with the ``snapshot`` summary that closes them.
        A full snapshot replaces everything stored."""
        with self._lock:
            staged, self._staged = self._staged, []
            if message.get("full"):
                self.entries, self.unsaved = {}, {}
            for name in message.get("deleted") or []:
                self.entries.pop(name, None)
                self.unsaved.pop(name, None)
            for name, reason in (message.get("unsaved") or {}).items():
                self.entries.pop(name, None)  # a stale value must not come back silently
                self.unsaved[name] = str(reason)
            for meta, body in staged:
                name = str(meta.get("name"))
                if meta.get("dropped"):
                    self.entries.pop(name, None)
                    self.unsaved[name] = self._over_limit
                    continue
                self.entries[name] = (meta, body)
                self.unsaved.pop(name, None)
            self._enforce_limit()
            self.after_cell = int(message.get("after_cell") or self.after_cell)

    def forget(self, lost: dict[str, str]) -> None:
        """After a restore: the ``lost`` names no longer exist in the worker, and were
        reported once; stop carrying them."""
        with self._lock:
            for name in lost:
                self.entries.pop(name, None)
            self.unsaved = {}

    def discard_staged(self) -> None:
        """Drop entries of a snapshot that never completed (the worker died)."""
        with self._lock:
            self._staged = []

    def _enforce_limit(self) -> None:
        total = 0
        for name, (_, body) in sorted(self.entries.items(), key=lambda kv: _size(kv[1][1])):
            total += _size(body)
            if total > self.limit_bytes:
                del self.entries[name]
                self.unsaved[name] = self._over_limit

    @property
    def _over_limit(self) -> str:
        return f"over the {self.limit_bytes // 2**20} MB snapshot limit"

    # -- durable deltas (env thread) ------------------------------------------------------

    def delta(self) -> Delta:
        """Every stored entry's metadata with its body's ``digest`` (sha256 hex), the
        bodies not given in the last delta (by digest), and the unsaved names. A body
        is hashed once: an entry whose body object is the one given last time reuses
        its digest."""
        with self._lock:
            metas: list[dict[str, Any]] = []
            bodies: dict[str, bytes] = {}
            given: dict[str, tuple[bytes, str]] = {}
            known = {digest for _, digest in self._given.values()}
            for name in sorted(self.entries):
                meta, body = self.entries[name]
                meta = {k: v for k, v in meta.items() if k != "digest"}
                if body is not None:
                    prev = self._given.get(name)
                    if prev is not None and prev[0] is body:
                        digest = prev[1]
                    else:
                        digest = hashlib.sha256(body).hexdigest()
                        if digest not in known:  # same bytes as given before: named only
                            bodies[digest] = body
                    given[name] = (body, digest)
                    meta["digest"] = digest
                metas.append(meta)
            self._given = given
            return metas, bodies, dict(self.unsaved)

    def forget_given(self) -> None:
        """The last delta was not stored: the next one carries every body."""
        with self._lock:
            self._given = {}

    def load_parts(self, entries: dict[str, Entry], digests: dict[str, str]) -> None:
        """Replace the stored entries with ``entries`` read back from a durable store
        (``digests``: each body's digest there, so the next delta does not give it
        again). The inputs stay."""
        with self._lock:
            self.entries = dict(entries)
            self.unsaved = {}
            self._staged = []
            self._given = {
                name: (body, digests[name])
                for name, (_, body) in entries.items()
                if body is not None and name in digests
            }
            self._enforce_limit()

    # -- restore --------------------------------------------------------------------------

    def restore_payload(self) -> tuple[list[dict[str, Any]], list[bytes]]:
        """Entry metas (with sizes) and their bodies in the same order, for the
        ``restore`` op (streamed one after the other, never joined)."""
        with self._lock:
            metas, bodies = [], []
            for meta, body in self.entries.values():
                metas.append(dict(meta, size=_size(body) if body is not None else None))
                if body is not None:
                    bodies.append(body)
            return metas, bodies

    # -- SupportsSnapshot blob ------------------------------------------------------------

    def to_blob(self, origin: str = ORIGIN_UNKNOWN) -> bytes:
        """The blob, saying its entries were written in an ``origin`` environment."""
        with self._lock:
            data = {
                "format": BLOB_FORMAT,
                "version": BLOB_VERSION,
                "origin": origin,
                "contexts": self.inputs.contexts,
                "histories": self.inputs.histories,
                "compaction": self.inputs.compaction_history,
                "entries": self.entries,
                "unsaved": self.unsaved,
                "after_cell": self.after_cell,
            }
            return pickle.dumps(data, protocol=pickle.HIGHEST_PROTOCOL)

    @classmethod
    def from_blob(cls, blob: bytes, compaction: bool, limit_bytes: int) -> WorkerState:
        data = pickle.loads(blob)
        if not isinstance(data, dict) or data.get("format") != BLOB_FORMAT:
            raise ValueError("not an rlmx worker snapshot")
        if data.get("version") != BLOB_VERSION:
            raise ValueError(f"unsupported worker snapshot version {data.get('version')!r}")
        state = cls(compaction, limit_bytes)
        state.inputs.contexts = dict(data["contexts"])
        state.inputs.histories = dict(data["histories"])
        if compaction:
            state.inputs.compaction_history = list(data.get("compaction") or [])
        state.entries = dict(data["entries"])
        state.unsaved = dict(data["unsaved"])
        state.after_cell = int(data.get("after_cell", 0))
        state.origin = str(data.get("origin") or ORIGIN_UNKNOWN)
        return state


def _size(body: bytes | None) -> int:
    return len(body) if body is not None else 0
