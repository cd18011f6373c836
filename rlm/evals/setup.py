"""A run's settings from a config file plus overrides (command-line flags), and defaults.

Precedence: an override > the ``--config`` file > the defaults below. Without any model
the run uses the embedded SmolLM2-135M (llama.cpp, ``code_prefill`` so it writes REPL
code) on a tiny suite, and says its scores mean nothing; ``self_check`` swaps the model
for the reference solver (``rlm.evals.oracle``). REPL code runs in ``sandbox`` where
bubblewrap exists, else in ``local`` (with a notice saying so).
"""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass, field
from typing import Any

from rlm.evals.config import EvalConfig

EMBEDDED = {"code_prefill": "```repl\n"}
ORACLE = "rlm.evals.oracle:respond"
ALL_FAMILIES = ["niah", "oolong", "pairs", "codeqa"]
SUITES: dict[str, dict[str, Any]] = {
    "model": {"families": ALL_FAMILIES, "lengths": ["8k", "32k", "128k"], "seeds": [0, 1, 2],
              "methods": None},
    "embedded": {"families": ["niah", "oolong"], "lengths": ["2k"], "seeds": [0],
                 "methods": ["base", "rlm-d1"]},
    "self_check": {"families": ALL_FAMILIES, "lengths": ["1k", "8k"], "seeds": [0, 1],
                   "methods": ["base", "rlm-d1", "rlm-d2"]},
}  # fmt: skip
LOCAL_KEYS = ("concurrency", "max_inflight_llm_calls")
RAY_KEYS = ("address", "num_cpus", "task_cpus", "max_pending", "max_inflight_llm_calls")


@dataclass
class ModelSetup:
    """The model every method uses and the RLM defaults of the rlm/rlms methods."""

    backend: str
    backend_kwargs: dict[str, Any]
    rlm: dict[str, Any]
    kind: str  # "model", "embedded" or "self_check": which default suite applies
    notices: list[str] = field(default_factory=list)

    @property
    def suite_defaults(self) -> dict[str, Any]:
        return SUITES[self.kind]


def default_environment() -> tuple[str, str | None]:
    """``sandbox`` where bubblewrap exists, else ``local`` and a notice saying so."""
    if sys.platform.startswith("linux") and shutil.which("bwrap"):
        return "sandbox", None
    return "local", (
        "bubblewrap not found: REPL code runs in the 'local' environment (in-process, not isolated)"
    )


def resolve_model(
    config: EvalConfig,
    *,
    backend: str | None = None,
    model: str | None = None,
    base_url: str | None = None,
    backend_kwargs: dict[str, Any] | None = None,
    environment: str | None = None,
    limits: dict[str, Any] | None = None,
    self_check: bool = False,
) -> ModelSetup:
    """The model and RLM defaults (see the module docstring); ``limits`` are RLM
    arguments such as ``max_iterations``, ``max_timeout``, ``max_budget`` (None: unset)."""
    chosen = backend or config.backend
    kwargs = dict(config.backend_kwargs) if chosen == config.backend else {}
    kind = "model"
    if self_check:
        chosen, kwargs, kind = "scripted", {"responder": ORACLE}, "self_check"
    elif chosen is None:
        chosen, kwargs, kind = "llama_cpp", dict(EMBEDDED), "embedded"
    kwargs.update(backend_kwargs or {})
    if model:
        kwargs["model_name"] = model
    if base_url:
        kwargs["base_url"] = base_url
    rlm = dict(config.rlm)
    notices = []
    if environment:
        rlm["environment"] = environment
    elif "environment" not in rlm:
        rlm["environment"], notice = default_environment()
        notices += [notice] if notice else []
    if kind == "embedded":
        rlm.setdefault("max_iterations", 4)  # a CPU-only tiny model: keep the run short
    rlm.update({k: v for k, v in (limits or {}).items() if v is not None})
    return ModelSetup(str(chosen), kwargs, rlm, kind, notices)


def resolve_engine(
    config: EvalConfig,
    *,
    engine: str | None = None,
    embedded: bool = False,
    **overrides: Any,
) -> tuple[str, dict[str, Any]]:
    """The engine's name and options: ``overrides`` (None: unset) over ``[engine]``."""
    settings = {k: v for k, v in config.engine.items() if k != "name"}
    settings.update({k: v for k, v in overrides.items() if v is not None})
    name = engine or str(config.engine.get("name", "local"))
    if name == "local":
        options = {k: settings[k] for k in LOCAL_KEYS if k in settings}
        options.setdefault("concurrency", 1 if embedded else 4)  # one embedded model: serial
        return name, options
    return name, {k: settings[k] for k in RAY_KEYS if k in settings}
