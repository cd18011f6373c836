"""Run one work item and turn what happened into a result row (a JSON-able dict).

``execute(item, permit)`` builds the task, runs the method, scores the reply and
never raises for a failed run: the row says ``status`` ``ok`` (an answer), ``partial``
(a limit stopped the run but it left a partial answer, which is scored) or ``failed``
(no answer: no score), with the failure's ``error_kind`` (``limit``, ``provider``,
``config``, ``environment`` or ``error``). Only a run's own reply is ever scored.
"""

from __future__ import annotations

import importlib
import os
import re
import socket
import time
from dataclasses import dataclass, field
from typing import Any

from rlm.base.errors import (
    ClientError,
    ConfigurationError,
    EnvironmentError_,
    MissingAPIKeyError,
    MissingExtraError,
    RLMLimitError,
)
from rlm.base.redact import redact_text
from rlm.base.types import UsageSummary
from rlm.evals.governor import Permit, governed
from rlm.evals.methods import MethodSpec
from rlm.evals.records import Context, Task, WorkItem
from rlm.evals.rlms_bridge import run_rlms
from rlm.evals.scorers import score
from rlm.evals.tasks import materialize

ANSWER_CHARS = 4000  # replies are stored up to this length
BASE_PROMPT = (
    "Read the context below and answer the question after it.\n\n<context>\n{context}\n"
    "</context>\n\nQuestion: {question}\nAnswer:"
)
CUT = "\n[... {n} characters cut to fit the model's window ...]\n"
CHARS_PER_TOKEN_CUT = 3.5  # first guess; shrunk when the provider says it does not fit
SHRINK, MAX_FITS = 0.75, 5
DEFAULT_OUTPUT_RESERVE = 1024
_TOO_LONG = re.compile(r"context|too long|too many tokens|maximum.*tokens|n_ctx", re.IGNORECASE)
_LIMIT_NAMES = {
    "TimeoutExpired",
    "BudgetExceededError",
    "TimeoutExceededError",
    "TokenLimitExceededError",
    "ErrorThresholdExceededError",
    "LLMCallLimitExceededError",
    "CancellationError",
}


@dataclass
class Outcome:
    """A method's reply (``None``: none) with its usage, or the error that ended it."""

    answer: str | None
    input_tokens: int | None = None
    output_tokens: int | None = None
    calls: int | None = None
    cost: float | None = None
    error_kind: str | None = None
    error_type: str | None = None
    error: str | None = None
    notes: dict[str, Any] = field(default_factory=dict)


def error_kind(exc: BaseException) -> str:
    """``limit``, ``config``, ``provider``, ``environment`` or ``error``."""
    if isinstance(exc, RLMLimitError):
        return "limit"
    if isinstance(exc, ConfigurationError | MissingExtraError | MissingAPIKeyError):
        return "config"
    if isinstance(exc, ClientError):
        return "provider"
    if isinstance(exc, EnvironmentError_):
        return "environment"
    return "error"


def _usage(outcome: Outcome, usage: UsageSummary) -> None:
    outcome.input_tokens = usage.total_input_tokens
    outcome.output_tokens = usage.total_output_tokens
    outcome.calls = usage.total_calls
    outcome.cost = usage.total_cost


def _resolve_backend_kwargs(method: MethodSpec, seed: int) -> dict[str, Any]:
    kwargs = dict(method.backend_kwargs)
    responder = kwargs.get("responder")
    if method.backend == "scripted" and isinstance(responder, str):  # "module:function"
        module, _, attr = responder.partition(":")
        try:
            kwargs["responder"] = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            raise ConfigurationError(f"scripted responder {responder!r}: {exc}") from None
    if method.backend == "llama_cpp":
        kwargs.setdefault("seed", seed)  # reproducible per run seed
    return kwargs


def _text(context: Context) -> str:
    return context if isinstance(context, str) else "\n\n".join(context)


def window_tokens(method: MethodSpec) -> int:
    """The tokens a ``base`` prompt may take."""
    if method.context_window:
        return method.context_window
    if method.backend == "llama_cpp" or "n_ctx" in method.backend_kwargs:
        return int(method.backend_kwargs.get("n_ctx") or 8192)
    from rlm.clients.tokens import get_context_limit

    return get_context_limit(method.model_name)


