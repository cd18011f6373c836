"""The ``rlms`` ``RLM``'s attributes and private hooks, kept for code and tests written
against it.

``RLM`` mirrors its arguments under ``rlms``'s attribute names (``backend``,
``max_depth``, ``other_backends``...; ``_set_rlms_attributes``) and has ``rlms``'s
``verbose`` console printer, made on first use unless the RLM is verbose.

``rlms``'s own tests call and patch ``RLM._subcall``, ``_check_timeout``,
``_check_iteration_limits`` and read ``_consecutive_errors`` and
``_completion_start_time``. rlmx's engine decides these things in pure functions
(``rlm.core.budget.find_breach`` / ``breach_error``) and runs children as sessions that
share the parent's handler and budget tree; the methods here are thin layers over that
logic, mixed into ``RLM``.

``_subcall`` during a run is the engine's own ``rlm_query`` path. Called outside a run
(as ``rlms``'s tests do), it builds the child the ``rlms`` way: an ``RLM`` made through
the module global ``rlm.core.rlm.RLM`` (so patching it captures the child's arguments),
with what is left of ``max_timeout`` / ``max_budget``, the same ``max_tokens`` and
``max_errors``, ``custom_sub_tools`` as its tools, a fresh ``RLMLogger`` when this RLM
has a logger, and ``model`` as its ``model_name``. At the depth limit it is one plain
call through this RLM's handler (whose client factory goes through ``get_client``).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from rlm.base.types import RLMChatCompletion, RLMIteration
from rlm.core.budget import breach_error, find_breach
from rlm.core.subcalls import error_completion
from rlm.logger import RLMLogger, VerbosePrinter

if TYPE_CHECKING:
    from rlm.core.config import RLMConfig
    from rlm.core.session import Session

# Arguments a child never inherits: they belong to the root's session or its caller.
_NOT_INHERITED = frozenset(
    {
        "session_id",
        "session_store",
        "durable",
        "persistent",
        "user_prologue",
        "verbose",
        "on_subcall_start",
        "on_subcall_complete",
        "on_iteration_start",
        "on_iteration_complete",
    }
)


class RLMSHooks:
    """Mixin for ``RLM``: the ``rlms``-era attributes and private methods (see the module
    docstring)."""

    config: RLMConfig
    logger: RLMLogger | None
    _init_kwargs: dict[str, Any]
    _session: Session | None
    _completion_start_time: float | None = None
    _consecutive_errors: int = 0
    _best_partial_answer: str | None = None
    _verbose: VerbosePrinter | None = None

    def _set_rlms_attributes(self) -> None:
        """``rlms``'s attribute names for the configuration, for code that reads them."""
        cfg, args = self.config, self._init_kwargs
        self.backend = cfg.backend
        self.backend_kwargs = cfg.backend_kwargs
        self.environment_type = cfg.environment
        self.environment_kwargs = cfg.environment_kwargs
        self.depth, self.max_depth = cfg.depth, cfg.max_depth
        self.max_iterations = cfg.max_iterations
        self.max_budget, self.max_timeout = args["max_budget"], args["max_timeout"]
        self.max_tokens, self.max_errors = args["max_tokens"], args["max_errors"]
        self.max_llm_calls = args["max_llm_calls"]
        self.max_inflight_llm_calls = args["max_inflight_llm_calls"]
        self.system_prompt = cfg.system_prompt
        self.other_backends = list(cfg.other_backends) or None
        self.other_backend_kwargs = list(cfg.other_backend_kwargs) or None
        self.custom_tools, self.custom_sub_tools = cfg.custom_tools, cfg.custom_sub_tools
        self.compaction = cfg.compaction
        self.compaction_threshold_pct = cfg.compaction_threshold_pct
        self.max_concurrent_subcalls = cfg.max_concurrent_subcalls
        self.on_subcall_start = args["on_subcall_start"]
        self.on_subcall_complete = args["on_subcall_complete"]
        self.on_iteration_start = args["on_iteration_start"]
        self.on_iteration_complete = args["on_iteration_complete"]

    @property
    def verbose(self) -> VerbosePrinter:
        """The console printer (``rlms``'s attribute): prints only for a verbose RLM."""
        if self._verbose is None:
            self._verbose = VerbosePrinter(enabled=self._init_kwargs["verbose"])
        return self._verbose

    @verbose.setter
    def verbose(self, printer: VerbosePrinter) -> None:
        self._verbose = printer

    def _get_session(self) -> Session:  # provided by RLM
        raise NotImplementedError

    def _new_child(self, kwargs: dict[str, Any]) -> Any:  # provided by RLM
        raise NotImplementedError

    # -- limit checks ----------------------------------------------------------------

    def _check_timeout(self, iteration: int, time_start: float) -> None:
        """Raise ``TimeoutExceededError`` if ``max_timeout`` has passed since ``time_start``."""
        limits = self.config.limits
        if limits.max_timeout is None:
            return
        breach = find_breach(limits, elapsed=time.perf_counter() - time_start)
        if breach is not None:
            raise breach_error(breach, self._best_partial_answer, iteration)

    def _check_iteration_limits(
        self, iteration: RLMIteration, iteration_num: int, lm_handler: Any
    ) -> None:
        """Count ``iteration``'s failing code blocks towards ``max_errors``, then check
        ``max_errors``, ``max_budget`` and ``max_tokens`` against ``lm_handler``'s usage."""
        errors = [b.result.stderr for b in iteration.code_blocks if b.result.stderr]
        self._consecutive_errors = self._consecutive_errors + 1 if errors else 0
        limits = self.config.limits
        usage = lm_handler.get_usage_summary()
        breach = find_breach(
            limits,
            consecutive_errors=self._consecutive_errors,
            spent_usd=(usage.total_cost or 0.0) if limits.max_budget is not None else 0.0,
            tokens=usage.total_tokens if limits.max_tokens is not None else 0,
        )
        if breach is not None:
            last_error = errors[-1] if errors else None
            raise breach_error(breach, self._best_partial_answer, iteration_num + 1, last_error)

    # -- children --------------------------------------------------------------------

    def _subcall(self, prompt: str, model: str | None = None) -> RLMChatCompletion:
        """``rlm_query(prompt, model)``: a child RLM, or one plain call at the depth limit."""
        session = self._session
        if session is not None and session.running:
            return session._subcall(prompt, model)
        return self._detached_subcall(prompt, model)

    def _detached_subcall(self, prompt: str, model: str | None) -> RLMChatCompletion:
        cfg = self.config
        started = time.perf_counter()
        limits = cfg.limits
        max_timeout = limits.max_timeout
        if max_timeout is not None and self._completion_start_time is not None:
            elapsed = started - self._completion_start_time
            max_timeout = max_timeout - elapsed
            if max_timeout <= 0:
                message = f"Error: Timeout exhausted ({elapsed:.1f}s of {limits.max_timeout:.1f}s)"
                return error_completion(cfg, prompt, message, started)
        if cfg.depth + 1 >= cfg.max_depth:
            handler = self._get_session().ensure_handler()
            try:
                return handler.call(prompt, model, 1, None)
            except Exception as exc:
                message = f"Error: LM query failed - {type(exc).__name__}: {exc}"
                return error_completion(cfg, prompt, message, started)
        child = self._new_child(self._child_kwargs(model, max_timeout))
        try:
            result: RLMChatCompletion = child.completion(prompt)
            return result
        except Exception as exc:
            partial = getattr(exc, "partial_answer", None)
            extra = f" Partial answer: {partial}" if partial else ""
            message = f"Error: Child RLM completion failed - {exc}.{extra}"
            return error_completion(cfg, prompt, message, started)
        finally:
            child.close()

    def _child_kwargs(self, model: str | None, max_timeout: float | None) -> dict[str, Any]:
        cfg = self.config
        kwargs = {k: v for k, v in self._init_kwargs.items() if k not in _NOT_INHERITED}
        backend_kwargs = dict(kwargs.get("backend_kwargs") or {})
        if model:
            backend_kwargs["model_name"] = model
        kwargs.update(
            backend_kwargs=backend_kwargs,
            depth=cfg.depth + 1,
            max_timeout=max_timeout,
            max_tokens=cfg.limits.max_tokens,
            max_errors=cfg.limits.max_errors,
            max_budget=cfg.limits.max_budget,
            logger=RLMLogger() if self.logger is not None else None,
            custom_tools=cfg.custom_sub_tools,
            custom_sub_tools=cfg.custom_sub_tools,
        )
        return kwargs
