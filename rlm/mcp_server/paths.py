"""Reading ``context_path`` for MCP clients: confined to allowed roots, regular files only,
and capped in size.

An MCP client is another program (an agent) steering this server, so a path it names
must not reach what the server's user can read elsewhere: ``/proc/self/environ`` holds
the server's API keys, ``~/.ssh`` its keys, and ``/dev/zero`` or a FIFO would grow or
hang the server. Every path (a file, a directory or a glob) is resolved with its
symlinks first and must then lie under one of the roots (default: the working
directory the server started in); only regular files are read, and at most
``max_bytes`` in total. A file is opened component by component from its root with
``O_NOFOLLOW``, so a symlink swapped in after the check is refused rather than followed.
"""

from __future__ import annotations

import glob
import os
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

ROOTS_ENV = "RLM_MCP_CONTEXT_ROOTS"
MAX_MB_ENV = "RLM_MCP_MAX_CONTEXT_MB"
DEFAULT_MAX_CONTEXT_MB = 100.0
MAX_FILES = 10_000  # files a directory or glob may name
MIB = 1024 * 1024
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_NOCTTY = getattr(os, "O_NOCTTY", 0)


class ContextPathError(ValueError):
    """A ``context_path`` the server refuses or cannot read; the message is for the client."""


class NotRegularFileError(ContextPathError):
    """The path is a device, FIFO, socket or directory where a file was expected."""


@dataclass(frozen=True)
class ContextPolicy:
    """Where ``context_path`` may read: ``roots`` (resolved directories) and at most
    ``max_bytes`` per request."""

    roots: tuple[str, ...]
    max_bytes: int

    @classmethod
    def create(
        cls, roots: Sequence[str | os.PathLike[str]] = (), max_mb: float | None = None
    ) -> ContextPolicy:
        """A policy for ``roots`` (default: the working directory) and ``max_mb``
        (default ``DEFAULT_MAX_CONTEXT_MB``). Raises ``ValueError`` for a root that is
        not a directory or a size that is not positive."""
        resolved: list[str] = []
        for root in roots or (os.getcwd(),):
            real = os.path.realpath(os.path.expanduser(os.fspath(root)))
            if not os.path.isdir(real):
                raise ValueError(f"context root {os.fspath(root)}: not a directory")
            resolved.append(real)
        mb = DEFAULT_MAX_CONTEXT_MB if max_mb is None else max_mb
        if mb <= 0:
            raise ValueError("the context size limit must be greater than 0")
        return cls(tuple(dict.fromkeys(resolved)), int(mb * MIB))

    @property
    def max_mb(self) -> float:
        return self.max_bytes / MIB

    def root_of(self, real: str) -> str | None:
        """The root ``real`` (a resolved path) lies under, if any."""
        for root in self.roots:
            if real == root or real.startswith(root.rstrip(os.sep) + os.sep):
                return root
        return None


class _Reader:
    """One request's reads: checks each file and counts bytes against the cap."""

    def __init__(self, spec: str, policy: ContextPolicy) -> None:
        self.spec, self.policy = spec, policy
        self.left = policy.max_bytes

    def fail(self, reason: str) -> ContextPathError:
        return ContextPathError(f"context_path {self.spec}: {reason}")

    def outside(self, what: str = "") -> ContextPathError:
        roots = ", ".join(self.policy.roots)
        return self.fail(
            f"{what}outside the allowed roots ({roots}); the server reads only files under "
            f"them. Start it with --context-root DIR or set {ROOTS_ENV} to allow more."
        )

    def confined(self, path: str, member: str = "") -> tuple[str, str]:
        """``(root, resolved path)``, or the outside-the-roots error."""
        real = os.path.realpath(path)
        root = self.policy.root_of(real)
        if root is None:
            raise self.outside(f"{member} resolves " if member else "")
        return root, real

    def read(self, path: str, member: str = "") -> bytes:
        root, real = self.confined(path, member)
        name = member or self.spec
        try:
            fd = _open_beneath(root, real)
        except _NotRegular:
            raise NotRegularFileError(
                f"context_path {name}: not a regular file (devices, FIFOs and sockets are "
                "never read)"
            ) from None
        except OSError as exc:
            raise ContextPathError(f"context_path {name}: {exc.strerror or exc}") from None
        with os.fdopen(fd, "rb") as f:
            data = f.read(self.left + 1)
        if len(data) > self.left:
            raise self.fail(
                f"larger than the {self.policy.max_mb:g} MB limit on what one request may "
                f"read (start the server with --max-context-mb or set {MAX_MB_ENV})"
            )
        self.left -= len(data)
        return data

    def text(self, path: str) -> str:
        try:
            return self.read(path).decode("utf-8")
        except UnicodeDecodeError:
            raise self.fail("not a UTF-8 text file") from None

    def listed(self, paths: Iterator[str], rel: str) -> list[str]:
        """``paths`` sorted; stops at the first one outside the roots (a glob's ``**``
        follows symlinked directories) or past ``MAX_FILES``."""
        found: list[str] = []
        for path in paths:
            if len(found) == MAX_FILES:
                raise self.fail(f"names more than {MAX_FILES:,} files")
            self.confined(path, os.path.relpath(path, rel))
            found.append(path)
        return sorted(found)

    def texts(self, paths: list[str], rel: str) -> list[str]:
        """Each UTF-8 regular file's text in order; binaries, FIFOs etc. are skipped."""
        texts: list[str] = []
        for path in paths:
            try:
                texts.append(self.read(path, os.path.relpath(path, rel)).decode("utf-8"))
            except (UnicodeDecodeError, NotRegularFileError):
                continue  # like a binary file, a FIFO in a directory is not an error
        if not texts:
            raise self.fail("no readable UTF-8 text files")
        return texts