def base_prompt(method: MethodSpec, task: Task, scale: float = 1.0) -> tuple[str, dict[str, Any]]:
    """The direct prompt, its context cut in the middle to fit (``scale`` of the first
    guess of the room); and the fit, stated: ``{"window_tokens", "total_chars",
    "kept_chars", "truncated", "how"}``."""
    context = _text(task.context)
    sampling = method.backend_kwargs.get("sampling_args") or {}
    reserve = int(sampling.get("max_tokens") or 0) or (
        256 if method.backend == "llama_cpp" else DEFAULT_OUTPUT_RESERVE
    )
    window = window_tokens(method)
    fixed = len(BASE_PROMPT) + len(task.question) + len(CUT) + 20
    room = max(int((window - reserve) * CHARS_PER_TOKEN_CUT * scale) - fixed, 0)
    note: dict[str, Any] = {"window_tokens": window, "total_chars": len(context)}
    if len(context) <= room:
        note.update(kept_chars=len(context), truncated=False)
        return BASE_PROMPT.format(context=context, question=task.question), note
    head, cut = room // 2, len(context) - room
    kept = context[:head] + CUT.format(n=cut) + context[len(context) - (room - head) :]
    note.update(kept_chars=room, truncated=True, how="middle")
    return BASE_PROMPT.format(context=kept, question=task.question), note


def _run_base(
    method: MethodSpec, task: Task, kwargs: dict[str, Any], permit: Permit | None
) -> Outcome:
    """One direct call; when the provider says the prompt does not fit, the context is
    cut further (x0.75) and the call retried, up to five calls in all."""
    from rlm.clients import get_client

    kwargs = {k: v for k, v in kwargs.items() if k != "code_prefill"}  # a plain completion
    backend = method.backend
    if permit is not None:
        backend, kwargs = governed(backend, kwargs, permit)
    client = get_client(backend, kwargs)
    usage, scale = UsageSummary(), 1.0
    try:
        for attempt in range(1, MAX_FITS + 1):
            prompt, fit = base_prompt(method, task, scale)
            try:
                result = client.complete([{"role": "user", "content": prompt}])
            except ClientError as exc:
                if (
                    attempt == MAX_FITS
                    or (not fit["truncated"] and scale < 1)
                    or not _TOO_LONG.search(str(exc))
                ):
                    raise
                scale *= SHRINK
                continue
            usage.merge(UsageSummary({result.model: result.usage}))
            break
    finally:
        client.close()
    notes: dict[str, Any] = {"window": fit}
    if attempt > 1:
        notes["window"]["attempts"] = attempt
    outcome = Outcome(result.text, notes=notes)
    _usage(outcome, usage)
    return outcome


def _run_rlm(
    method: MethodSpec, task: Task, kwargs: dict[str, Any], permit: Permit | None
) -> Outcome:
    from rlm.core.rlm import RLM

    backend, rlm_kwargs = method.backend, dict(method.rlm_kwargs)
    if permit is not None:
        backend, kwargs = governed(backend, kwargs, permit)
        others = rlm_kwargs.get("other_backends") or []
        other_kwargs = rlm_kwargs.get("other_backend_kwargs") or [{} for _ in others]
        pairs = [governed(b, dict(k), permit) for b, k in zip(others, other_kwargs, strict=False)]
        if pairs:
            rlm_kwargs["other_backends"] = [b for b, _ in pairs]
            rlm_kwargs["other_backend_kwargs"] = [k for _, k in pairs]
    with RLM(backend=backend, backend_kwargs=kwargs, **rlm_kwargs) as rlm:
        result = rlm.completion(task.context, root_prompt=task.question)
    outcome = Outcome(result.response)
    _usage(outcome, result.usage_summary)
    return outcome


