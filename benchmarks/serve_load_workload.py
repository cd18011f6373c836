"""The clients of ``benchmarks/serve_load.py``: the plan of requests, the clients that send
them, and the check of every answer.

**The plan** (``build_plan``) is drawn from the seed: ``requests`` requests, a share of
them one-shot (``oneshot_share``, default half) and the rest ``turns``-turn conversations
with a ``session_id``, dealt to ``clients`` clients so each gets about as many requests.
A client runs its conversations one after another, turns in order, with its one-shots
scattered between them.

**The check.** A request's context is ``<client>:<session>:turn<k>`` (a turn) or
``<client>:<id>:oneshot`` (a one-shot); the fake upstream makes the RLM answer every
``context_<i>`` of its REPL joined by `` | `` (``serve_load_upstream.py``). So turn ``k``
of a conversation must answer exactly its own turns ``0..k`` in order:

- ``reset``: its own turns only, ending with turn ``k``, with earlier ones missing (the
  session started over);
- ``mixed``: a part from another client or session (or the upstream's ``XTALK:``);
- ``bad``: any other answer to a 200 (empty, duplicated turns, not JSON, ...).

A one-shot must answer exactly its own context (``mixed`` or ``bad`` otherwise). A
conversation stops at its first turn that does not get a 200 (after retries): it is
``aborted``, and its later turns are not sent.

**Retries** (``retries`` of them at most). A transport error is retried at once, on
another live replica when there is one; 429 and 503, and 409 and 423 that carry a
``Retry-After`` (a session locked elsewhere), are retried after their ``Retry-After``,
waiting ``retry_after_cap`` seconds at most; a timeout is not retried (the client gave
up). Every attempt is counted in the status counts. Every
attempt of a turn carries ``Idempotency-Key: <session>:<turn>``.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
import zlib
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx
from serve_load_upstream import SEPARATOR  # how the fake upstream joins the contexts

RETRY_AFTER_CAP = 1.0  # default: seconds a client waits at most before a retry
Verdict = Literal["ok", "reset", "mixed", "bad"]


@dataclass(frozen=True)
class Step:
    """One request of the plan."""

    client: int
    context: str
    session_id: str | None = None  # None: a one-shot
    turn: int = 0
    conversation: int = -1  # index into the plan's conversations; -1 for a one-shot
    last: bool = False  # the conversation's last turn

    @property
    def expected(self) -> list[str]:
        if self.session_id is None:
            return [self.context]
        prefix = self.context.rsplit(":", 1)[0]
        return [f"{prefix}:turn{i}" for i in range(self.turn + 1)]

    @property
    def own_prefix(self) -> str:
        return self.context.rsplit(":", 1)[0] + ":"


def build_plan(
    requests: int,
    clients: int,
    *,
    turns: int = 5,
    oneshot_share: float = 0.5,
    seed: int = 0,
    run_id: str = "run",
) -> list[list[Step]]:
    """Each client's list of steps (see the module docstring)."""
    if requests < 1 or clients < 1 or turns < 1 or not 0.0 <= oneshot_share <= 1.0:
        raise ValueError("need requests >= 1, clients >= 1, turns >= 1, 0 <= oneshot share <= 1")
    rng = random.Random(seed)
    conversations = round(requests * (1.0 - oneshot_share)) // turns
    oneshots = requests - conversations * turns
    units = [True] * conversations + [False] * oneshots  # True: a conversation
    rng.shuffle(units)
    load = [0] * clients
    convs: list[list[int]] = [[] for _ in range(clients)]  # conversation numbers
    singles = [0] * clients
    conv_no = 0
    for is_conversation in units:
        cid = min(range(clients), key=lambda c: (load[c], c))
        if is_conversation:
            load[cid] += turns
            convs[cid].append(conv_no)
            conv_no += 1
        else:
            load[cid] += 1
            singles[cid] += 1
    plan: list[list[Step]] = []
    oneshot_no = 0
    for cid in range(clients):
        steps: list[Step] = []
        for conv in convs[cid]:
            sid = f"{run_id}-s{conv}"
            steps += [
                Step(cid, f"c{cid}:{sid}:turn{k}", sid, k, conv, k == turns - 1)
                for k in range(turns)
            ]
        for _ in range(singles[cid]):
            steps.insert(
                rng.randint(0, len(steps)), Step(cid, f"c{cid}:{run_id}-o{oneshot_no}:oneshot")
            )
            oneshot_no += 1
        plan.append(steps)
    return plan


