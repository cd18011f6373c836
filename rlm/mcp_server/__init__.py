"""An MCP server for RLMs over stdio (the ``mcp`` extra); ``rlm mcp`` runs it.

It is named ``mcp_server`` because the official SDK owns the import name ``mcp``.
``rlm.mcp_server.state`` holds the tools' logic and needs no SDK; ``build_server``
and ``run_stdio`` import the SDK when called.
"""

from __future__ import annotations

from typing import Any

from rlm.mcp_server.paths import ContextPolicy
from rlm.server.sessions import RLMFactory


def build_server(factory: RLMFactory, policy: ContextPolicy | None = None) -> Any:
    """The MCP server (see ``rlm.mcp_server.server``); ``policy`` confines
    ``context_path`` (default: the working directory, ``rlm.mcp_server.paths``)."""
    from rlm.mcp_server.server import build_server as build

    return build(factory, policy=policy)


def run_stdio(factory: RLMFactory, policy: ContextPolicy | None = None) -> None:
    """Serve the tools over stdin/stdout until the client disconnects."""
    from rlm.mcp_server.server import run_stdio as run

    run(factory, policy)


__all__ = ["ContextPolicy", "build_server", "run_stdio"]