def _run_rlms(method: MethodSpec, task: Task, kwargs: dict[str, Any]) -> Outcome:
    limit = method.rlm_kwargs.get("max_timeout")
    reply = run_rlms(
        str(method.python),
        method.backend,
        kwargs,
        method.rlm_kwargs,
        task.context,
        task.question,
        timeout=float(limit) * 2 + 60 if limit else None,
    )
    outcome = Outcome(reply.response, notes={"rlms_version": reply.version})
    if reply.ignored:
        outcome.notes["ignored_by_rlms"] = reply.ignored
    if reply.usage:
        _usage(outcome, UsageSummary.from_dict(reply.usage))
    if not reply.ok:
        name = reply.error_type or "Error"
        outcome.error_type, outcome.error = name, reply.message
        outcome.error_kind = reply.kind or ("limit" if name in _LIMIT_NAMES else "error")
    return outcome


def run_method(item: WorkItem, task: Task, permit: Permit | None = None) -> Outcome:
    """Run ``item``'s method on ``task``; a failed run comes back as an ``Outcome``."""
    method = item.method
    try:
        kwargs = _resolve_backend_kwargs(method, item.seed)
        if method.kind == "base":
            return _run_base(method, task, kwargs, permit)
        if method.kind == "rlms":
            return _run_rlms(method, task, kwargs)
        return _run_rlm(method, task, kwargs, permit)
    except Exception as exc:
        partial = exc.partial_answer if isinstance(exc, RLMLimitError) else None
        return Outcome(
            partial or None,
            error_kind=error_kind(exc),
            error_type=type(exc).__name__,
            error=redact_text(str(exc))[:2000],
        )


def execute(item: WorkItem, permit: Permit | None = None, engine: str = "local") -> dict[str, Any]:
    """The result row of ``item`` (see the module docstring for its fields)."""
    started = time.time()
    clock = time.perf_counter()
    task: Task | None = None
    try:
        task = materialize(item.task)
    except Exception as exc:  # a generator or dataset problem: no run happened
        message = redact_text(str(exc))[:2000]
        outcome = Outcome(None, error_kind="config", error_type=type(exc).__name__, error=message)
    else:
        outcome = run_method(item, task, permit)
    wall = time.perf_counter() - clock
    scored = task is not None and task.answer is not None and outcome.answer is not None
    status = "ok" if outcome.error_kind is None else ("partial" if outcome.answer else "failed")
    return {
        "key": item.key,
        "fingerprint": item.fingerprint,
        "method": item.method.name,
        "method_kind": item.method.kind,
        "family": item.task.family,
        "task_key": item.task.key,
        "task_hash": task.content_hash() if task else None,
        "length_label": item.task.length_label,
        "length_tokens": task.length_tokens if task else item.task.length_tokens,
        "seed": item.seed,
        "status": status,
        "error_kind": outcome.error_kind,
        "error_type": outcome.error_type,
        "error": outcome.error,
        "question": task.question[:500] if task else None,
        "answer": (outcome.answer or "")[:ANSWER_CHARS] if outcome.answer is not None else None,
        "expected": task.answer if task else None,
        "scorer": task.scorer if task else None,
        "score": score(task.scorer, outcome.answer or "", task.answer) if scored and task else None,
        "input_tokens": outcome.input_tokens,
        "output_tokens": outcome.output_tokens,
        "calls": outcome.calls,
        "cost": outcome.cost,
        "wall_time": round(wall, 4),
        "started_at": started,
        "engine": engine,
        "worker": f"{socket.gethostname()}:{os.getpid()}",
        "notes": {k: v for k, v in outcome.notes.items() if v is not None},
    }


def crash_row(item: WorkItem, exc: BaseException, engine: str) -> dict[str, Any]:
    """The row of an item whose execution itself broke (a worker died, a bug)."""
    return {
        "key": item.key,
        "fingerprint": item.fingerprint,
        "method": item.method.name,
        "method_kind": item.method.kind,
        "family": item.task.family,
        "task_key": item.task.key,
        "task_hash": None,
        "length_label": item.task.length_label,
        "length_tokens": item.task.length_tokens,
        "seed": item.seed,
        "status": "failed",
        "error_kind": "environment" if engine == "ray" else "error",
        "error_type": type(exc).__name__,
        "error": redact_text(str(exc))[:2000],
        "question": None,
        "answer": None,
        "expected": None,
        "scorer": None,
        "score": None,
        "input_tokens": None,
        "output_tokens": None,
        "calls": None,
        "cost": None,
        "wall_time": None,
        "started_at": time.time(),
        "engine": engine,
        "worker": None,
        "notes": {},
    }
