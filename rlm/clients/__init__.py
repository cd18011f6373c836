"""Model clients: ``get_client(backend, backend_kwargs)`` and the ``BaseLM`` contract."""

from rlm.clients.base_lm import DEFAULT_TIMEOUT, BaseLM, LMResult, ProviderLM, TrackedLM
from rlm.clients.registry import BackendSpec, backend_names, get_client, register_backend

__all__ = [
    "DEFAULT_TIMEOUT",
    "BackendSpec",
    "BaseLM",
    "LMResult",
    "ProviderLM",
    "TrackedLM",
    "backend_names",
    "get_client",
    "register_backend",
]
