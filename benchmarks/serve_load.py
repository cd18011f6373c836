"""Load test for ``rlm serve`` (issue 19): busy clients against real replicas and a fake
upstream, checking that no conversation is silently lost or mixed.

    python benchmarks/serve_load.py --clients 50 --requests 2000
    python benchmarks/serve_load.py --clients 200 --requests 2000 --session-store sqlite
    python benchmarks/serve_load.py --replicas 2 --session-store postgresql://... --kill-replica-at 0.5
    python benchmarks/serve_load.py --scenario hung     # slots after clients give up on a hung upstream
    python benchmarks/serve_load.py --table a.json b.json   # one table from saved --json reports

What runs (all real processes on loopback):

1. a fake OpenAI-compatible upstream (``serve_load_upstream.py``) answering in a random
   ``--upstream-delay`` with a ```repl``` block that makes each RLM answer every
   ``context_<i>`` of its REPL, so a reset or mixed session shows in the answer;
   ``--upstream-fault`` adds faults (``html200``, ``429``, ``500:30%``, ``hang``);
2. ``--replicas`` ``rlm serve`` processes (``serve_load_procs.py``) over
   ``--session-store`` (``none``: in memory; ``sqlite``: a fresh file; a path; a
   ``postgresql://`` URL);
3. ``--clients`` concurrent clients (``serve_load_workload.py``) sending ``--requests``
   requests, half one-shot and half ``--turns``-turn conversations with a
   ``session_id``, round-robin over the replicas or by session (``--affinity``);
   ``--kill-replica-at 0.5`` kills one replica (kill -9) after half the requests, and its
   clients retry on another with the same ``session_id`` and ``Idempotency-Key``.

Before the measured load, a warm-up of ``--warmup`` requests of the same mix runs (its
conversations under other session ids), so that "after the warm-up" has touched every
code path the load takes. The report (a table row,
and everything with ``--json FILE``): requests, req/s, p50/p99 latency of the requests
answered 200, status counts per attempt (200, other 4xx, 429, 5xx, connection errors,
client timeouts), sessions reset / mixed / aborted and bad answers, the replicas' CPU
seconds per request (utime + stime from ``/proc`` between the end of the warm-up and
the end of the load, all replicas), each replica's RSS and threads before any request,
after the warm-up and ``--idle-wait`` seconds after the load, the upstream's request
count during the load, and (JSON) the ``rlmx_repl_*`` directories each replica left in
its TMPDIR once stopped. The plan of requests is drawn from ``--seed``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import secrets
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import httpx
from serve_load_procs import (
    REPO,
    HarnessError,
    ProcSample,
    ReplicaProcess,
    UpstreamProcess,
    redact_urls,
    sample,
)
from serve_load_upstream import parse_delay, parse_fault
from serve_load_workload import Driver, Replica, Step, Tally, build_plan, percentile


@dataclass
class LoadOptions:
    clients: int = 50
    requests: int = 2000
    turns: int = 5
    oneshot_share: float = 0.5
    seed: int = 0
    replicas: int = 1
    session_store: str = "none"
    max_sessions: int | None = None
    max_concurrency: int | None = None  # None: the number of clients
    serve_args: list[str] = field(default_factory=list)
    affinity: bool = False
    kill_replica_at: float | None = None
    upstream_delay: str = "0.05:0.2"
    upstream_fault: str = "none"
    client_timeout: float = 120.0
    client_keepalive_expiry: float = 5.0
    retries: int = 3
    retry_after_cap: float = 1.0
    idempotency: bool = True
    end_sessions: bool = False  # DELETE /v1/sessions/{id} after a conversation's last turn
    warmup: int = 100
    idle_wait: float = 5.0
    recover_wait: float = 10.0  # --scenario hung: how long to try for a 200 after recovery
    label: str = ""
    workdir: str | None = None
    keep_workdir: bool = False
    python: str = sys.executable
    rlm_path: str | None = None  # the directory holding the rlm package; None: this repo

    def check(self) -> None:
        if self.clients < 1 or self.requests < 1 or self.replicas < 1 or self.turns < 1:
            raise ValueError("--clients, --requests, --replicas and --turns must be at least 1")
        numbers = (self.retry_after_cap, self.retries, self.warmup, self.idle_wait)
        if self.client_timeout <= 0 or min(numbers) < 0:
            raise ValueError(
                "--client-timeout must be > 0; --retries, --retry-after-cap, --warmup and "
                "--idle-wait >= 0"
            )
        if not 0.0 <= self.oneshot_share <= 1.0:
            raise ValueError("--oneshot-share is between 0 and 1")
        if self.max_sessions is not None and self.max_sessions < 1:
            raise ValueError("--max-sessions must be at least 1")
        if self.max_concurrency is not None and self.max_concurrency < 1:
            raise ValueError("--max-concurrency must be at least 1")
        if self.kill_replica_at is not None:
            if not 0.0 < self.kill_replica_at < 1.0:
                raise ValueError("--kill-replica-at is a fraction of the requests, in (0, 1)")
            if self.replicas < 2:
                raise ValueError("--kill-replica-at needs --replicas 2 or more")
        if self.rlm_path and not (Path(self.rlm_path) / "rlm" / "__init__.py").is_file():
            raise ValueError(f"--rlm-path {self.rlm_path}: no rlm package there")
        parse_delay(self.upstream_delay)
        parse_fault(self.upstream_fault)


def shown_store(spec: str) -> str:
    """The store spec without a password (``postgresql://user:***@host/db``)."""
    return redact_urls(spec)


def replica_args(opts: LoadOptions, workdir: Path) -> list[str]:
    args = ["--max-concurrency", str(opts.max_concurrency or opts.clients)]
    if opts.max_sessions is not None:
        args += ["--max-sessions", str(opts.max_sessions)]
    store = opts.session_store
    if store == "sqlite":
        store = str(workdir / "sessions.db")
    if store != "none":
        args += ["--session-store", store]
    return args + list(opts.serve_args)


class Harness:
    """The processes of one run; ``close()`` stops them and removes the work directory."""

    def __init__(self, opts: LoadOptions, fault: str | None = None) -> None:
        self.opts = opts
        self.token = secrets.token_urlsafe(18)
        self.own_workdir = opts.workdir is None
        self.workdir = Path(opts.workdir or tempfile.mkdtemp(prefix="rlm-serve-load-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.replicas: list[ReplicaProcess] = []
        self.upstream: UpstreamProcess | None = None
        try:
            self.upstream = UpstreamProcess(self.workdir, opts.python, opts.upstream_delay,
                                            fault or opts.upstream_fault, opts.seed)  # fmt: skip
            args = replica_args(opts, self.workdir)
            rlm_path = Path(opts.rlm_path).resolve() if opts.rlm_path else REPO
            for i in range(opts.replicas):
                self.replicas.append(ReplicaProcess(i, self.workdir, opts.python,
                                                    self.upstream.url, self.token, args,
                                                    rlm_path))  # fmt: skip
            for replica in self.replicas:
                replica.wait_ready()
        except BaseException:
            self.close()
            raise

    def driver(self, **kwargs: Any) -> Driver:
        targets = [Replica(r.index, r.url, r.alive) for r in self.replicas]
        opts = self.opts
        options: dict[str, Any] = {
            "timeout": opts.client_timeout,
            "keepalive_expiry": opts.client_keepalive_expiry,
            "retries": opts.retries,
            "retry_after_cap": opts.retry_after_cap,
            "affinity": opts.affinity,
            "idempotency": opts.idempotency,
            "end_sessions": opts.end_sessions,
            **kwargs,
        }
        return Driver(targets, self.token, **options)

    def samples(self) -> list[ProcSample | None]:
        return [r.sample() if r.alive() else r.last for r in self.replicas]

    def stop_replicas(self) -> None:
        for replica in self.replicas:
            replica.stop()

    def close(self) -> None:
        self.stop_replicas()
        if self.upstream is not None:
            self.upstream.stop()
        if self.own_workdir and not self.opts.keep_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)


def run_load(opts: LoadOptions) -> dict[str, Any]:
    """One load run; the report as a dict (see the module docstring)."""
    opts.check()
    started = time.time()
    loadavg = [round(x, 2) for x in os.getloadavg()]
    harness = Harness(opts)
    try:
        report = _load(harness, opts, started)
        report["loadavg_start"] = loadavg
        harness.stop_replicas()
        report["leftover_repl_dirs"] = [r.leftover_repl_dirs() for r in harness.replicas]
        return report
    finally:
        harness.close()


@dataclass
class _Measured:
    """What one load run measured, before it is shaped into the report."""

    tally: Tally
    wall: float
    stages: dict[str, list[ProcSample | None]]  # before, warm, end, idle: one per replica
    metrics: list[dict[str, float]]
    upstream_stats: dict[str, Any]
    upstream_load: int  # upstream requests during the measured load
    upstream_cpu: float | None
    killed: dict[str, Any]
    warm_tally: Tally | None
    harness_cpu: float


def _load(harness: Harness, opts: LoadOptions, started: float) -> dict[str, Any]:
    assert harness.upstream is not None
    run_id = f"r{opts.seed}x{secrets.token_hex(3)}"
    stages = {"before": harness.samples()}
    warm_tally = None
    if opts.warmup:
        warm_plan = build_plan(opts.warmup, opts.clients, turns=opts.turns,
                               oneshot_share=opts.oneshot_share, seed=opts.seed + 1,
                               run_id=f"{run_id}w")  # fmt: skip
        warm_tally = asyncio.run(harness.driver().run(warm_plan))
    stages["warm"] = harness.samples()
    upstream_before = harness.upstream.stats()["requests"]
    plan = build_plan(opts.requests, opts.clients, turns=opts.turns,
                      oneshot_share=opts.oneshot_share, seed=opts.seed, run_id=run_id)  # fmt: skip
    killed: dict[str, Any] = {}
    kill_after = math.ceil((opts.kill_replica_at or 0) * opts.requests)

    def on_completed(completed: int) -> None:
        if opts.kill_replica_at is not None and not killed and completed >= kill_after:
            victim = harness.replicas[-1]
            victim.kill()
            killed.update(replica=victim.index, after_requests=completed,
                          at_s=round(time.perf_counter() - t0, 2))  # fmt: skip

    driver = harness.driver(on_completed=on_completed)
    harness_cpu0 = time.process_time()
    t0 = time.perf_counter()
    tally = asyncio.run(driver.run(plan))
    wall = time.perf_counter() - t0
    harness_cpu = time.process_time() - harness_cpu0
    stages["end"] = harness.samples()
    upstream_stats = harness.upstream.stats()
    time.sleep(opts.idle_wait)
    stages["idle"] = harness.samples()
    upstream_sample = sample(harness.upstream.proc.pid)
    measured = _Measured(
        tally=tally,
        wall=wall,
        stages=stages,
        metrics=[r.metrics(harness.token) for r in harness.replicas],
        upstream_stats=upstream_stats,
        upstream_load=upstream_stats["requests"] - upstream_before,
        upstream_cpu=upstream_sample.cpu_s if upstream_sample else None,
        killed=killed,
        warm_tally=warm_tally,
        harness_cpu=harness_cpu,
    )
    return _report(opts, harness, measured, started)


def _report(
    opts: LoadOptions, harness: Harness, measured: _Measured, started: float
) -> dict[str, Any]:
    tally, stages, warm_tally = measured.tally, measured.stages, measured.warm_tally
    warm, end = stages["warm"], stages["end"]
    cpu = sum(e.cpu_s - w.cpu_s for w, e in zip(warm, end, strict=True) if w and e)
    sessions = tally.session_counts()
    verdicts = tally.verdicts
    p50, p99 = percentile(tally.latencies, 0.5), percentile(tally.latencies, 0.99)
    replicas = []
    for i, replica in enumerate(harness.replicas):
        replicas.append({
            "index": replica.index,
            "killed": replica.killed,
            **{k: _as_dict(v[i]) for k, v in stages.items()},
            "metrics": measured.metrics[i],
            "log_tail": replica.log_tail(3) if replica.killed or replica.proc.poll() else [],
        })  # fmt: skip
    return {
        "label": opts.label,
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "config": {
            "clients": opts.clients,
            "requests": opts.requests,
            "turns": opts.turns,
            "oneshot_share": opts.oneshot_share,
            "seed": opts.seed,
            "replicas": opts.replicas,
            "session_store": shown_store(opts.session_store),
            "max_sessions": opts.max_sessions,
            "max_concurrency": opts.max_concurrency or opts.clients,
            "serve_args": opts.serve_args,
            "affinity": opts.affinity,
            "kill_replica_at": opts.kill_replica_at,
            "upstream_delay": opts.upstream_delay,
            "upstream_fault": opts.upstream_fault,
            "client_timeout": opts.client_timeout,
            "client_keepalive_expiry": opts.client_keepalive_expiry,
            "retries": opts.retries,
            "retry_after_cap": opts.retry_after_cap,
            "idempotency": opts.idempotency,
            "end_sessions": opts.end_sessions,
            "warmup": opts.warmup,
            "idle_wait": opts.idle_wait,
            "rlm_path": opts.rlm_path,
        },
        "requests": tally.sent,
        "wall_s": round(measured.wall, 2),
        "req_per_s": round(tally.completed / measured.wall, 1) if measured.wall > 0 else None,
        "p50_ms": None if p50 is None else round(p50 * 1000, 1),
        "p99_ms": None if p99 is None else round(p99 * 1000, 1),
        "statuses": dict(tally.statuses),
        "details": dict(tally.details),
        "answered": len(tally.latencies),
        "failed": tally.failed,
        "skipped_turns": tally.skipped,
        "retried": tally.retried,
        "ended": tally.ended,
        "sessions": sessions,
        "verdicts": dict(verdicts),
        "reset": sessions["reset"],
        "mixed": sessions["mixed"] + verdicts["oneshot_mixed"],
        "bad": verdicts["turn_bad"] + verdicts["oneshot_bad"],
        "aborted": sessions["aborted"],
        "examples": tally.examples,
        "server_cpu_ms_per_request": round(cpu / tally.completed * 1000, 2)
        if tally.completed
        else None,
        "server_cpu_s": round(cpu, 2),
        "replicas": replicas,
        "killed": measured.killed or None,
        "upstream": {
            "requests_during_load": measured.upstream_load,
            **measured.upstream_stats,
            "cpu_s": None if measured.upstream_cpu is None else round(measured.upstream_cpu, 2),
        },
        "harness_cpu_s": round(measured.harness_cpu, 2),
        "loadavg_end": [round(x, 2) for x in os.getloadavg()],
        "workdir": str(harness.workdir) if opts.keep_workdir or opts.workdir else None,
        "warmup": None
        if warm_tally is None
        else {
            "requests": warm_tally.sent,
            "statuses": dict(warm_tally.statuses),
            "verdicts": dict(warm_tally.verdicts),
        },
    }


def _as_dict(found: ProcSample | None) -> dict[str, float | int] | None:
    return None if found is None else found.as_dict()


# -- the hung-upstream scenario ------------------------------------------------------------


def run_hung(opts: LoadOptions) -> dict[str, Any]:
    """Clients give up on a hung upstream; after it recovers, is a slot free again?

    ``opts.clients`` clients each send a one-shot with ``opts.client_timeout`` while the
    upstream hangs (every slot of the replica is then taken if ``--max-concurrency``
    equals the number of clients, its default); they time out and close their
    connections. The upstream is then told to answer again, and a new one-shot is sent
    every 0.2 s until one gets a 200 or ``opts.recover_wait`` seconds have passed.
    """
    opts.check()
    harness = Harness(opts, fault="hang")
    try:
        return asyncio.run(_hung(harness, opts))
    finally:
        harness.close()


async def _hung(harness: Harness, opts: LoadOptions) -> dict[str, Any]:
    assert harness.upstream is not None
    upstream = harness.upstream
    plan = [[Step(c, f"c{c}:hung{c}:oneshot")] for c in range(opts.clients)]
    gave_up = await harness.driver(retries=0).run(plan)
    hung_calls = (await asyncio.to_thread(upstream.stats))["outcomes"].get("hang", 0)
    await asyncio.to_thread(upstream.set_fault, "none")
    recovered_at = time.perf_counter()
    after: list[str] = []
    first_200: float | None = None
    url = f"{harness.replicas[0].url}/v1/chat/completions"
    headers = {"Authorization": f"Bearer {harness.token}"}
    async with httpx.AsyncClient(timeout=httpx.Timeout(10.0)) as http:
        n = 0
        while time.perf_counter() - recovered_at < opts.recover_wait:
            body = {"model": "rlm", "messages": [{"role": "user", "content": f"after{n}"}]}
            n += 1
            try:
                response = await http.post(url, json=body, headers=headers)
                after.append(str(response.status_code))
                if response.status_code == 200:
                    first_200 = time.perf_counter() - recovered_at
                    break
            except httpx.HTTPError as exc:
                after.append(type(exc).__name__)
            await asyncio.sleep(0.2)
    await asyncio.sleep(1.0)  # let the server close what it cancelled
    stats = await asyncio.to_thread(upstream.stats)
    return {
        "label": opts.label,
        "scenario": "hung",
        "clients": opts.clients,
        "client_timeout": opts.client_timeout,
        "max_concurrency": opts.max_concurrency or opts.clients,
        "gave_up": gave_up.statuses.get("timeout", 0),
        "gave_up_statuses": dict(gave_up.statuses),
        "hung_upstream_calls": hung_calls,
        "after_recovery": _runs(after),
        "recovered": first_200 is not None,
        "seconds_to_200": None if first_200 is None else round(first_200, 2),
        "upstream_abandoned": stats.get("abandoned", 0),
        "metrics": harness.replicas[0].metrics(harness.token),
    }


def _runs(items: list[str]) -> list[str]:
    """``["429", "429", "200"]`` -> ``["429 x2", "200"]``."""
    out: list[tuple[str, int]] = []
    for item in items:
        if out and out[-1][0] == item:
            out[-1] = (item, out[-1][1] + 1)
        else:
            out.append((item, 1))
    return [item if n == 1 else f"{item} x{n}" for item, n in out]


# -- the table -------------------------------------------------------------------------------

COLUMNS = ("label", "clients", "requests", "replicas", "store", "req/s", "p50 ms", "p99 ms",
           "200", "4xx", "429", "5xx", "conn", "t/o", "reset", "mixed", "bad", "aborted",
           "cpu ms/req", "RSS MB before>warm>idle", "threads before>warm>idle",
           "upstream req")  # fmt: skip


def _stages(report: dict[str, Any], key: str, fmt: str) -> str:
    def one(replica: dict[str, Any]) -> str:
        parts = []
        for stage in ("before", "warm", "idle"):
            if stage == "idle" and replica.get("killed"):
                parts.append("killed")
                continue
            value = (replica.get(stage) or {}).get(key)
            parts.append("-" if value is None else format(value, fmt))
        return ">".join(parts)

    return "; ".join(one(r) for r in report["replicas"])


def row(report: dict[str, Any]) -> list[str]:
    config, statuses = report["config"], report["statuses"]
    store = config["session_store"]
    store = "memory" if store == "none" else store.split("://")[0] if "://" in store else store
    if config.get("max_sessions"):
        store += f" (max {config['max_sessions']})"
    return [
        report.get("label") or "-",
        str(config["clients"]),
        str(report["requests"]),
        str(config["replicas"]) + (" (1 killed)" if report.get("killed") else ""),
        store,
        str(report["req_per_s"]),
        str(report["p50_ms"]),
        str(report["p99_ms"]),
        *(str(statuses.get(k, 0)) for k in ("200", "4xx", "429", "5xx", "conn", "timeout")),
        str(report["reset"]),
        str(report["mixed"]),
        str(report["bad"]),
        str(report["aborted"]),
        str(report["server_cpu_ms_per_request"]),
        _stages(report, "rss_mb", ".0f"),
        _stages(report, "threads", "d"),
        str(report["upstream"]["requests_during_load"]),
    ]


def table(reports: list[dict[str, Any]]) -> str:
    rows = [list(COLUMNS)] + [row(r) for r in reports]
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    lines = [" | ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)) for r in rows]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in lines)


# -- the command -------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, LoadOptions]:
    p = argparse.ArgumentParser(
        prog="serve_load.py",
        description=(__doc__ or "").split("\n\n")[0],
        epilog="Options of rlm serve not listed here: --serve-arg=--session-grace=0 (repeatable).",
    )
    d = LoadOptions()
    p.add_argument("--scenario", choices=("load", "hung"), default="load",
                   help="load (default) or hung: clients give up on a hung upstream, then "
                   "is a slot free once it recovers?")  # fmt: skip
    p.add_argument("--clients", type=int, help=f"concurrent clients (default {d.clients}; "
                   "4 for --scenario hung)")  # fmt: skip
    p.add_argument("--requests", type=int, default=d.requests, help="requests in the measured load")
    p.add_argument("--turns", type=int, default=d.turns, help="turns per conversation")
    p.add_argument("--oneshot-share", type=float, default=d.oneshot_share,
                   help="share of one-shot requests (default 0.5; 1 for one-shots only)")  # fmt: skip
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--replicas", type=int, default=d.replicas)
    p.add_argument("--session-store", default=d.session_store, metavar="none|sqlite|PATH|URL",
                   help="none: in memory (default); sqlite: a fresh file in the work "
                   "directory; a path; or a postgresql:// URL")  # fmt: skip
    p.add_argument("--max-sessions", type=int, help="rlm serve --max-sessions (default: its own)")
    p.add_argument("--max-concurrency", type=int,
                   help="rlm serve --max-concurrency (default: the number of clients)")  # fmt: skip
    p.add_argument("--serve-arg", action="append", default=[], metavar="ARG",
                   help="one more argument for rlm serve, e.g. --serve-arg=--session-grace=0")  # fmt: skip
    p.add_argument("--affinity", action="store_true",
                   help="send a session's turns to one replica (by a hash of its id); "
                   "default: round-robin per request")  # fmt: skip
    p.add_argument("--kill-replica-at", type=float, metavar="FRACTION",
                   help="kill -9 the last replica after this share of the requests")  # fmt: skip
    p.add_argument("--upstream-delay", default=d.upstream_delay, metavar="S|LOW:HIGH",
                   help="the upstream's reply delay in seconds (default 0.05:0.2; 0 to "
                   "measure server CPU)")  # fmt: skip
    p.add_argument("--upstream-fault", default=d.upstream_fault,
                   metavar="none|html200|429|500|hang[:P%]", help="e.g. 500:30%%")  # fmt: skip
    p.add_argument("--client-timeout", type=float,
                   help=f"seconds a client waits for an answer (default {d.client_timeout:g}; "
                   "1 for --scenario hung)")  # fmt: skip
    p.add_argument("--client-keepalive-expiry", type=float, default=d.client_keepalive_expiry,
                   help="seconds a client keeps an idle connection (default 5, httpx's)")  # fmt: skip
    p.add_argument("--retries", type=int, default=d.retries,
                   help="retries after a connection error, 429, 503, or 409/423 with "
                   "Retry-After (default 3)")  # fmt: skip
    p.add_argument("--retry-after-cap", type=float, default=d.retry_after_cap, metavar="S",
                   help="wait at most this long for a Retry-After (default 1; e.g. "
                   "--retries 40 to outwait a killed replica's 30 s lease)")  # fmt: skip
    p.add_argument("--no-idempotency", dest="idempotency", action="store_false",
                   help="do not send Idempotency-Key with turns")  # fmt: skip
    p.add_argument("--end-sessions", action="store_true",
                   help="end each conversation with DELETE /v1/sessions/{id}")  # fmt: skip
    p.add_argument("--warmup", type=int, default=d.warmup,
                   help="one-shot requests before the measured load (default 100)")  # fmt: skip
    p.add_argument("--idle-wait", type=float, default=d.idle_wait,
                   help="seconds after the load before the last RSS sample (default 5)")  # fmt: skip
    p.add_argument("--recover-wait", type=float, default=d.recover_wait,
                   help="--scenario hung: seconds to try for a 200 after recovery")  # fmt: skip
    p.add_argument("--label", default="", help="a name for the table row")
    p.add_argument("--json", metavar="FILE", help="write the whole report as JSON ('-': stdout)")
    p.add_argument("--workdir", help="keep logs and the store here (default: a temp dir, removed)")
    p.add_argument("--keep-workdir", action="store_true")
    p.add_argument("--python", default=sys.executable, help="the interpreter for rlm serve")
    p.add_argument("--rlm-path", metavar="DIR",
                   help="serve the rlm package in DIR (e.g. an older checkout) instead of "
                   "this repo's")  # fmt: skip
    p.add_argument("--table", nargs="+", metavar="JSON",
                   help="print one table from saved --json reports, and run nothing")  # fmt: skip
    args = p.parse_args(argv)
    hung = args.scenario == "hung"
    opts = LoadOptions(
        clients=(4 if hung else d.clients) if args.clients is None else args.clients,
        requests=args.requests, turns=args.turns, oneshot_share=args.oneshot_share,
        seed=args.seed, replicas=args.replicas, session_store=args.session_store,
        max_sessions=args.max_sessions, max_concurrency=args.max_concurrency,
        serve_args=args.serve_arg, affinity=args.affinity, kill_replica_at=args.kill_replica_at,
        upstream_delay=args.upstream_delay, upstream_fault=args.upstream_fault,
        client_timeout=(1.0 if hung else d.client_timeout)
        if args.client_timeout is None
        else args.client_timeout,
        client_keepalive_expiry=args.client_keepalive_expiry, retries=args.retries,
        retry_after_cap=args.retry_after_cap,
        idempotency=args.idempotency, end_sessions=args.end_sessions,
        warmup=args.warmup, idle_wait=args.idle_wait,
        recover_wait=args.recover_wait, label=args.label, workdir=args.workdir,
        keep_workdir=args.keep_workdir, python=args.python, rlm_path=args.rlm_path,
    )  # fmt: skip
    try:
        opts.check()
    except ValueError as exc:
        p.error(str(exc))
    return args, opts


def main(argv: list[str] | None = None) -> int:
    args, opts = parse_args(argv)
    if args.table:
        reports = [json.loads(Path(path).read_text()) for path in args.table]
        print(table([r for r in reports if "replicas" in r]))
        return 0
    try:
        report = run_hung(opts) if args.scenario == "hung" else run_load(opts)
    except HarnessError as exc:
        print(f"serve_load: error: {exc}", file=sys.stderr)
        return 1
    text = json.dumps(report, indent=2, sort_keys=True)
    if args.json == "-":
        print(text)
    else:
        if args.json:
            Path(args.json).write_text(text + "\n")
        if args.scenario == "hung":
            print(text)
        else:
            print(table([report]), flush=True)
            if report["examples"]:
                print("wrong answers (first few):", file=sys.stderr)
                for example in report["examples"][:5]:
                    print(f"  {example}", file=sys.stderr)
    if report.get("workdir"):
        print(f"logs: {report['workdir']}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
