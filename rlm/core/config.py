"""``RLMConfig``: every ``RLM(...)`` argument, validated once, immutable afterwards."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rlm.base.errors import ConfigurationError
from rlm.base.redact import filter_sensitive_keys
from rlm.base.tools import validate_custom_tools
from rlm.base.types import RLMMetadata
from rlm.clients.base_lm import BaseLM
from rlm.core.budget import Limits
from rlm.core.call_cache import CallCache, open_cache
from rlm.core.governor import Governor
from rlm.core.lm_batch import DEFAULT_MAX_BATCH_SIZE
from rlm.core.lm_handler import DEFAULT_MAX_CONCURRENT_LLM_CALLS, LMHandler
from rlm.core.model_policy import validate_allowed_models
from rlm.core.parsing import DEFAULT_MAX_OUTPUT_CHARS
from rlm.core.prompts import RLM_SYSTEM_PROMPT

# ``RLM(...)`` arguments that observe or keep a run rather than configure it: never part
# of ``RLMConfig``, nor of what an eval records as a method's settings.
RUN_HOOKS = frozenset(
    {
        "logger",
        "verbose",
        "on_subcall_start",
        "on_subcall_complete",
        "on_iteration_start",
        "on_iteration_complete",
        "session_id",
        "session_store",
        "durable",
    }
)


def _merge_sampling(kwargs: dict[str, Any] | None, sampling: dict[str, Any]) -> dict[str, Any]:
    merged = dict(kwargs or {})
    merged["sampling_args"] = {**(merged.get("sampling_args") or {}), **sampling}
    return merged


@dataclass(frozen=True)
class RLMConfig:
    backend: str = "openai"
    backend_kwargs: dict[str, Any] = field(default_factory=dict)
    environment: str = "local"
    environment_kwargs: dict[str, Any] = field(default_factory=dict)
    depth: int = 0
    max_depth: int = 1
    max_iterations: int = 30
    limits: Limits = field(default_factory=Limits)
    system_prompt: str = RLM_SYSTEM_PROMPT
    other_backends: tuple[str, ...] = ()
    other_backend_kwargs: tuple[dict[str, Any], ...] = ()
    persistent: bool = False
    custom_tools: dict[str, Any] | None = None
    custom_sub_tools: dict[str, Any] | None = None
    compaction: bool = False
    compaction_threshold_pct: float = 0.85
    max_concurrent_subcalls: int = 4
    max_concurrent_llm_calls: int = DEFAULT_MAX_CONCURRENT_LLM_CALLS
    max_inflight_llm_calls: int | None = None
    orchestrator: bool = True
    user_prologue: str | None = None
    max_output_chars: int = DEFAULT_MAX_OUTPUT_CHARS
    model_override: str | None = None
    allowed_models: tuple[str, ...] | str = ()  # or "*": REPL code may name any model
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE
    governor: Governor | None = None  # shared pacing (its window); each tree its own
    cache: CallCache | None = None  # memoised model calls (rlm.core.call_cache)

    @property
    def root_model(self) -> str:
        return self.model_override or str(self.backend_kwargs.get("model_name") or "unknown")

    def result_model(self, client_model: str) -> str:
        """The model a run's result names: the override, else the configured model, else
        ``client_model`` (the name the root client gives itself)."""
        return self.model_override or str(self.backend_kwargs.get("model_name") or client_model)

    def registered_models(self) -> list[str]:
        """The model names REPL code may pass besides ``allowed_models``: the root
        model's and the other backends' (their clients' own names are added as well)."""
        names = [self.model_override, self.backend_kwargs.get("model_name")]
        names += [kwargs.get("model_name") for kwargs in self.other_backend_kwargs]
        return [n for n in names if isinstance(n, str) and n]

    def metadata(self, root_model: str | None = None) -> RLMMetadata:
        """The run's configuration as logged at its start, secrets filtered out."""
        return RLMMetadata(
            root_model=root_model or self.root_model,
            max_depth=self.max_depth,
            max_iterations=self.max_iterations,
            backend=self.backend,
            backend_kwargs=filter_sensitive_keys(self.backend_kwargs),
            environment_type=self.environment,
            environment_kwargs=filter_sensitive_keys(self.environment_kwargs),
            other_backends=list(self.other_backends) or None,
        )

    def for_child(self, model: str | None, limits: Limits) -> RLMConfig:
        """The configuration of a child RLM spawned by ``rlm_query``."""
        return dataclasses.replace(
            self,
            depth=self.depth + 1,
            limits=limits,
            persistent=False,
            custom_tools=self.custom_sub_tools,
            model_override=model or self.model_override,
            user_prologue=None,
        )

    @classmethod
    def build(
        cls,
        *,
        backend: str,
        backend_kwargs: dict[str, Any] | None,
        environment: str,
        environment_kwargs: dict[str, Any] | None,
        depth: int,
        max_depth: int,
        max_iterations: int,
        max_budget: float | None,
        max_timeout: float | None,
        max_tokens: int | None,
        max_errors: int | None,
        custom_system_prompt: str | None,
        other_backends: list[str] | None,
        other_backend_kwargs: list[dict[str, Any]] | None,
        persistent: bool,
        custom_tools: dict[str, Any] | None,
        custom_sub_tools: dict[str, Any] | None,
        compaction: bool,
        compaction_threshold_pct: float,
        max_concurrent_subcalls: int,
        max_concurrent_llm_calls: int,
        sampling_args: dict[str, Any] | None,
        sub_sampling_args: dict[str, Any] | None,
        orchestrator: bool,
        user_prologue: str | None,
        max_output_chars: int,
        max_inflight_llm_calls: int | None = None,
        max_llm_calls: int | None = None,
        allowed_models: Any = None,
        max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
        governor: Governor | None = None,
        cache: Any = None,
    ) -> RLMConfig:
        """Validate the ``RLM(...)`` arguments; raises ``ConfigurationError`` (a ValueError)."""
        if not isinstance(backend, str) or not backend:
            raise ConfigurationError(f"backend must be a backend name, got {backend!r}")
        if not isinstance(environment, str) or not environment:
            raise ConfigurationError(
                f"environment must be an environment name, got {environment!r}"
            )
        for name, value, low in (
            ("max_iterations", max_iterations, 1),
            ("max_depth", max_depth, 0),
            ("depth", depth, 0),
            ("max_concurrent_subcalls", max_concurrent_subcalls, 1),
            ("max_concurrent_llm_calls", max_concurrent_llm_calls, 1),
            ("max_output_chars", max_output_chars, 200),
            ("max_batch_size", max_batch_size, 1),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ConfigurationError(f"{name} must be an integer >= {low}, got {value!r}")
        if max_inflight_llm_calls is not None and (
            not isinstance(max_inflight_llm_calls, int)
            or isinstance(max_inflight_llm_calls, bool)
            or max_inflight_llm_calls < 1
        ):
            raise ConfigurationError(
                f"max_inflight_llm_calls must be an integer >= 1 or None, "
                f"got {max_inflight_llm_calls!r}"
            )
        for name, limit in (
            ("max_budget", max_budget),
            ("max_timeout", max_timeout),
            ("max_tokens", max_tokens),
            ("max_errors", max_errors),
            ("max_llm_calls", max_llm_calls),
        ):
            if limit is not None and (
                isinstance(limit, bool) or not isinstance(limit, int | float) or limit < 0
            ):
                raise ConfigurationError(
                    f"{name} must be a non-negative number or None, got {limit!r}"
                )
        if governor is not None and not isinstance(governor, Governor):
            raise ConfigurationError(f"governor must be a Governor or None, got {governor!r}")
        if governor is not None and max_inflight_llm_calls is not None:
            raise ConfigurationError(
                "max_inflight_llm_calls cannot be combined with a shared governor: its "
                "window is the cap (Governor(max_inflight=...), shared_governor(...))"
            )
        allowed = validate_allowed_models(allowed_models)  # ConfigurationError if bad
        if not 0 < compaction_threshold_pct <= 1:
            raise ConfigurationError("compaction_threshold_pct must be in (0, 1]")
        if backend_kwargs is not None and not isinstance(backend_kwargs, dict):
            raise ConfigurationError("backend_kwargs must be a dict")
        if environment_kwargs is not None and not isinstance(environment_kwargs, dict):
            raise ConfigurationError("environment_kwargs must be a dict")

        others = list(other_backends or [])
        other_kwargs = [dict(k or {}) for k in (other_backend_kwargs or [])]
        if others and not other_kwargs:
            other_kwargs = [{} for _ in others]
        if len(others) != len(other_kwargs):
            raise ConfigurationError(
                f"other_backends ({len(others)}) and other_backend_kwargs ({len(other_kwargs)}) "
                "must have the same length"
            )
        kwargs = dict(backend_kwargs or {})
        if sampling_args:
            kwargs = _merge_sampling(kwargs, sampling_args)
        if sub_sampling_args:
            if not others:  # mirror the root backend so sub-calls get their own sampling
                others, other_kwargs = [backend], [dict(backend_kwargs or {})]
            other_kwargs[0] = _merge_sampling(other_kwargs[0], sub_sampling_args)

        try:
            for tools in (custom_tools, custom_sub_tools):
                if tools is not None:
                    validate_custom_tools(tools)
        except ValueError as exc:
            raise ConfigurationError(str(exc)) from None

        return cls(
            backend=backend,
            backend_kwargs=kwargs,
            environment=environment,
            environment_kwargs=dict(environment_kwargs or {}),
            depth=depth,
            max_depth=max_depth,
            max_iterations=max_iterations,
            limits=Limits(max_budget, max_timeout, max_tokens, max_errors, max_llm_calls),
            system_prompt=custom_system_prompt or RLM_SYSTEM_PROMPT,
            other_backends=tuple(others),
            other_backend_kwargs=tuple(other_kwargs),
            persistent=persistent,
            custom_tools=custom_tools,
            custom_sub_tools=custom_sub_tools if custom_sub_tools is not None else custom_tools,
            compaction=compaction,
            compaction_threshold_pct=compaction_threshold_pct,
            max_concurrent_subcalls=max_concurrent_subcalls,
            max_concurrent_llm_calls=max_concurrent_llm_calls,
            max_inflight_llm_calls=max_inflight_llm_calls,
            orchestrator=orchestrator,
            user_prologue=user_prologue,
            max_output_chars=max_output_chars,
            allowed_models=allowed,
            max_batch_size=max_batch_size,
            governor=governor,
            cache=open_cache(cache),  # ConfigurationError for a bad spec
        )


def build_handler(
    cfg: RLMConfig, make_client: Callable[[str, dict[str, Any]], BaseLM]
) -> LMHandler:
    """A root session's handler: the root and other-backend clients, a client factory
    for the models REPL code names, the governor (the tree's own, over the shared
    ``cfg.governor``'s window when one is given), and the model policy (the root's and
    the other backends' models, plus ``allowed_models``)."""
    client = make_client(cfg.backend, dict(cfg.backend_kwargs))
    others = [
        make_client(b, dict(k))
        for b, k in zip(cfg.other_backends, cfg.other_backend_kwargs, strict=True)
    ]

    def for_model(model: str) -> BaseLM:
        return make_client(cfg.backend, {**cfg.backend_kwargs, "model_name": model})

    handler = LMHandler(
        client,
        other_backend_client=others[0] if others else None,
        batch_max_concurrent=cfg.max_concurrent_llm_calls,
        client_factory=for_model,
        governor=(
            cfg.governor.for_tree(cfg.max_concurrent_subcalls)  # the shared window's pacing
            if cfg.governor is not None
            else Governor(cfg.max_inflight_llm_calls, cfg.max_concurrent_subcalls)
        ),
        max_batch_size=cfg.max_batch_size,
        allowed_models=cfg.allowed_models,
    )
    handler.cache = cfg.cache
    for other in others:
        handler.register_client(other.model_name, other)
    handler.model_policy.allow(*cfg.registered_models())
    return handler
