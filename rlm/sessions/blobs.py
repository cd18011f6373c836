"""Content-addressed, chunked, compressed blobs in the store's database.

A blob is identified by the sha256 of its bytes and stored once, however many turns or
sessions refer to it. Its bytes are cut into ``CHUNK_SIZE`` chunks, each stored once
per content hash and compressed when that pays (zstd where available, else zlib; see
``rlm.sessions.codecs``). Writing streams: ``BlobWriter`` hashes and stores each chunk as it
fills, so a 1 GB context is never held twice in memory (a ``str`` is encoded a slice at
a time, a pickle is dumped straight into the writer). Reading a large text goes through
a temporary file and ``mmap``, so only the resulting ``str`` is held in memory.

How a blob's bytes are decoded is the referrer's business (a turn records its context's
codec: ``text``, ``bytes`` or ``pickle``). Writes happen inside the caller's transaction.
Pickled values run code when loaded: open only stores you trust, as with any pickle.

``db`` is a ``sqlite3.Connection`` or anything with its ``execute``/``executemany``
(the PostgreSQL store passes ``postgres_db.PgConnection``). The statements are written
so that two writers storing the same content at once both succeed (``INSERT OR
IGNORE``, then read the row back), and a blob is read one chunk per query, so a
client that buffers whole results never holds more than a chunk.
"""

from __future__ import annotations

import hashlib
import io
import json
import mmap
import pickle
import tempfile
import threading
from collections.abc import Iterator
from typing import Any, Protocol

from rlm.base.chunk_io import ChunkReader
from rlm.base.errors import SessionStoreError
from rlm.sessions import codecs
from rlm.sessions.models import TurnWrite
from rlm.sessions.store import MissingPartsError

CHUNK_SIZE = 4 << 20  # a blob up to this size is one chunk, hashed once
_PARALLEL_PACK = 256 * 1024  # chunks from this size are compressed on a second thread
MMAP_TEXT_BYTES = 64 << 20  # texts above this are decoded from a mapped temp file
_TEXT_SLICE = 1 << 20  # characters encoded at a time
_JSON_BATCH = 64 * 1024


class Cursor(Protocol):
    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    @property
    def rowcount(self) -> int: ...


class Connection(Protocol):
    """What blobs and garbage collection need of a database connection (sqlite3's API,
    ``?`` placeholders)."""

    def execute(self, sql: str, parameters: Any = ..., /) -> Cursor: ...

    def executemany(self, sql: str, parameters: Any, /) -> Any: ...


class _Packing:
    """``codecs.pack(chunk)`` on a thread of its own, so that the compressor (which
    releases the GIL) runs while the writer hashes the same chunk."""

    def __init__(self, chunk: bytes | memoryview, codec: int) -> None:
        self._chunk: bytes | memoryview | None = chunk
        self._codec = codec
        self._result: tuple[int, bytes] | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="rlm-blob-pack", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            assert self._chunk is not None
            self._result = codecs.pack(self._chunk, self._codec)
        except BaseException as exc:  # handed to result(): never lost on the thread
            self._error = exc
        finally:
            self._chunk = None

    def join(self) -> None:
        self._thread.join()

    def result(self) -> tuple[int, bytes]:
        self._thread.join()
        if self._error is not None:
            raise self._error
        assert self._result is not None
        return self._result


