"""The processes of ``benchmarks/serve_load.py``: the fake upstream
(``serve_load_upstream.py``) and the ``rlm serve`` replicas, each a real subprocess on
loopback; their CPU time, RSS and thread count read from ``/proc/<pid>``.

Replicas run ``python -m rlm serve --port 0`` from this repo (or the ``rlm`` package in
``rlm_path``, to measure another checkout) with a clean environment:
no ``RLM_*`` or ``OPENAI_*`` variables of the caller, ``HOME`` in the work directory (so
no user ``rlm.toml`` applies), the bearer token in ``RLM_SERVER_TOKEN`` and a dummy
upstream key in ``RLM_LOAD_UPSTREAM_KEY`` (``--api-key-env``), and ``TMPDIR`` in its
own folder (so the REPL directories a replica leaves behind can be counted). Each one's
stderr (its banner and one access-log line per request) goes to ``replica<i>.log`` in
the work directory.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
UPSTREAM_SCRIPT = Path(__file__).resolve().with_name("serve_load_upstream.py")
KEY_ENV = "RLM_LOAD_UPSTREAM_KEY"
_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")
_BANNER = re.compile(r"rlm: serving (http://\S+)/v1 ")
_UPSTREAM_READY = re.compile(r"upstream listening on (http://\S+)/v1")
_PASSWORD = re.compile(r"(://[^:/@\s]*:)[^@\s]*@")


def redact_urls(text: str) -> str:
    """``scheme://user:password@host`` -> ``scheme://user:***@host`` (store URLs)."""
    return _PASSWORD.sub(r"\1***@", text)


class HarnessError(RuntimeError):
    """A process of the harness could not be started or reached."""


@dataclass(frozen=True)
class ProcSample:
    cpu_s: float  # user + system time of the process so far
    rss_mb: float
    threads: int

    def as_dict(self) -> dict[str, float | int]:
        return {"cpu_s": round(self.cpu_s, 3), "rss_mb": round(self.rss_mb, 1),
                "threads": self.threads}  # fmt: skip


def sample(pid: int) -> ProcSample | None:
    """The process's CPU seconds, RSS and threads, from /proc; None once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()  # after "pid (comm)": state is fields[0]
    if fields[0] == "Z":
        return None
    cpu = (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime
    rss_pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    threads = 0
    for line in status.splitlines():
        if line.startswith("Threads:"):
            threads = int(line.split()[1])
    return ProcSample(cpu, rss_pages * _PAGE / 2**20, threads)


def clean_env(home: Path, rlm_path: Path = REPO, **extra: str) -> dict[str, str]:
    """The caller's environment without ``RLM_*``/``OPENAI_*``, ``HOME`` set to ``home``
    and ``rlm_path`` (the directory holding the ``rlm`` package) first on the path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RLM_", "OPENAI_"))}
    path = env.get("PYTHONPATH")
    env.update(PYTHONPATH=str(rlm_path) + (os.pathsep + path if path else ""), HOME=str(home))
    env.update(extra)
    return env


def _wait_for_line(
    path: Path, pattern: re.Pattern[str], proc: subprocess.Popen[bytes], timeout: float, what: str
) -> str:
    deadline = time.monotonic() + timeout
    while True:
        text = path.read_text(errors="replace") if path.exists() else ""
        match = pattern.search(text)
        if match:
            return match.group(1)
        if proc.poll() is not None or time.monotonic() > deadline:
            tail = redact_urls("\n".join(text.splitlines()[-15:]))
            state = f"exited with {proc.returncode}" if proc.poll() is not None else "is silent"
            raise HarnessError(f"{what} {state}; its output ends:\n{tail}")
        time.sleep(0.05)


def http_json(
    url: str, *, method: str = "GET", body: Any = None, token: str | None = None,
    timeout: float = 10.0,
) -> tuple[int, Any]:  # fmt: skip
    """One small request with the stdlib (status, parsed JSON or text)."""
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    text = raw.decode(errors="replace")
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text


def _stop(proc: subprocess.Popen[bytes], grace: float) -> int | None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    return proc.returncode


