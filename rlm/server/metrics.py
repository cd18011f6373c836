"""The server's counters, rendered as Prometheus text at ``GET /metrics`` (behind the
token).

``Metrics.observe`` is told of every HTTP request as its response ends (by the access
log middleware, ``rlm.server.access_log``): its route, status and duration, and from
its ``RequestNote`` the tokens and cost the run used and what went wrong upstream. The
session gauges and counters come from the session registry (``RegistryStats``) when
the page is rendered. No label holds a client-chosen value: paths outside the known
routes are counted as ``other``.

    rlm_requests_total{route="/v1/chat/completions",status="200"} 12
    rlm_request_seconds_bucket{route="/v1/chat/completions",le="0.5"} 9
    rlm_sessions_live 3
    rlm_sessions_evicted_total 1
    rlm_upstream_errors_total{kind="rate_limited"} 2
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rlm.server.access_log import RequestNote
    from rlm.server.sessions import SessionRegistry

ROUTES = frozenset({"/v1/chat/completions", "/v1/models", "/health", "/metrics"})
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


@dataclass
class _Histogram:
    counts: list[int] = field(default_factory=lambda: [0] * (len(BUCKETS) + 1))
    total: float = 0.0

    def add(self, seconds: float) -> None:
        for i, bound in enumerate(BUCKETS):
            if seconds <= bound:
                self.counts[i] += 1
                break
        else:
            self.counts[-1] += 1
        self.total += seconds


class Metrics:
    """Thread-safe counters for one server process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: Counter[tuple[str, int]] = Counter()
        self.latency: dict[str, _Histogram] = {}
        self.tokens = 0
        self.cost = 0.0
        self.upstream: Counter[str] = Counter()  # error kind -> count
        self.disconnects = 0  # runs cancelled because their client went away

    def observe(self, path: str, status: int | None, seconds: float, note: RequestNote) -> None:
        route = path if path in ROUTES else "other"
        with self._lock:
            self.requests[(route, status or 0)] += 1
            self.latency.setdefault(route, _Histogram()).add(seconds)
            if note.tokens:
                self.tokens += note.tokens
            if note.cost:
                self.cost += note.cost
            if note.upstream:
                self.upstream[note.upstream] += 1
            if note.disconnected:
                self.disconnects += 1

    def render(self, sessions: SessionRegistry[Any] | None = None) -> str:
        lines: list[str] = []

        def metric(name: str, kind: str, help: str, samples: list[tuple[str, float]]) -> None:
            lines.append(f"# HELP {name} {help}")
            lines.append(f"# TYPE {name} {kind}")
            lines.extend(f"{name}{labels} {_number(value)}" for labels, value in samples)

        with self._lock:
            metric("rlm_requests_total", "counter", "HTTP requests by route and status.",
                   [(f'{{route="{r}",status="{s}"}}', n)
                    for (r, s), n in sorted(self.requests.items())])  # fmt: skip
            lines.append("# HELP rlm_request_seconds Time until the response ended.")
            lines.append("# TYPE rlm_request_seconds histogram")
            for route, hist in sorted(self.latency.items()):
                running = 0
                for bound, count in zip((*BUCKETS, float("inf")), hist.counts, strict=True):
                    running += count
                    le = "+Inf" if bound == float("inf") else _number(bound)
                    lines.append(
                        f'rlm_request_seconds_bucket{{route="{route}",le="{le}"}} {running}'
                    )
                lines.append(f'rlm_request_seconds_sum{{route="{route}"}} {_number(hist.total)}')
                lines.append(f'rlm_request_seconds_count{{route="{route}"}} {running}')
            metric("rlm_tokens_total", "counter", "Model tokens used by completed runs.",
                   [("", self.tokens)])  # fmt: skip
            metric("rlm_cost_usd_total", "counter", "Model cost reported by completed runs.",
                   [("", self.cost)])  # fmt: skip
            metric("rlm_upstream_errors_total", "counter",
                   "Runs that ended in a model provider error, by kind.",
                   [(f'{{kind="{k}"}}', n) for k, n in sorted(self.upstream.items())])  # fmt: skip
            metric("rlm_client_disconnects_total", "counter",
                   "Runs cancelled because their client went away.",
                   [("", self.disconnects)])  # fmt: skip
        if sessions is not None:
            stats = sessions.stats
            metric("rlm_sessions_live", "gauge", "Sessions held in memory.",
                   [("", len(sessions))])  # fmt: skip
            for name, value, help in (
                ("created", stats.created, "Sessions opened in memory."),
                ("evicted", stats.evicted, "Sessions evicted to make room."),
                ("expired", stats.expired, "Sessions closed after their idle TTL."),
                ("rehydrated", stats.rehydrated, "Sessions rebuilt from the store."),
                ("refused", stats.refused, "New sessions refused (429): no place."),
                ("gone", stats.gone, "Requests for a session that was let go (410)."),
            ):
                metric(f"rlm_sessions_{name}_total", "counter", help, [("", value)])
        return "\n".join(lines) + "\n"


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))
