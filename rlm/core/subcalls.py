"""Child RLMs spawned by ``rlm_query``: a short-lived ``Session`` per prompt.

``run_child`` makes the child through ``Session.child`` (the parent's parts, handler,
bus and budget tree), announces it (``subcall_started`` / ``subcall_finished``) and
turns its failure into an ``Error: ...`` reply. ``checked_subcall`` is ``rlm_query`` as
REPL code sees it: the model it names is checked first.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from rlm.base.errors import RLMLimitError
from rlm.base.events import RunScope
from rlm.base.types import RLMChatCompletion, UsageSummary
from rlm.core.budget import BudgetNode
from rlm.core.child_slots import ChildSlot
from rlm.core.config import RLMConfig
from rlm.core.model_policy import ModelNotAllowedError, ModelPolicy

if TYPE_CHECKING:
    from rlm.core.lm_handler import LMHandler
    from rlm.core.session import Session

_run_ids = itertools.count(1)


def new_run_id() -> str:
    return f"run{next(_run_ids)}"


def run_child(
    parent: Session,
    prompt: str,
    model: str | None,
    node: BudgetNode,
    scope: RunScope,
    handler: LMHandler,
) -> RLMChatCompletion:
    """Run ``prompt`` in a child RLM of ``parent``; failures become an ``Error: ...`` reply.

    The child shares the parent's handler, bus and budget tree, and holds one of the
    tree's child slots while it runs.
    """
    cfg = parent.config
    started = time.perf_counter()
    child_depth = cfg.depth + 1
    child_cfg = cfg.for_child(model, node.child_limits(cfg.limits))
    run_id = new_run_id()
    scope.emit(
        "subcall_started",
        kind="rlm",
        model=child_cfg.root_model,
        prompt_preview=preview(prompt),
        count=1,
        child_depth=child_depth,
        child_run_id=run_id,
    )
    gate = handler.governor.children
    child: Session | None = None
    error: str | None = None
    try:
        gate.enter(node.token)
        slot = ChildSlot(gate)
        try:
            child = parent.child(child_cfg, scope, node, slot, run_id)
            return child.completion(prompt)
        finally:
            slot.close()
    except RLMLimitError as exc:
        error = f"{type(exc).__name__}: {exc}"
        partial = f" Partial answer: {exc.partial_answer}" if exc.partial_answer else ""
        return error_completion(
            child_cfg, prompt, f"Error: Child RLM stopped - {exc}.{partial}", started
        )
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
        return error_completion(
            child_cfg, prompt, f"Error: Child RLM completion failed - {exc}", started
        )
    finally:
        if child is not None:
            child.close()
        spent = child.node if child is not None else None
        scope.emit(
            "subcall_finished",
            kind="rlm",
            model=child_cfg.root_model,
            duration=time.perf_counter() - started,
            usage=spent.usage if spent is not None else None,
            error=error,
            child_depth=child_depth,
            child_run_id=run_id,
        )


SubcallFn = Callable[[str, str | None], RLMChatCompletion]


def checked_subcall(subcall: SubcallFn, policy: ModelPolicy, cfg: RLMConfig) -> SubcallFn:
    """``subcall`` as REPL code's ``rlm_query``: a model the policy does not allow is
    refused (``Error: model 'x' is not available ...``) before any child or call.
    Python callers of ``RLM._subcall`` reach ``subcall`` itself, unrestricted."""

    def rlm_query(prompt: str, model: str | None = None) -> RLMChatCompletion:
        if not policy.allows(model):
            error = ModelNotAllowedError(str(model), policy.names)
            return error_completion(cfg, prompt, f"Error: {error}", time.perf_counter())
        return subcall(prompt, model)

    return rlm_query


def error_completion(
    cfg: RLMConfig, prompt: Any, message: str, started: float
) -> RLMChatCompletion:
    return RLMChatCompletion(
        root_model=cfg.root_model,
        prompt=prompt,
        response=message,
        usage_summary=UsageSummary(),
        execution_time=time.perf_counter() - started,
        error=message,
    )


def preview(prompt: Any, limit: int = 80) -> str:
    text = prompt if isinstance(prompt, str) else repr(prompt)
    return text[:limit]