def classify(step: Step, content: str) -> Verdict:
    parts = content.split(SEPARATOR) if content else []
    expected = step.expected
    if parts == expected:
        return "ok"
    own = step.own_prefix
    if any(not p.startswith(own) for p in parts):
        return "mixed"
    if (
        step.session_id is not None
        and parts
        and parts[-1] == expected[-1]
        and len(set(parts)) == len(parts)
        and set(parts) < set(expected)
        and sorted(parts, key=expected.index) == parts
    ):
        return "reset"
    return "bad"


@dataclass
class Replica:
    """Where a client sends requests: one ``rlm serve`` process."""

    index: int
    url: str  # http://host:port
    alive: Callable[[], bool]


@dataclass
class Tally:
    """What the clients saw. Status counts are per HTTP attempt; the rest per request."""

    statuses: Counter[str] = field(default_factory=Counter)  # 200, 4xx, 429, 5xx, conn, timeout
    details: Counter[str] = field(default_factory=Counter)  # "410 session_expired", "ReadError"
    verdicts: Counter[str] = field(default_factory=Counter)  # per answered request
    latencies: list[float] = field(default_factory=list)  # seconds, requests answered 200
    sent: int = 0  # requests (not attempts) sent
    completed: int = 0  # requests finished, however
    failed: int = 0  # requests without a 200 after retries
    skipped: int = 0  # turns not sent because their conversation was aborted
    ended: int = 0  # conversations ended with DELETE /v1/sessions/{id} (answered 204)
    retried: int = 0
    sessions: dict[int, set[str]] = field(default_factory=dict)  # conversation -> verdicts
    examples: list[dict[str, Any]] = field(default_factory=list)  # a few wrong answers

    def session_counts(self) -> dict[str, int]:
        counts = {"sessions": len(self.sessions), "ok": 0, "reset": 0, "mixed": 0,
                  "bad": 0, "aborted": 0}  # fmt: skip
        for seen in self.sessions.values():
            for kind in ("reset", "mixed", "bad", "aborted"):
                if kind in seen:
                    counts[kind] += 1
            if seen == {"ok"}:
                counts["ok"] += 1
        return counts


