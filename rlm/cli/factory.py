"""From resolved ``Settings`` to RLM instances: the one place every command builds them.

``run`` and ``chat`` call the factory directly; ``serve`` and ``mcp`` hand it to their
servers, which only know the ``RLMFactory`` protocol (``rlm.server.sessions``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from rlm.cli.config import BackendChoice, CLIUsageError, choose_backend
from rlm.cli.settings import Settings
from rlm.core.governor import Governor
from rlm.core.governor import shared_governor as governor_for
from rlm.core.rlm import RLM
from rlm.environments import environment_descriptions, environment_is_isolated
from rlm.logger import RLMLogger

if TYPE_CHECKING:
    from rlm.sessions.store import SessionStore


@dataclass(frozen=True)
class ModelSetup:
    """The backend the settings resolve to, and the one-line notice about it, if any."""

    backend: str
    backend_kwargs: dict[str, Any] = field(default_factory=dict)
    max_iterations: int = 30
    notice: str | None = None

    @property
    def label(self) -> str:
        """A short name for the root model: its name, its file's stem or the backend."""
        kwargs = self.backend_kwargs
        if self.backend == "llama_cpp" and not kwargs.get("model_path"):
            return "embedded"  # its model_name (the GGUF's stem) names it in the store
        if kwargs.get("model_name"):
            return str(kwargs["model_name"])
        if kwargs.get("model_path"):
            return os.path.basename(str(kwargs["model_path"])).removesuffix(".gguf")
        return "embedded" if self.backend == "llama_cpp" else self.backend


def environment_notice(env: str, where: str) -> str:
    """One stderr line saying where model-written code runs; ``where`` names this
    process for the ``local`` environment (e.g. "this server's process")."""
    if env == "local":
        return (
            f"rlm: model-written code runs in the 'local' environment: inside {where}, "
            "with its files, network and environment variables (API keys). Use --env "
            "sandbox (or RLM_ENV=sandbox) to isolate it; see docs/security.md."
        )
    isolation = environment_descriptions().get(env, "see docs/security.md")
    return f"rlm: model-written code runs in the '{env}' environment ({isolation})."


def exposed_warning(env: str, host: str) -> str | None:
    """The loud warning for an unisolated environment served beyond loopback, if any."""
    if env not in environment_descriptions() or environment_is_isolated(env):
        return None
    where = "inside this server's process" if env == "local" else "in a kernel running as you"
    return (
        f"rlm: WARNING: {host} accepts connections from other machines, and model-written "
        f"code runs in the '{env}' environment, {where}, without isolation: anyone who "
        "holds the token, or can steer the model through a context, can run any code as "
        "this user, read its files and its API keys. Serve on 127.0.0.1, or use --env "
        "sandbox (see docs/security.md)."
    )


def model_setup(settings: Settings, environ: Mapping[str, str] | None = None) -> ModelSetup:
    """``choose_backend`` on the settings, with ``backend_kwargs`` merged over its choice.
    Raises ``CLIUsageError`` for a setting the user has to fix."""
    choice: BackendChoice = choose_backend(
        settings.backend,
        settings.model,
        settings.base_url,
        settings.api_key_env,
        os.environ if environ is None else environ,
    )
    backend_kwargs = {
        **choice.backend_kwargs,
        **settings.backend_kwargs,
        **({"context_window": settings.context_window} if settings.context_window else {}),
    }
    if choice.backend == "scripted" and not (
        backend_kwargs.get("responses") or backend_kwargs.get("responder")
    ):  # it would fail on its first call, after the run (or the server) had started
        raise CLIUsageError(
            "--backend scripted replies from a script: give it one, e.g. "
            """--backend-kwargs '{"responses": ["FINAL(42)"]}'"""
        )
    return ModelSetup(
        backend=choice.backend,
        backend_kwargs=backend_kwargs,
        max_iterations=settings.max_iterations or choice.max_iterations,
        notice=choice.notice,
    )


class SettingsFactory:
    """Builds RLMs from settings; implements ``rlm.server.sessions.RLMFactory``.

    ``session_id`` set means a persistent session (``context_N``/``history_N`` carry
    over), durable in ``session_store`` when one is given (``rlm.sessions``);
    ``trajectory=True`` attaches an in-memory ``RLMLogger`` (``rlm.logger``), which also
    writes JSONL when ``log_dir`` is set.

    ``shared_governor=True`` (``rlm serve``) gives every RLM it builds the process's one
    governor for the upstream (``rlm.core.governor.shared_governor``, keyed by backend
    and base URL): their call trees share its pacing, so a 429 pauses all of them.
    """

    def __init__(
        self,
        settings: Settings,
        setup: ModelSetup,
        session_store: str | SessionStore | None = None,
        *,
        shared_governor: bool = False,
        cache: Any = None,
    ) -> None:
        self.settings = settings
        self.setup = setup
        self.session_store = session_store
        self.cache = cache  # RLM(cache=...): the sub-call cache (rlm run --cache)
        self.governor: Governor | None = None
        if shared_governor:
            self.governor = governor_for(setup.backend, self.upstream(setup.backend_kwargs))

    @property
    def model_ids(self) -> list[str]:
        return ["rlm", f"rlm:{self.setup.label}"]

    def __call__(self, *, session_id: str | None = None, trajectory: bool = False) -> RLM:
        s = self.settings
        logger = RLMLogger(log_dir=s.log_dir) if (s.log_dir or trajectory) else None
        return RLM(
            backend=self.setup.backend,
            backend_kwargs=dict(self.setup.backend_kwargs),
            environment=s.env,
            max_iterations=self.setup.max_iterations,
            max_depth=s.max_depth,
            max_budget=s.max_budget,
            max_timeout=s.max_timeout,
            max_tokens=s.max_tokens,
            logger=logger,
            persistent=session_id is not None,
            session_id=session_id,
            session_store=self.session_store if session_id is not None else None,
            governor=self.governor,
            cache=self.cache,
        )

    @staticmethod
    def upstream(backend_kwargs: Mapping[str, Any]) -> str | None:
        """The endpoint a backend's settings point at (``base_url``, LiteLLM's
        ``api_base``, Azure's ``azure_endpoint``); ``None`` for the backend's default."""
        for name in ("base_url", "api_base", "azure_endpoint"):
            value = backend_kwargs.get(name)
            if isinstance(value, str) and value:
                return value
        return None


def preload_client(setup: ModelSetup) -> float:
    """Build the root model's client once and close it, so a missing extra or API key
    fails at start-up (``MissingExtraError``, ``MissingAPIKeyError``,
    ``ConfigurationError``) and an embedded GGUF model is loaded now, not by the first
    request (``llama_cpp`` keeps loaded models for the process). Returns the seconds
    it took; no model is called."""
    return build_client_once(setup.backend, setup.backend_kwargs)


def build_client_once(backend: str, backend_kwargs: Mapping[str, Any]) -> float:
    """Build ``backend``'s client and close it, without calling the model; the seconds
    it took. Raises what building raises (``MissingExtraError``, ``MissingAPIKeyError``,
    ``ConfigurationError``)."""
    from rlm.clients import get_client

    started = time.perf_counter()
    get_client(backend, dict(backend_kwargs)).close()
    return time.perf_counter() - started


def from_args(args: Any) -> tuple[Settings, ModelSetup]:
    """Resolve the settings for a parsed command line (raises ``CLIUsageError``)."""
    from rlm.cli.settings import resolve

    settings = resolve(args)
    return settings, model_setup(settings)