class _NotRegular(Exception):
    pass


def _open_beneath(root: str, real: str) -> int:
    """A read-only fd for ``real`` (a resolved path under ``root``), opened one component
    at a time without following symlinks; ``_NotRegular`` for anything but a file."""
    parts = [p for p in os.path.relpath(real, root).split(os.sep) if p not in ("", ".")]
    if not parts:
        raise _NotRegular(real)
    if os.open not in os.supports_dir_fd or not _NOFOLLOW:  # no openat: check, then open
        if not stat.S_ISREG(os.lstat(real).st_mode):
            raise _NotRegular(real)
        fd = os.open(real, os.O_RDONLY | _NONBLOCK | _NOCTTY)
        return _regular(fd, None)
    dirfd = os.open(root, os.O_RDONLY | _DIRECTORY)
    try:
        for part in parts[:-1]:
            nxt = os.open(part, os.O_RDONLY | _DIRECTORY | _NOFOLLOW, dir_fd=dirfd)
            os.close(dirfd)
            dirfd = nxt
        before = os.stat(parts[-1], dir_fd=dirfd, follow_symlinks=False)
        if not stat.S_ISREG(before.st_mode):
            raise _NotRegular(real)
        # O_NONBLOCK: should a FIFO be swapped in after the check, opening it cannot hang.
        flags = os.O_RDONLY | _NOFOLLOW | _NONBLOCK | _NOCTTY
        return _regular(os.open(parts[-1], flags, dir_fd=dirfd), before)
    finally:
        os.close(dirfd)


def _regular(fd: int, before: os.stat_result | None) -> int:
    after = os.fstat(fd)
    same = before is None or (after.st_dev, after.st_ino) == (before.st_dev, before.st_ino)
    if not stat.S_ISREG(after.st_mode) or not same:
        os.close(fd)
        raise _NotRegular(str(fd))
    if _NONBLOCK:
        os.set_blocking(fd, True)
    return fd


def _walk(directory: str) -> Iterator[str]:
    for root, dirs, files in os.walk(directory):  # never descends into symlinked dirs
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))  # .git, .venv, caches
        yield from (os.path.join(root, f) for f in files if not f.startswith("."))


def _glob_base(pattern: str) -> str:
    """The literal directory a glob starts from (its components before the first magic)."""
    head: list[str] = []
    for part in Path(pattern).parts:
        if glob.has_magic(part):
            break
        head.append(part)
    return os.path.join(*head) if head else os.curdir


def read_context_path(spec: str, policy: ContextPolicy) -> str | list[str]:
    """A file's text, or a list of texts for a directory or glob (sorted by path, hidden
    entries skipped), read under ``policy``. Raises ``ContextPathError``."""
    reader = _Reader(spec, policy)
    if not spec:
        raise reader.fail("empty path")
    path = os.path.expanduser(spec)
    if glob.has_magic(path):
        base = _glob_base(path)
        reader.confined(base)  # never walk a tree outside the roots
        matches = (m for m in glob.iglob(path, recursive=True) if not os.path.isdir(m))
        found = reader.listed(matches, base)
        if not found:
            raise reader.fail("no files match")
        return reader.texts(found, base)
    _, real = reader.confined(path)
    if os.path.isdir(real):
        return reader.texts(reader.listed(_walk(path), path), path)
    if not os.path.lexists(path):
        raise reader.fail("no such file or directory")
    return reader.text(path)


__all__ = [
    "DEFAULT_MAX_CONTEXT_MB",
    "MAX_MB_ENV",
    "ROOTS_ENV",
    "ContextPathError",
    "ContextPolicy",
    "NotRegularFileError",
    "read_context_path",
]