class BlobWriter(io.RawIOBase):
    """A write-only file that stores what it receives as one blob; ``finish()`` returns
    its hash. With ``db=None`` it only hashes (to compare contents without storing).

    Each chunk is hashed when it is sealed (full, or the last one): a blob of one chunk
    (up to ``chunk_size``) is hashed once, its digest being its chunk's; a large chunk is
    compressed on another thread meanwhile (``_Packing``)."""

    def __init__(
        self, db: Connection | None, chunk_size: int = CHUNK_SIZE, digest: str | None = None
    ) -> None:
        super().__init__()
        self.db = db
        self.chunk_size = chunk_size
        self.size = 0
        # ``digest``: the sha256 the caller computed of these very bytes in this process
        # (never one read from a worker or a file): the bytes are then not hashed again.
        self._known = digest
        self._hash = hashlib.sha256()
        self._buf = bytearray()
        self._chunk_ids: list[int] = []
        self._sealed = 0  # chunks hashed so far
        self._codec = codecs.writing_codec() if db is not None else codecs.RAW

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        n = view.nbytes
        self.size += n
        if self._buf:
            take = min(n, self.chunk_size - len(self._buf))
            self._buf += view[:take]
            view = view[take:]
            if len(self._buf) == self.chunk_size:
                self._seal(memoryview(self._buf), last=False)
                self._buf = bytearray()  # a new one: the sealed chunk keeps the old
        while len(view) >= self.chunk_size:
            self._seal(view[: self.chunk_size], last=False)
            view = view[self.chunk_size :]
        if len(view):
            self._buf += view
        return n

    def _seal(self, chunk: bytes | memoryview, last: bool) -> None:
        """Hash ``chunk`` into the blob, and store it (``last``: the blob's final one)."""
        parallel = self.db is not None and len(chunk) >= _PARALLEL_PACK
        packing = _Packing(chunk, self._codec) if parallel else None
        if self._known is None:
            self._hash.update(chunk)
        self._sealed += 1
        if self.db is None:
            return
        if last and self._sealed == 1:  # the blob is this one chunk: the same digest
            digest = self._known or self._hash.hexdigest()
        else:
            digest = hashlib.sha256(chunk).hexdigest()
        find = "SELECT id FROM chunks WHERE hash = ?"
        row = self.db.execute(find, (digest,)).fetchone()
        if row is None:
            if packing is not None:
                codec, data = packing.result()
            else:
                codec, data = codecs.pack(chunk, self._codec)
            self.db.execute(
                "INSERT OR IGNORE INTO chunks (hash, codec, size, data) VALUES (?, ?, ?, ?)",
                (digest, codec, len(chunk), data),
            )
            row = self.db.execute(find, (digest,)).fetchone()
        elif packing is not None:
            packing.join()  # no reference to the caller's bytes outlives this call
        self._chunk_ids.append(int(row[0]))

    def finish(self) -> str:
        """Store the last chunk and the blob's row (if new); return the blob's hash."""
        if self._buf:
            self._seal(memoryview(self._buf), last=True)  # the buffer is not reused
            self._buf = bytearray()
        digest = self._known or self._hash.hexdigest()
        db = self.db
        if db is not None and not has_blob(db, digest):
            db.execute(
                "INSERT OR IGNORE INTO blobs (hash, size, chunk_count) VALUES (?, ?, ?)",
                (digest, self.size, len(self._chunk_ids)),
            )
            db.executemany(
                "INSERT OR IGNORE INTO blob_chunks (blob_hash, seq, chunk_id) VALUES (?, ?, ?)",
                [(digest, seq, cid) for seq, cid in enumerate(self._chunk_ids)],
            )
        return digest


# -- writing -------------------------------------------------------------------------


def put_bytes(
    db: Connection | None, data: bytes | bytearray | memoryview, digest: str | None = None
) -> str:
    """Store ``data``; ``digest``: its sha256, computed in this process (see BlobWriter)."""
    writer = BlobWriter(db, digest=digest)
    writer.write(data)
    return writer.finish()


def put_text(db: Connection | None, text: str) -> str:
    writer = BlobWriter(db)
    for start in range(0, len(text), _TEXT_SLICE):
        writer.write(text[start : start + _TEXT_SLICE].encode("utf-8", "surrogatepass"))
    return writer.finish()


def put_json(db: Connection | None, value: Any) -> str:
    writer = BlobWriter(db)
    batch: list[str] = []
    pending = 0
    for piece in json.JSONEncoder(default=repr, ensure_ascii=False).iterencode(value):
        batch.append(piece)
        pending += len(piece)
        if pending >= _JSON_BATCH:
            writer.write("".join(batch).encode("utf-8", "surrogatepass"))
            batch, pending = [], 0
    writer.write("".join(batch).encode("utf-8", "surrogatepass"))
    return writer.finish()


def put_value(db: Connection | None, value: Any) -> tuple[str, str]:
    """Store a context payload exactly: ``(hash, codec)``. A ``str`` is stored as UTF-8
    text, ``bytes`` as is, anything else as a pickle (dicts and lists round-trip)."""
    if isinstance(value, str):
        return put_text(db, value), "text"
    if isinstance(value, bytes | bytearray):
        return put_bytes(db, value), "bytes"
    writer = BlobWriter(db)
    pickle.dump(value, writer, protocol=5)
    return writer.finish(), "pickle"


