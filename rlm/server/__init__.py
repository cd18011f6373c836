"""An OpenAI-compatible HTTP server for RLMs (the ``server`` extra: Starlette, uvicorn).

    from rlm.server import create_app
    app = create_app(rlm_factory, token="...")   # an ASGI app; ``rlm serve`` runs it

``rlm.server.client`` (``iter_events``) and ``rlm.server.sessions`` need no extra, so
this package imports Starlette only when ``create_app`` is first used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rlm.server.app import create_app

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from rlm.server.app import create_app

        return create_app
    raise AttributeError(f"module 'rlm.server' has no attribute {name!r}")
