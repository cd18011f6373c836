"""Public-domain prose for haystacks, and the Python standard library's own source.

The haystack text is, in order of preference: the file the caller names; the sample
``examples/data/alice_in_wonderland.txt`` of an rlmx checkout (Lewis Carroll, 1865,
from Project Gutenberg); else the documentation strings of the standard library's
modules (read with ``ast``, nothing imported), so an installed rlmx still has prose.
``corpus_identity`` names the source and hashes it, so a result generated from one
text is never taken for one generated from another.
"""

from __future__ import annotations

import ast
import hashlib
import sys
import sysconfig
import threading
from functools import lru_cache
from pathlib import Path

SAMPLE_TEXT = Path(__file__).resolve().parents[3] / "examples" / "data" / "alice_in_wonderland.txt"
STDLIB_DOCS = "stdlib-docstrings"
_SKIP_DIRS = {
    "test",
    "tests",
    "idlelib",
    "lib2to3",
    "tkinter",
    "turtledemo",
    "ensurepip",
    "site-packages",
    "dist-packages",
    "__pycache__",
    "encodings",
    "pydoc_data",
    "venv",
}


def stdlib_dir() -> Path:
    """The directory of the running interpreter's standard library sources."""
    return Path(sysconfig.get_paths()["stdlib"])


_lock = threading.RLock()  # concurrent first calls read the library once, not N times
# CPython 3.11's ast.parse is not safe in concurrent threads ("AST constructor recursion
# depth mismatch"): every parse in rlm.evals holds AST_LOCK (``parse`` does).
AST_LOCK = threading.Lock()


def parse(source: str) -> ast.Module:
    """``ast.parse``, one thread at a time."""
    with AST_LOCK:
        return ast.parse(source)


def stdlib_sources() -> tuple[tuple[str, str], ...]:
    """(relative path, source) of every parseable standard-library ``.py`` file, sorted
    by path; tests, IDLE, tkinter, lib2to3 and third-party packages left out."""
    with _lock:
        return _stdlib_sources()


@lru_cache(maxsize=1)
def _stdlib_sources() -> tuple[tuple[str, str], ...]:
    root = stdlib_dir()
    found: list[tuple[str, str]] = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if any(part in _SKIP_DIRS or part.startswith("test") for part in rel.parts[:-1]):
            continue
        if rel.name.startswith("test_") or rel.name == "__main__.py":
            continue
        try:
            source = path.read_text(encoding="utf-8")
            parse(source)
        except (OSError, UnicodeDecodeError, SyntaxError, ValueError):
            continue
        found.append((rel.as_posix(), source))
    if not found:
        raise RuntimeError(f"no standard-library sources found under {root}")
    return tuple(found)


def _stdlib_docstrings() -> str:
    paragraphs: list[str] = []
    for _, source in stdlib_sources():
        tree = parse(source)
        for node in ast.walk(tree):
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                doc = ast.get_docstring(node)
                if doc and len(doc) > 200:
                    paragraphs.append(doc.strip())
    return "\n\n".join(paragraphs)


@lru_cache(maxsize=4)
def _load(path: str | None) -> tuple[str, str]:
    if path is not None:
        file = Path(path).expanduser()
        if not file.is_file():
            raise FileNotFoundError(f"haystack text not found: {file}")
        return file.name, file.read_text(encoding="utf-8")
    if SAMPLE_TEXT.is_file():
        return SAMPLE_TEXT.name, SAMPLE_TEXT.read_text(encoding="utf-8")
    return f"{STDLIB_DOCS}-py{sys.version.split()[0]}", _stdlib_docstrings()


def haystack_text(path: str | None = None) -> str:
    """The prose haystacks are cut from (see the module docstring)."""
    with _lock:
        return _load(path)[1]


def corpus_identity(path: str | None = None) -> str:
    """``name:sha256-prefix`` of the haystack text."""
    with _lock:
        name, text = _load(path)
    return f"{name}:{hashlib.sha256(text.encode('utf-8')).hexdigest()[:12]}"


def paragraphs(text: str) -> list[str]:
    """Non-empty paragraphs (blank-line separated), whitespace inside kept."""
    return [p.strip("\n") for p in text.split("\n\n") if p.strip()]
