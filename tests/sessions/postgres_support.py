"""A real PostgreSQL server for the session tests: a private cluster made by ``initdb``
in a temp dir, listening on 127.0.0.1 on a free port (its Unix socket in the temp dir),
trust auth for local connections, torn down at the end of the test session.

As root (initdb refuses to run as root) the cluster is made and run as ``nobody``.
Each test gets a fresh database (``pg_url``). Without PostgreSQL's server binaries, or
without psycopg, the PostgreSQL tests are skipped with how to install them.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

INSTALL = (
    "PostgreSQL's server binaries are not installed (apt-get install postgresql, or put "
    "initdb/postgres on PATH, or set RLM_TEST_PG_BINDIR)"
)
NEEDED = ("initdb", "postgres")


def find_bindir() -> Path | None:
    """Where ``initdb`` and ``postgres`` are: $RLM_TEST_PG_BINDIR, ``pg_config
    --bindir``, the newest /usr/lib/postgresql/*/bin, or PATH."""
    candidates: list[str] = []
    if os.environ.get("RLM_TEST_PG_BINDIR"):
        candidates.append(os.environ["RLM_TEST_PG_BINDIR"])
    if shutil.which("pg_config"):
        try:
            out = subprocess.run(
                ["pg_config", "--bindir"], capture_output=True, text=True, timeout=10
            )
            candidates.append(out.stdout.strip())
        except (OSError, subprocess.SubprocessError):
            pass

    def version(path: str) -> tuple[int, ...]:
        name = Path(path).parent.name
        return tuple(int(p) for p in name.split(".") if p.isdigit()) or (0,)

    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True)
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(str(Path(initdb).resolve().parent))
    for candidate in candidates:
        if candidate and all((Path(candidate) / n).is_file() for n in NEEDED):
            return Path(candidate)
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Cluster:
    """One running PostgreSQL server in ``base``."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.base = Path(tempfile.mkdtemp(prefix="rlmx-pg-"))
        self.data = self.base / "data"
        self.sockets = self.base / "sock"
        self.log = self.base / "server.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.user: tuple[int, int] | None = None  # (uid, gid) to run the server as
        if os.geteuid() == 0:  # initdb and postgres refuse root: run them as nobody
            try:
                entry = pwd.getpwnam("nobody")
                self.user = (entry.pw_uid, entry.pw_gid)
            except KeyError:
                self.user = (65534, 65534)
        self.sockets.mkdir()
        if self.user is not None:
            for path in (self.base, self.sockets):
                os.chown(path, *self.user)

    def _run_as(self) -> dict[str, Any]:
        if self.user is None:
            return {}
        return {"user": self.user[0], "group": self.user[1], "extra_groups": []}

    def start(self) -> None:
        env = dict(os.environ, LC_ALL="C", LANG="C")
        env.pop("PGDATA", None)
        init = subprocess.run(
            [str(self.bindir / "initdb"), "-D", str(self.data), "-U", "postgres",
             "--auth=trust", "-E", "UTF8", "--no-sync"],
            capture_output=True, text=True, env=env, cwd=self.base, timeout=120,
            **self._run_as(),
        )  # fmt: skip
        if init.returncode != 0:
            raise RuntimeError(f"initdb failed: {init.stdout}\n{init.stderr}")
        for _ in range(5):  # another process may take the free port first: try another
            self.port = _free_port()
            with open(self.log, "wb") as log:
                self.process = subprocess.Popen(
                    [str(self.bindir / "postgres"), "-D", str(self.data), "-p", str(self.port),
                     "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={self.sockets}",
                     "-c", "fsync=off", "-c", "full_page_writes=off", "-c", "max_connections=200",
                     "-c", "shared_buffers=32MB"],
                    stdout=log, stderr=subprocess.STDOUT, env=env, cwd=self.base,
                    start_new_session=True, **self._run_as(),
                )  # fmt: skip
            if self._wait_ready():
                return
            self.stop()
        raise RuntimeError(f"PostgreSQL did not start: {self.log.read_text()[-3000:]}")

    def _wait_ready(self, timeout: float = 60) -> bool:
        import psycopg

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                return False
            try:
                psycopg.connect(self.admin_url, connect_timeout=2).close()
                return True
            except psycopg.OperationalError:
                time.sleep(0.1)
        return False

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def admin(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(sql)

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGINT)  # fast shutdown
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)


_counter = iter(range(1, 1_000_000))


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Cluster]:
    try:
        import psycopg  # noqa: F401
    except ImportError:
        pytest.skip("psycopg is not installed: pip install 'rlmx[postgres]'")
    bindir = find_bindir()
    if bindir is None:
        pytest.skip(INSTALL)
    cluster = Cluster(bindir)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture
def pg_url(pg_cluster: Cluster) -> Iterator[str]:
    """A fresh, empty database on the test cluster, dropped after the test."""
    name = f"t{os.getpid()}_{next(_counter)}"
    pg_cluster.admin(f"CREATE DATABASE {name}")
    yield pg_cluster.url(name)
    pg_cluster.admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
