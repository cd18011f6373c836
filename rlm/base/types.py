"""Plain data types shared by every layer: usage, REPL results, iterations, completions.

Field names and ``to_dict`` keys match the ``rlms`` 0.1.3 types, so trajectories and
serialised results are interchangeable with the reference implementation.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Literal

ClientBackend = Literal[
    "openai",
    "portkey",
    "openrouter",
    "vercel",
    "vllm",
    "anthropic",
    "azure_openai",
    "gemini",
    "litellm",
    "openai_compatible",
    "llama_cpp",
    "scripted",
]
EnvironmentType = Literal[
    "local", "ipython", "docker", "modal", "prime", "daytona", "e2b", "sandbox"
]

Prompt = str | dict[str, Any] | list[dict[str, Any]]


def serialize_value(value: Any) -> Any:
    """Best-effort JSON-safe rendering of an arbitrary REPL value."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, ModuleType):
        return f"<module '{value.__name__}'>"
    if isinstance(value, list | tuple):
        return [serialize_value(v) for v in value]
    if isinstance(value, dict):
        return {str(k): serialize_value(v) for k, v in value.items()}
    if callable(value):
        return f"<{type(value).__name__} '{getattr(value, '__name__', '?')}'>"
    try:
        return repr(value)
    except Exception:
        return f"<{type(value).__name__}>"


_serialize_value = serialize_value  # the rlms name, imported by code written for rlms


# ---------------------------------------------------------------------------
# Usage
# ---------------------------------------------------------------------------


@dataclass
class ModelUsageSummary:
    """Token and cost totals for one model (a single call, or an aggregate)."""

    total_calls: int = 0
    total_input_tokens: int = 0
    total_output_tokens: int = 0
    total_cost: float | None = None
    cache_read_tokens: int | None = None
    cache_write_tokens: int | None = None
    # Calls answered by the sub-call cache (``RLM(cache=...)``): they cost nothing and
    # count no call; what the model would have spent on them is in ``saved_*``.
    cached_calls: int = 0
    saved_input_tokens: int = 0
    saved_output_tokens: int = 0
    saved_cost: float | None = None

    @property
    def total_tokens(self) -> int:
        return self.total_input_tokens + self.total_output_tokens

    def add(self, other: ModelUsageSummary) -> None:
        """Accumulate ``other`` into this summary in place."""
        self.total_calls += other.total_calls
        self.total_input_tokens += other.total_input_tokens
        self.total_output_tokens += other.total_output_tokens
        if other.total_cost is not None:
            self.total_cost = (self.total_cost or 0.0) + other.total_cost
        if other.cache_read_tokens is not None:
            self.cache_read_tokens = (self.cache_read_tokens or 0) + other.cache_read_tokens
        if other.cache_write_tokens is not None:
            self.cache_write_tokens = (self.cache_write_tokens or 0) + other.cache_write_tokens
        self.cached_calls += other.cached_calls
        self.saved_input_tokens += other.saved_input_tokens
        self.saved_output_tokens += other.saved_output_tokens
        if other.saved_cost is not None:
            self.saved_cost = (self.saved_cost or 0.0) + other.saved_cost

    def copy(self) -> ModelUsageSummary:
        return ModelUsageSummary(
            self.total_calls,
            self.total_input_tokens,
            self.total_output_tokens,
            self.total_cost,
            self.cache_read_tokens,
            self.cache_write_tokens,
            self.cached_calls,
            self.saved_input_tokens,
            self.saved_output_tokens,
            self.saved_cost,
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "total_calls": self.total_calls,
            "total_input_tokens": self.total_input_tokens,
            "total_output_tokens": self.total_output_tokens,
        }
        if self.total_cost is not None:
            out["total_cost"] = self.total_cost
        if self.cache_read_tokens is not None:
            out["cache_read_tokens"] = self.cache_read_tokens
        if self.cache_write_tokens is not None:
            out["cache_write_tokens"] = self.cache_write_tokens
        if self.cached_calls:  # rlms's keys only, unless the call cache answered
            out["cached_calls"] = self.cached_calls
            out["saved_input_tokens"] = self.saved_input_tokens
            out["saved_output_tokens"] = self.saved_output_tokens
            if self.saved_cost is not None:
                out["saved_cost"] = self.saved_cost
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelUsageSummary:
        return cls(
            total_calls=data.get("total_calls") or 0,
            total_input_tokens=data.get("total_input_tokens") or 0,
            total_output_tokens=data.get("total_output_tokens") or 0,
            total_cost=data.get("total_cost"),
            cache_read_tokens=data.get("cache_read_tokens"),
            cache_write_tokens=data.get("cache_write_tokens"),
            cached_calls=data.get("cached_calls") or 0,
            saved_input_tokens=data.get("saved_input_tokens") or 0,
            saved_output_tokens=data.get("saved_output_tokens") or 0,
            saved_cost=data.get("saved_cost"),
        )