def put_turn(db: Connection, turn: TurnWrite) -> tuple[str, str, str, str | None]:
    """Store what a turn refers to: ``(context_hash, codec, history_hash, snapshot_hash)``.
    A context whose hash the caller already knows and the store holds is not written
    again; a parts snapshot naming a body the store does not hold raises
    ``MissingPartsError`` (the caller captures a full snapshot and writes again)."""
    known = turn.context_hash
    if known is not None and has_blob(db, known[0]):
        context_hash, codec = known
    else:
        context_hash, codec = put_value(db, turn.context)
    history_hash = put_json(db, turn.messages)
    snap = turn.snapshot
    if snap is None:
        return context_hash, codec, history_hash, None
    if snap.kind == "parts":
        for digest, body in snap.bodies.items():
            if not has_blob(db, digest):
                put_bytes(db, body, digest if snap.hashed_here else None)
        missing = [d for d in snap.digests if not has_blob(db, d)]
        if missing:
            raise MissingPartsError(f"{len(missing)} snapshot part(s) are not stored")
    return context_hash, codec, history_hash, put_bytes(db, snap.data)


# -- reading -------------------------------------------------------------------------


def has_blob(db: Connection, digest: str) -> bool:
    return db.execute("SELECT 1 FROM blobs WHERE hash = ?", (digest,)).fetchone() is not None


def blob_size(db: Connection, digest: str) -> int:
    row = db.execute("SELECT size FROM blobs WHERE hash = ?", (digest,)).fetchone()
    if row is None:
        raise SessionStoreError(f"blob {digest[:12]} is missing: the store is damaged")
    return int(row[0])


def iter_chunks(db: Connection, digest: str) -> Iterator[bytes]:
    """The blob's bytes, one decompressed chunk at a time (one query per chunk)."""
    size = blob_size(db, digest)
    ids = db.execute(
        "SELECT chunk_id FROM blob_chunks WHERE blob_hash = ? ORDER BY seq", (digest,)
    ).fetchall()
    seen = 0
    for (chunk_id,) in ids:
        row = db.execute("SELECT codec, size, data FROM chunks WHERE id = ?", (chunk_id,))
        found = row.fetchone()
        if found is None:
            raise SessionStoreError(f"blob {digest[:12]}: chunks are missing (damaged store)")
        codec, raw_size, data = found
        del found
        chunk = codecs.unpack(codec, data, raw_size, f"blob {digest[:12]}")
        seen += raw_size
        yield chunk
    if seen != size:
        raise SessionStoreError(f"blob {digest[:12]}: chunks are missing (damaged store)")


def read_bytes(db: Connection, digest: str) -> bytearray:
    """The blob's bytes, filled into one buffer of the right size (no joined copy)."""
    buf = bytearray(blob_size(db, digest))
    pos = 0
    for chunk in iter_chunks(db, digest):
        buf[pos : pos + len(chunk)] = chunk
        pos += len(chunk)
    return buf


def read_text(db: Connection, digest: str) -> str:
    if blob_size(db, digest) <= MMAP_TEXT_BYTES:
        return read_bytes(db, digest).decode("utf-8", "surrogatepass")
    with tempfile.TemporaryFile() as spool:  # file pages, not a second copy in the heap
        for chunk in iter_chunks(db, digest):
            spool.write(chunk)
        spool.flush()
        with mmap.mmap(spool.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            return str(mapped, "utf-8", "surrogatepass")


def read_json(db: Connection, digest: str) -> Any:
    return json.loads(read_bytes(db, digest))


def read_value(db: Connection, digest: str, codec: str) -> Any:
    """The payload stored by ``put_value``."""
    if codec == "text":
        return read_text(db, digest)
    if codec == "bytes":
        return bytes(read_bytes(db, digest))
    if codec == "pickle":
        return pickle.load(io.BufferedReader(ChunkReader(iter_chunks(db, digest))))
    raise SessionStoreError(f"unknown context codec {codec!r} (written by a newer rlmx?)")
