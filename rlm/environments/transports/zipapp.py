"""Package the worker as one zipapp file, for machines where rlmx is not installed.

The archive holds the worker package (``rlm.environments.worker``, every module of it)
and empty ``rlm``/``rlm.environments`` package stubs, so the worker's imports work
unchanged without importing the engine. Run it with ``python -I worker.pyz [options]``.

Where no file can be placed beforehand (a container image, a cloud sandbox), run
``bootstrap_argv(python)`` instead and write ``bootstrap_payload()`` to the process's
stdin first: a few lines of ``python -c`` read the zipapp from stdin, save it to a
private temporary file and run it on the same stdin/stdout.
"""

from __future__ import annotations

import atexit
import hashlib
import importlib.util
import os
import shutil
import struct
import tempfile
import threading
import zipfile
from pathlib import Path
from typing import Any

_WORKER_DIR = Path(__file__).resolve().parent.parent / "worker"
_STUB = '"""Stub package of the rlmx worker zipapp (the engine is not included)."""\n'
_MAIN = "from rlm.environments.worker.boot import main\n\nmain()\n"
_STAMP = (1980, 1, 1, 0, 0, 0)  # fixed, so identical sources give identical archives

_lock = threading.Lock()
_cached: str | None = None


def _members() -> dict[str, str]:
    members = {
        "__main__.py": _MAIN,
        "rlm/__init__.py": _STUB,
        "rlm/environments/__init__.py": _STUB,
    }
    for source in sorted(_WORKER_DIR.glob("*.py")):
        members[f"rlm/environments/worker/{source.name}"] = source.read_text("utf-8")
    return members


def _bytecode(name: str, text: str) -> bytes:
    """``text`` compiled for this interpreter, as an unchecked hash-based pyc: zipimport
    uses it as is on the same Python version (it cannot cache bytecode itself), and
    other versions ignore it for its magic number and compile the source."""
    code = compile(text, name, "exec", dont_inherit=True)
    source_hash = importlib.util.source_hash(text.encode("utf-8"))
    external: Any = importlib._bootstrap_external
    return bytes(external._code_to_hash_pyc(code, source_hash, False))


def build_zipapp(path: str | os.PathLike[str], bytecode: bool = True) -> str:
    """Write the worker zipapp to ``path`` (atomically) and return the path. With
    ``bytecode``, compiled modules for this Python are included (faster start)."""
    target = Path(path)
    partial = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, text in _members().items():
            files: list[tuple[str, str | bytes]] = [(name, text)]
            if bytecode and name != "__main__.py":  # zipapps run __main__ from source
                files.append((name + "c", _bytecode(name, text)))
            for member, data in files:
                info = zipfile.ZipInfo(member, date_time=_STAMP)
                info.compress_type = zipfile.ZIP_DEFLATED
                info.external_attr = 0o644 << 16
                archive.writestr(info, data)
    os.chmod(partial, 0o644)
    os.replace(partial, target)
    return str(target)


# Reads exactly the zipapp (fd 0, unbuffered: nothing after it may be consumed), then
# runs it as __main__ with the remaining arguments. Python 3.9 compatible.
BOOTSTRAP = (
    "import os,struct,sys,tempfile,runpy\n"
    "def r(n):\n"
    " b=b''\n"
    " while len(b)<n:\n"
    "  c=os.read(0,n-len(b))\n"
    "  if not c: raise SystemExit('rlmx worker bootstrap: stdin closed')\n"
    "  b+=c\n"
    " return b\n"
    "p=os.path.join(tempfile.mkdtemp(prefix='rlmx-'),'worker.pyz')\n"
    "open(p,'wb').write(r(struct.unpack('>I',r(4))[0]))\n"
    "sys.argv=[p]+sys.argv[1:]\n"
    "sys.path.insert(0,p)\n"
    "runpy.run_path(p,run_name='__main__')\n"
)


def bootstrap_argv(python: str = "python3") -> list[str]:
    """The command that starts a worker from a zipapp sent on stdin."""
    return [python, "-I", "-c", BOOTSTRAP]


def bootstrap_payload() -> bytes:
    """What to write to the bootstrap's stdin before anything else."""
    data = Path(default_zipapp()).read_bytes()
    return struct.pack(">I", len(data)) + data


def worker_digest() -> str:
    """A short content hash of the worker sources (names a cached zipapp)."""
    digest = hashlib.sha256()
    for name, text in _members().items():
        digest.update(name.encode() + b"\0" + text.encode() + b"\0")
    return digest.hexdigest()[:16]


def default_zipapp() -> str:
    """This process's copy of the worker zipapp, built on first use in a private
    temporary directory that is removed at exit."""
    global _cached
    with _lock:
        if _cached is None or not os.path.exists(_cached):
            directory = tempfile.mkdtemp(prefix=f"rlmx-worker-{os.getpid()}_")
            atexit.register(shutil.rmtree, directory, True)
            # Readable by anyone: the sandbox may run the worker as another user.
            os.chmod(directory, 0o755)
            _cached = build_zipapp(Path(directory, f"rlmx-worker-{worker_digest()}.pyz"))
        return _cached