@dataclass
class UsageSummary:
    """Usage per model name."""

    model_usage_summaries: dict[str, ModelUsageSummary] = field(default_factory=dict)

    @property
    def total_cost(self) -> float | None:
        costs = [
            s.total_cost for s in self.model_usage_summaries.values() if s.total_cost is not None
        ]
        return sum(costs) if costs else None

    @property
    def total_input_tokens(self) -> int:
        return sum(s.total_input_tokens for s in self.model_usage_summaries.values())

    @property
    def total_output_tokens(self) -> int:
        return sum(s.total_output_tokens for s in self.model_usage_summaries.values())

    @property
    def total_tokens(self) -> int:
        return self.total_input_tokens + self.total_output_tokens

    @property
    def total_calls(self) -> int:
        return sum(s.total_calls for s in self.model_usage_summaries.values())

    @property
    def cached_calls(self) -> int:
        """Calls the sub-call cache answered (not counted in ``total_calls``)."""
        return sum(s.cached_calls for s in self.model_usage_summaries.values())

    @property
    def saved_tokens(self) -> int:
        """Input and output tokens the cache's hits did not spend."""
        return sum(
            s.saved_input_tokens + s.saved_output_tokens
            for s in self.model_usage_summaries.values()
        )

    @property
    def saved_cost(self) -> float | None:
        """USD the cache's hits did not spend (``None``: no hit had a known cost)."""
        costs = [
            s.saved_cost for s in self.model_usage_summaries.values() if s.saved_cost is not None
        ]
        return sum(costs) if costs else None

    def merge(self, other: UsageSummary) -> None:
        """Accumulate ``other`` into this summary in place."""
        for model, usage in other.model_usage_summaries.items():
            mine = self.model_usage_summaries.get(model)
            if mine is None:
                self.model_usage_summaries[model] = usage.copy()
            else:
                mine.add(usage)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "model_usage_summaries": {m: s.to_dict() for m, s in self.model_usage_summaries.items()}
        }
        cost = self.total_cost
        if cost is not None:
            out["total_cost"] = cost
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> UsageSummary:
        data = data or {}
        return cls(
            model_usage_summaries={
                m: ModelUsageSummary.from_dict(s)
                for m, s in (data.get("model_usage_summaries") or {}).items()
            }
        )


# ---------------------------------------------------------------------------
# Completions, REPL results, iterations
# ---------------------------------------------------------------------------


@dataclass
class RLMChatCompletion:
    """The result of one RLM completion, or of one sub-call made from the REPL."""

    root_model: str
    prompt: Any
    response: str
    usage_summary: UsageSummary
    execution_time: float
    metadata: dict[str, Any] | None = None
    error: str | None = None
    # With ``output_schema``: the validated answer (a Pydantic instance, a dataclass
    # instance or plain JSON values); ``response`` is then its JSON text.
    parsed: Any = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "root_model": self.root_model,
            "prompt": self.prompt,
            "response": self.response,
            "usage_summary": self.usage_summary.to_dict(),
            "execution_time": self.execution_time,
        }
        if self.metadata is not None:
            out["metadata"] = self.metadata
        if self.error is not None:
            out["error"] = self.error
        if self.parsed is not None:  # as JSON values: ``response`` is its JSON text
            try:
                out["parsed"] = json.loads(self.response)
            except ValueError:
                out["parsed"] = str(self.parsed)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RLMChatCompletion:
        return cls(
            root_model=data.get("root_model") or "unknown",
            prompt=data.get("prompt"),
            response=data.get("response") or "",
            usage_summary=UsageSummary.from_dict(data.get("usage_summary")),
            execution_time=data.get("execution_time") or 0.0,
            metadata=data.get("metadata"),
            error=data.get("error"),
            parsed=data.get("parsed"),
        )


