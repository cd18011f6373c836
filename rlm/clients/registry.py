"""The one list of backend names.

Built-in backends and plugins register through the same door: ``register_backend``.
Plugins are discovered from the ``rlmx.clients`` entry-point group; each entry point
names a callable that receives this module's ``register_backend``.

A backend is a factory path plus presets (default ``base_url``, the environment variable
holding the key), so one OpenAI-compatible client serves OpenAI, vLLM, OpenRouter,
Vercel, llama.cpp servers and any other compatible endpoint without an if/elif chain.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

from rlm.base.errors import ConfigurationError
from rlm.clients.base_lm import BaseLM


@dataclass(frozen=True)
class BackendSpec:
    """How to build one backend's client."""

    name: str
    factory: str | Callable[..., BaseLM]  # "module:Class" (imported lazily) or a callable
    description: str = ""
    defaults: dict[str, Any] = field(default_factory=dict)
    required: tuple[str, ...] = ()

    def load(self) -> Callable[..., BaseLM]:
        if callable(self.factory):
            return self.factory
        module_name, _, attr = self.factory.partition(":")
        loaded: Callable[..., BaseLM] = getattr(importlib.import_module(module_name), attr)
        return loaded


_BACKENDS: dict[str, BackendSpec] = {}
_lock = threading.Lock()
_plugins_loaded = False


def register_backend(spec: BackendSpec, *, replace: bool = False) -> None:
    """Add a backend. Raises if the name is taken, unless ``replace`` is set."""
    with _lock:
        if spec.name in _BACKENDS and not replace:
            raise ConfigurationError(f"Backend {spec.name!r} is already registered")
        _BACKENDS[spec.name] = spec


def _load_plugins() -> None:
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    for ep in entry_points(group="rlmx.clients"):
        try:
            ep.load()(register_backend)
        except Exception as exc:  # a broken plugin must not break the core
            import warnings

            warnings.warn(f"rlmx: client plugin {ep.name!r} failed to load: {exc}", stacklevel=2)


def backend_names() -> list[str]:
    """Every registered backend name, sorted."""
    _load_plugins()
    return sorted(_BACKENDS)


def get_backend(name: str) -> BackendSpec:
    _load_plugins()
    try:
        return _BACKENDS[name]
    except KeyError:
        raise ConfigurationError(
            f"Unknown backend: {name!r}. Supported backends: {backend_names()}"
        ) from None


def get_client(backend: str, backend_kwargs: dict[str, Any] | None = None) -> BaseLM:
    """Build the client for ``backend`` from ``backend_kwargs`` (never mutated)."""
    spec = get_backend(backend)
    kwargs = {**spec.defaults, **(backend_kwargs or {})}
    missing = [k for k in spec.required if not kwargs.get(k)]
    if missing:
        raise ConfigurationError(
            f"The {backend!r} backend needs {', '.join(missing)} in backend_kwargs "
            f"(for example base_url='http://127.0.0.1:8000/v1')."
        )
    return spec.load()(**kwargs)


_OPENAI = "rlm.clients.openai:OpenAIClient"

for _spec in (
    BackendSpec("openai", _OPENAI, "OpenAI (OPENAI_API_KEY)"),
    BackendSpec(
        "openai_compatible",
        _OPENAI,
        "any OpenAI-compatible server (base_url required)",
        defaults={"api_key_env": None},
        required=("base_url",),
    ),
    BackendSpec(
        "vllm", _OPENAI, "vLLM server (base_url required)", {"api_key_env": None}, ("base_url",)
    ),
    BackendSpec(
        "openrouter",
        _OPENAI,
        "OpenRouter (OPENROUTER_API_KEY)",
        {"base_url": "https://openrouter.ai/api/v1", "api_key_env": "OPENROUTER_API_KEY"},
    ),
    BackendSpec(
        "vercel",
        _OPENAI,
        "Vercel AI Gateway (AI_GATEWAY_API_KEY)",
        {"base_url": "https://ai-gateway.vercel.sh/v1", "api_key_env": "AI_GATEWAY_API_KEY"},
    ),
    BackendSpec("anthropic", "rlm.clients.anthropic:AnthropicClient", "Anthropic"),
    BackendSpec("gemini", "rlm.clients.gemini:GeminiClient", "Google Gemini"),
    BackendSpec("azure_openai", "rlm.clients.azure_openai:AzureOpenAIClient", "Azure OpenAI"),
    BackendSpec("portkey", "rlm.clients.portkey:PortkeyClient", "Portkey gateway"),
    BackendSpec("litellm", "rlm.clients.litellm:LiteLLMClient", "LiteLLM (any provider)"),
    BackendSpec("llama_cpp", "rlm.clients.llama_cpp:LlamaCppClient", "embedded GGUF model"),
    BackendSpec("scripted", "rlm.clients.scripted:ScriptedLM", "scripted replies, for tests"),
):
    register_backend(_spec)
