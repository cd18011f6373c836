"""The store's chunk codecs: zstd where available, zlib with ``RLM_STORE_CODEC=zlib``,
both readable in one store; damaged or oversized chunks are clear errors; a store
with zstd chunks read by a Python without zstd says what to install."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from rlm.base.errors import SessionStoreError
from rlm.sessions import SQLiteSessionStore, blobs, codecs

REPO = Path(__file__).resolve().parents[2]
DATA = b"".join(b"%d-" % i + b"y" * 90 for i in range(20_000))  # ~2 MB, compressible


def _chunk_codecs(path: Path) -> set[int]:
    with sqlite3.connect(path) as db:
        return {int(r[0]) for r in db.execute("SELECT codec FROM chunks")}


def _write(path: Path, data: bytes) -> str:
    SQLiteSessionStore(path).close()  # the store's schema
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as db:
        return blobs.put_bytes(db, data)


def _read(path: Path, digest: str) -> bytes:
    with contextlib.closing(sqlite3.connect(path)) as db:
        return bytes(blobs.read_bytes(db, digest))


needs_zstd = pytest.mark.skipif(codecs._zstd() is None, reason="zstd is not installed")


@needs_zstd
def test_zstd_and_zlib_chunks_live_in_one_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "s.db"
    first = _write(path, DATA)
    assert _chunk_codecs(path) == {codecs.ZSTD}
    monkeypatch.setenv(codecs.CODEC_ENV, "zlib")
    second = _write(path, DATA[::-1])
    assert _chunk_codecs(path) == {codecs.ZSTD, codecs.ZLIB}
    monkeypatch.delenv(codecs.CODEC_ENV)
    assert _read(path, first) == DATA
    assert _read(path, second) == DATA[::-1]


def test_a_bad_codec_setting_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(codecs.CODEC_ENV, "lzma")
    with pytest.raises(SessionStoreError, match="RLM_STORE_CODEC='lzma': use 'zstd' or 'zlib'"):
        codecs.writing_codec()


def test_incompressible_data_is_stored_raw() -> None:
    noise = os.urandom(300_000)
    assert codecs.pack(noise, codecs.writing_codec()) == (codecs.RAW, noise)


@pytest.mark.parametrize("codec", [codecs.ZLIB, pytest.param(codecs.ZSTD, marks=needs_zstd)])
def test_a_chunk_never_decompresses_past_its_recorded_size(codec: int) -> None:
    # a store file is untrusted: 50 MB of zeros in a row that claims 1,000 bytes
    used, bomb = codecs.pack(bytes(50_000_000), codec)
    assert used == codec and len(bomb) < 1_000_000
    with pytest.raises(SessionStoreError, match="wrong size"):
        codecs.unpack(codec, bomb, 1000, "blob abc")
    assert codecs.unpack(codec, bomb, 50_000_000, "blob abc") == bytes(50_000_000)


@pytest.mark.parametrize("codec", [codecs.ZLIB, pytest.param(codecs.ZSTD, marks=needs_zstd), 9])
def test_damaged_chunks_are_store_errors(codec: int) -> None:
    with pytest.raises(SessionStoreError, match=r"blob abc: .*(damaged|unknown codec 9)"):
        codecs.unpack(codec, b"not compressed data at all", 100, "blob abc")


def test_zlib_chunks_of_earlier_stores_still_read(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    digest = _write(path, DATA)
    with sqlite3.connect(path) as db:  # as an rlmx before zstd wrote it: DATA is one chunk
        assert db.execute("SELECT size FROM chunks").fetchall() == [(len(DATA),)]
        db.execute("UPDATE chunks SET codec = 1, data = ?", (zlib.compress(DATA, 1),))
    assert _chunk_codecs(path) == {codecs.ZLIB}
    assert _read(path, digest) == DATA


@needs_zstd
def test_a_python_without_zstd_says_what_to_install(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    digest = _write(path, DATA)
    script = (
        "import sys\n"
        "sys.modules['zstandard'] = None\n"  # as if neither zstd were installed
        "sys.modules['compression.zstd'] = None\n"
        "import sqlite3\n"
        "from rlm.sessions import blobs\n"
        "try:\n"
        "    blobs.read_bytes(sqlite3.connect(sys.argv[1]), sys.argv[2])\n"
        "except Exception as exc:\n"
        "    print(type(exc).__name__, exc)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-c", script, str(path), digest],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == (
        f"SessionStoreError blob {digest[:12]} is compressed with zstd, which this Python "
        "lacks: pip install 'rlmx[zstd]' (or use Python 3.14+) to read this store"
    )