class Driver:
    """Sends a plan's steps to the replicas and tallies what comes back."""

    def __init__(
        self,
        replicas: Sequence[Replica],
        token: str,
        *,
        timeout: float = 120.0,
        keepalive_expiry: float = 5.0,
        retries: int = 3,
        retry_after_cap: float = RETRY_AFTER_CAP,
        affinity: bool = False,
        idempotency: bool = True,
        end_sessions: bool = False,
        on_completed: Callable[[int], None] | None = None,
    ) -> None:
        self.replicas = list(replicas)
        self.token = token
        self.timeout = timeout
        self.keepalive_expiry = keepalive_expiry
        self.retries = retries
        self.retry_after_cap = retry_after_cap
        self.affinity = affinity
        self.idempotency = idempotency
        self.end_sessions = end_sessions
        self.on_completed = on_completed
        self.tally = Tally()
        self._next = 0

    def _live(self) -> list[Replica]:
        live = [r for r in self.replicas if r.alive()]
        return live or self.replicas

    def _pick(self, step: Step, avoid: Replica | None = None) -> Replica:
        live = self._live()
        if avoid is not None and len(live) > 1:
            live = [r for r in live if r is not avoid] or live
        if self.affinity and step.session_id is not None:
            return live[zlib.crc32(step.session_id.encode()) % len(live)]
        self._next += 1
        return live[self._next % len(live)]

    async def run(self, plan: Sequence[Sequence[Step]]) -> Tally:
        await asyncio.gather(*(self._client(steps) for steps in plan if steps))
        return self.tally

    async def _client(self, steps: Sequence[Step]) -> None:
        n = len(self.replicas)
        limits = httpx.Limits(max_connections=n, max_keepalive_connections=n,
                              keepalive_expiry=self.keepalive_expiry)  # fmt: skip
        timeout = httpx.Timeout(self.timeout, connect=min(self.timeout, 10.0))
        aborted: set[int] = set()
        async with httpx.AsyncClient(limits=limits, timeout=timeout) as http:
            for step in steps:
                if step.conversation in aborted:
                    self.tally.skipped += 1
                    continue
                ok = await self.send(http, step)
                if ok and step.last and self.end_sessions and step.session_id is not None:
                    await self.end(http, step)
                if not ok and step.session_id is not None:
                    aborted.add(step.conversation)
                    self.tally.sessions.setdefault(step.conversation, set()).add("aborted")

    async def end(self, http: httpx.AsyncClient, step: Step) -> None:
        """Tell the replica that answered last that the conversation is over."""
        replica = self._pick(step)
        headers = {"Authorization": f"Bearer {self.token}"}
        try:
            response = await http.delete(f"{replica.url}/v1/sessions/{step.session_id}",
                                         headers=headers)  # fmt: skip
        except httpx.HTTPError as exc:
            self.tally.details[f"end: {type(exc).__name__}"] += 1
            return
        if response.status_code == 204:
            self.tally.ended += 1
        else:
            self.tally.details[f"end: {response.status_code} {_error_code(response)}"] += 1

    async def send(self, http: httpx.AsyncClient, step: Step) -> bool:
        """One request of the plan, with retries; True when it got a 200."""
        tally = self.tally
        tally.sent += 1
        body: dict[str, Any] = {"model": "rlm",
                                "messages": [{"role": "user", "content": step.context}]}  # fmt: skip
        headers = {"Authorization": f"Bearer {self.token}"}
        if step.session_id is not None:
            body["session_id"] = step.session_id
            if self.idempotency:
                headers["Idempotency-Key"] = f"{step.session_id}:{step.turn}"
        replica = self._pick(step)
        started = time.perf_counter()
        response: httpx.Response | None = None
        for attempt in range(self.retries + 1):
            if attempt:
                tally.retried += 1
            try:
                response = await http.post(f"{replica.url}/v1/chat/completions", json=body,
                                           headers=headers)  # fmt: skip
            except httpx.TimeoutException as exc:
                tally.statuses["timeout"] += 1
                tally.details[type(exc).__name__] += 1
                response = None
                break
            except httpx.TransportError as exc:
                tally.statuses["conn"] += 1
                tally.details[type(exc).__name__] += 1
                response = None
                if attempt < self.retries:
                    await asyncio.sleep(0.05)
                    replica = self._pick(step, avoid=replica)
                continue
            status = response.status_code
            tally.statuses[_status_class(status)] += 1
            if status != 200:
                detail = f"{status} {_error_code(response)}"
                has = "retry-after" in response.headers
                if status in (409, 423, 429, 503):
                    detail += " (Retry-After)" if has else " (no Retry-After)"
                tally.details[detail] += 1
                retryable = status in (429, 503) or (status in (409, 423) and has)
                if retryable and attempt < self.retries:
                    await asyncio.sleep(_retry_after(response, self.retry_after_cap))
                    continue
            break
        elapsed = time.perf_counter() - started
        ok = response is not None and response.status_code == 200
        if ok and response is not None:
            tally.latencies.append(elapsed)
            self._check(step, response)
        else:
            tally.failed += 1
        tally.completed += 1
        if self.on_completed is not None:
            self.on_completed(tally.completed)
        return ok

    def _check(self, step: Step, response: httpx.Response) -> None:
        try:
            content = response.json()["choices"][0]["message"]["content"]
            if not isinstance(content, str):
                raise TypeError("content is not a string")
        except (ValueError, KeyError, IndexError, TypeError):
            content = None
        verdict: Verdict = "bad" if content is None else classify(step, content)
        kind = "turn" if step.session_id is not None else "oneshot"
        self.tally.verdicts[f"{kind}_{verdict}"] += 1
        if step.session_id is not None:
            self.tally.sessions.setdefault(step.conversation, set()).add(verdict)
        if verdict != "ok" and len(self.tally.examples) < 10:
            shown = content if content is None or len(content) < 300 else content[:300] + "…"
            self.tally.examples.append({"verdict": verdict, "context": step.context,
                                        "answer": shown})  # fmt: skip


def _status_class(status: int) -> str:
    if status == 200:
        return "200"
    if status == 429:
        return "429"
    if status >= 500:
        return "5xx"
    if status >= 400:
        return "4xx"
    return str(status)


def _error_code(response: httpx.Response) -> str:
    try:
        error = response.json()["error"]
        return str(error.get("code") or error.get("type"))
    except (ValueError, KeyError, TypeError, AttributeError):
        return "non-json"


def _retry_after(response: httpx.Response, cap: float) -> float:
    try:
        seconds = float(response.headers.get("retry-after", "1"))
    except ValueError:
        seconds = 1.0
    return max(0.05, min(seconds, cap))


def percentile(values: Sequence[float], share: float) -> float | None:
    """The nearest-rank percentile (``share`` in 0..1) of ``values``; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(share * len(ordered))))
    return ordered[rank - 1]
