"""Model clients: ``get_client(backend, backend_kwargs)`` and the ``BaseLM`` contract.

As with ``rlms``, importing this package loads a ``.env`` file (the nearest one from the
working directory up) into ``os.environ`` when python-dotenv is installed
(``pip install 'rlmx[dotenv]'``); variables already set win. ``RLM_NO_DOTENV=1`` turns
this off.
"""

import os

from rlm.clients.base_lm import (
    DEFAULT_TIMEOUT,
    BaseLM,
    CallPurpose,
    LMResult,
    ProviderLM,
    TrackedLM,
)
from rlm.clients.registry import BackendSpec, backend_names, get_client, register_backend

__all__ = [
    "DEFAULT_TIMEOUT",
    "BackendSpec",
    "BaseLM",
    "CallPurpose",
    "LMResult",
    "ProviderLM",
    "TrackedLM",
    "backend_names",
    "get_client",
    "register_backend",
]


def _load_dotenv() -> None:
    if os.environ.get("RLM_NO_DOTENV", "").strip().lower() in ("1", "true", "yes"):
        return
    try:
        from dotenv import find_dotenv, load_dotenv
    except ImportError:
        return
    path = find_dotenv(usecwd=True)
    if path:
        load_dotenv(path, override=False)


_load_dotenv()