class REPLResult:
    """What one executed code block produced."""

    __slots__ = ("execution_time", "final_answer", "locals", "rlm_calls", "stderr", "stdout")

    def __init__(
        self,
        stdout: str,
        stderr: str,
        locals: dict[str, Any],
        execution_time: float | None = None,
        rlm_calls: list[RLMChatCompletion] | None = None,
        final_answer: str | None = None,
    ) -> None:
        self.stdout = stdout
        self.stderr = stderr
        self.locals = locals
        self.execution_time = execution_time
        self.rlm_calls: list[RLMChatCompletion] = rlm_calls or []
        self.final_answer = final_answer

    @property
    def llm_calls(self) -> list[RLMChatCompletion]:
        """Alias kept for code that reads the annotated ``rlms`` field name."""
        return self.rlm_calls

    def __repr__(self) -> str:
        return (
            f"REPLResult(stdout={self.stdout!r}, stderr={self.stderr!r}, "
            f"locals=<{len(self.locals)} names>, execution_time={self.execution_time}, "
            f"rlm_calls={len(self.rlm_calls)})"
        )

    def __str__(self) -> str:
        """rlms's layout (``stdout=text`` unquoted); the namespace as its names only,
        since dumping every local can print a whole context."""
        return (
            f"REPLResult(stdout={self.stdout}, stderr={self.stderr}, "
            f"locals=<{len(self.locals)} names>, execution_time={self.execution_time}, "
            f"rlm_calls={len(self.rlm_calls)})"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "stdout": self.stdout,
            "stderr": self.stderr,
            "locals": {k: serialize_value(v) for k, v in self.locals.items()},
            "execution_time": self.execution_time,
            "rlm_calls": [c.to_dict() for c in self.rlm_calls],
            "final_answer": self.final_answer,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> REPLResult:
        return cls(
            stdout=data.get("stdout") or "",
            stderr=data.get("stderr") or "",
            locals=data.get("locals") or {},
            execution_time=data.get("execution_time"),
            rlm_calls=[RLMChatCompletion.from_dict(c) for c in data.get("rlm_calls") or []],
            final_answer=data.get("final_answer"),
        )


@dataclass
class CodeBlock:
    code: str
    result: REPLResult

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "result": self.result.to_dict()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CodeBlock:
        return cls(
            code=data.get("code") or "", result=REPLResult.from_dict(data.get("result") or {})
        )


@dataclass
class RLMIteration:
    prompt: Any
    response: str
    code_blocks: list[CodeBlock]
    final_answer: str | None = None
    iteration_time: float | None = None
    # With ``output_schema``: why this iteration's answer was refused (a repair follows).
    schema_errors: list[str] | None = None

    def to_dict(self) -> dict[str, Any]:
        out = {
            "prompt": self.prompt,
            "response": self.response,
            "code_blocks": [b.to_dict() for b in self.code_blocks],
            "final_answer": self.final_answer,
            "iteration_time": self.iteration_time,
        }
        if self.schema_errors is not None:
            out["schema_errors"] = list(self.schema_errors)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RLMIteration:
        return cls(
            prompt=data.get("prompt"),
            response=data.get("response") or "",
            code_blocks=[CodeBlock.from_dict(b) for b in data.get("code_blocks") or []],
            final_answer=data.get("final_answer"),
            iteration_time=data.get("iteration_time"),
            schema_errors=data.get("schema_errors"),
        )


@dataclass
class RLMMetadata:
    """The configuration of a run, as logged at its start."""

    root_model: str
    max_depth: int
    max_iterations: int
    backend: str
    backend_kwargs: dict[str, Any]
    environment_type: str
    environment_kwargs: dict[str, Any]
    other_backends: list[str] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "root_model": self.root_model,
            "max_depth": self.max_depth,
            "max_iterations": self.max_iterations,
            "backend": self.backend,
            "backend_kwargs": {k: serialize_value(v) for k, v in self.backend_kwargs.items()},
            "environment_type": self.environment_type,
            "environment_kwargs": {
                k: serialize_value(v) for k, v in self.environment_kwargs.items()
            },
            "other_backends": self.other_backends,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RLMMetadata:
        return cls(
            root_model=data.get("root_model") or "unknown",
            max_depth=data.get("max_depth") or 1,
            max_iterations=data.get("max_iterations") or 0,
            backend=data.get("backend") or "unknown",
            backend_kwargs=data.get("backend_kwargs") or {},
            environment_type=data.get("environment_type") or "local",
            environment_kwargs=data.get("environment_kwargs") or {},
            other_backends=data.get("other_backends"),
        )


def _chunk_length(chunk: Any) -> int:
    if isinstance(chunk, str):
        return len(chunk)
    try:
        return len(json.dumps(chunk, default=str))
    except Exception:
        return len(repr(chunk))


class QueryMetadata:
    """Shape of a context payload: its type and the length of each chunk."""

    def __init__(self, prompt: Any) -> None:
        self.context_lengths: list[int]
        if isinstance(prompt, str):
            self.context_type = "str"
            self.context_lengths = [len(prompt)]
        elif isinstance(prompt, dict):
            self.context_type = "dict"
            self.context_lengths = [_chunk_length(v) for v in prompt.values()]
        elif isinstance(prompt, list | tuple):
            self.context_type = "list"
            if not prompt:
                self.context_lengths = [0]
            elif isinstance(prompt[0], dict) and "content" in prompt[0]:
                self.context_lengths = [
                    len(str(m.get("content", ""))) if isinstance(m, dict) else _chunk_length(m)
                    for m in prompt
                ]
            else:
                self.context_lengths = [_chunk_length(c) for c in prompt]
        elif prompt is None:
            raise ValueError("Invalid prompt type: NoneType (a context payload is required)")
        else:
            self.context_type = type(prompt).__name__
            self.context_lengths = [_chunk_length(prompt)]
        self.context_total_length = sum(self.context_lengths)

    def to_dict(self) -> dict[str, Any]:
        return {
            "context_type": self.context_type,
            "context_lengths": self.context_lengths,
            "context_total_length": self.context_total_length,
        }

    def __repr__(self) -> str:
        return (
            f"QueryMetadata(type={self.context_type}, chunks={len(self.context_lengths)}, "
            f"total={self.context_total_length})"
        )
