"""The MCP tools, on the official ``mcp`` SDK (``MCPServer`` in mcp 2, ``FastMCP`` in 1).

Tools (all answers are JSON objects):

- ``rlm_query(question, context?, context_path?, session_id?, schema?)``: answer
  ``question`` over the context; with ``session_id`` the session's earlier contexts and
  variables remain; with ``schema`` (a JSON Schema) the answer is JSON matching it,
  also returned as ``parsed``.
- ``add_context(session_id, context? | context_path?)``: queue a context for the
  session's next ``rlm_query``.
- ``list_sessions()``: the sessions this server holds.
- ``get_trajectory(session_id, turn?)``: a query's trajectory (``run_metadata`` and
  ``iterations``, the ``RLMLogger`` format); ``turn`` counts from 0, default the last.
"""

from __future__ import annotations

import importlib
from typing import Any

from rlm.base.redact import redact_text
from rlm.mcp_server.paths import ContextPolicy
from rlm.mcp_server.state import Sessions, ToolInputError
from rlm.server.sessions import RLMFactory

INSTRUCTIONS = (
    "rlmx answers questions over contexts of any length with a Recursive Language Model: "
    "the context lives in a Python REPL the model programs against. Pass long text as "
    "context_path (a file, directory or glob on this machine) rather than inline when you "
    "can (it must lie under the server's allowed roots, by default its working "
    "directory). Reuse a session_id to ask follow-up questions over the same material."
)


def _sdk() -> tuple[Any, type[Exception]]:
    """The server class and its tool-error class, for either SDK major version
    (imported by name: the two versions' modules differ, and neither is always there)."""
    try:
        server = importlib.import_module("mcp.server.mcpserver")
        errors = importlib.import_module("mcp.server.mcpserver.exceptions")
        return server.MCPServer, errors.ToolError
    except ImportError:  # mcp 1.x
        server = importlib.import_module("mcp.server.fastmcp")
        errors = importlib.import_module("mcp.server.fastmcp.exceptions")
        return server.FastMCP, errors.ToolError


def build_server(
    factory: RLMFactory, sessions: Sessions | None = None, policy: ContextPolicy | None = None
) -> Any:
    """An MCP server whose tools run RLMs built by ``factory``; ``policy`` says where
    ``context_path`` may read (default: the working directory)."""
    server_cls, tool_error = _sdk()
    state = sessions or Sessions(factory, policy=policy)
    server = server_cls(name="rlmx", instructions=INSTRUCTIONS)

    async def guarded(call: Any) -> dict[str, Any]:
        try:
            return dict(await call)
        except ToolInputError as exc:
            raise tool_error(str(exc)) from None
        except tool_error:
            raise
        except Exception as exc:  # e.g. a provider error naming its URL: no credentials
            raise tool_error(redact_text(f"{type(exc).__name__}: {exc}")) from None

    async def rlm_query(
        question: str,
        context: str | None = None,
        context_path: str | None = None,
        session_id: str | None = None,
        schema: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Answer `question` over a context with a Recursive Language Model.

        The context is `context` (text) or `context_path` (a file, directory or glob
        under the server's allowed roots);
        without either, the question itself (plus any contexts queued with add_context).
        With `session_id`, the session keeps earlier contexts and REPL variables.
        Returns {answer, session_id, turn, ...}; `stopped_by` is set when a limit cut
        the run short (the answer is then partial). With `schema` (a JSON Schema object)
        the answer is JSON that matches it, and `parsed` holds it as a value.
        """
        return await guarded(state.query(question, context, context_path, session_id, schema))

    async def add_context(
        session_id: str, context: str | None = None, context_path: str | None = None
    ) -> dict[str, Any]:
        """Queue a context (`context` text or `context_path`) for the session's next
        rlm_query, creating the session if needed. Returns how many are queued."""
        return await guarded(state.add_context(session_id, context, context_path))

    async def list_sessions() -> dict[str, Any]:
        """The sessions this server holds: id, queries run, contexts queued, idle time."""
        return {"sessions": state.list()}

    async def get_trajectory(session_id: str, turn: int | None = None) -> dict[str, Any]:
        """The trajectory of one rlm_query of a session (turn counts from 0; default
        the last): run_metadata and iterations with replies, code and output."""

        async def lookup() -> dict[str, Any]:
            return state.trajectory(session_id, turn)

        return await guarded(lookup())

    for tool in (rlm_query, add_context, list_sessions, get_trajectory):
        server.add_tool(tool)  # name and description come from the function
    server.rlm_sessions = state  # for tests and embedding
    return server


def run_stdio(factory: RLMFactory, policy: ContextPolicy | None = None) -> None:
    """Serve over stdin/stdout until the client disconnects."""
    server = build_server(factory, policy=policy)
    try:
        server.run("stdio")
    finally:
        server.rlm_sessions.close()