class UpstreamProcess:
    """``serve_load_upstream.py`` in a subprocess."""

    def __init__(self, workdir: Path, python: str, delay: str, fault: str, seed: int) -> None:
        self.log = workdir / "upstream.log"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [python, str(UPSTREAM_SCRIPT), "--port", "0", "--delay", delay,
                 "--fault", fault, "--seed", str(seed)],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                env=clean_env(workdir),
            )  # fmt: skip
        try:
            self.base = _wait_for_line(self.log, _UPSTREAM_READY, self.proc, 30, "the upstream")
        except BaseException:
            self.stop()
            raise
        self.url = f"{self.base}/v1"

    def stats(self) -> dict[str, Any]:
        status, body = http_json(f"{self.base}/_load/stats")
        if status != 200 or not isinstance(body, dict):
            raise HarnessError(f"the upstream's stats answered {status}")
        return body

    def set_fault(self, fault: str) -> None:
        status, body = http_json(f"{self.base}/_load/fault", method="POST", body={"fault": fault})
        if status != 200:
            raise HarnessError(f"the upstream refused fault {fault!r}: {body}")

    def stop(self) -> None:
        _stop(self.proc, 5)


class ReplicaProcess:
    """One ``rlm serve`` in a subprocess, pointed at the fake upstream."""

    def __init__(
        self,
        index: int,
        workdir: Path,
        python: str,
        upstream_url: str,
        token: str,
        args: Sequence[str],
        rlm_path: Path = REPO,
    ) -> None:
        self.index = index
        self.killed = False
        self.last: ProcSample | None = None  # the last sample taken while it lived
        home = workdir / f"replica{index}"
        self.tmp = home / "tmp"  # its TMPDIR: the REPLs' rlmx_repl_* directories land here
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.log = workdir / f"replica{index}.log"
        command = [python, "-m", "rlm", "serve", "--host", "127.0.0.1", "--port", "0",
                   "--base-url", upstream_url, "--model", "fake", "--api-key-env", KEY_ENV,
                   *args]  # fmt: skip
        env = clean_env(home, rlm_path, RLM_SERVER_TOKEN=token, TMPDIR=str(self.tmp),
                        **{KEY_ENV: "not-a-real-key"})  # fmt: skip
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(command, stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=out, cwd=home,
                                         env=env)  # fmt: skip
        self.url = ""

    def wait_ready(self, timeout: float = 60.0) -> None:
        what = f"rlm serve (replica {self.index})"
        self.url = _wait_for_line(self.log, _BANNER, self.proc, timeout, what)
        deadline = time.monotonic() + timeout
        while True:  # the banner comes just before uvicorn starts accepting
            try:
                if http_json(f"{self.url}/health", timeout=2)[0] == 200:
                    return
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise HarnessError(f"{what} did not answer /health")
            time.sleep(0.05)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return not self.killed and self.proc.poll() is None

    def sample(self) -> ProcSample | None:
        found = sample(self.pid) if self.alive() else None
        if found is not None:
            self.last = found
        return found

    def kill(self) -> None:
        """kill -9, as a crash would (its last sample is kept)."""
        self.sample()
        self.killed = True
        self.proc.kill()
        self.proc.wait(10)

    def metrics(self, token: str) -> dict[str, float]:
        """A few counters from ``/metrics`` (sessions, disconnects), {} when unavailable."""
        if not self.alive():
            return {}
        try:
            status, text = http_json(f"{self.url}/metrics", token=token)
        except OSError:
            return {}
        if status != 200 or not isinstance(text, str):
            return {}
        found: dict[str, float] = {}
        for line in text.splitlines():
            name, _, value = line.partition(" ")
            if name.startswith(("rlm_sessions_", "rlm_client_disconnects")):
                try:
                    found[name] = float(value)
                except ValueError:
                    continue
        return found

    def stop(self, grace: float = 15.0) -> int | None:
        return _stop(self.proc, grace)

    def leftover_repl_dirs(self) -> int:
        """``rlmx_repl_*`` directories left in its TMPDIR (after it stopped: leaked)."""
        return sum(1 for _ in self.tmp.glob("rlmx_repl_*"))

    def log_tail(self, lines: int = 10) -> list[str]:
        try:
            return redact_urls(self.log.read_text(errors="replace")).splitlines()[-lines:]
        except OSError:
            return []
