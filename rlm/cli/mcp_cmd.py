"""``rlm mcp``: the MCP server over stdio, for agents that speak MCP."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from typing import IO, Any

from rlm.cli.config import CLIUsageError
from rlm.cli.factory import SettingsFactory, from_args
from rlm.cli.settings import add_model_options

EXAMPLES = """examples:
  rlm mcp
  claude mcp add rlm -- rlm mcp --base-url http://127.0.0.1:8080/v1 --model qwen

tools: rlm_query(question, context?, context_path?, session_id?), add_context(session_id,
context? | context_path?), list_sessions(), get_trajectory(session_id, turn?)
"""


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "mcp",
        help="run the MCP server (stdio)",
        description="Serve rlm_query, add_context, list_sessions and get_trajectory over "
        "MCP's stdio transport. Needs the mcp extra: pip install 'rlmx[mcp]'.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_model_options(p)
    p.set_defaults(handler=mcp)


def mcp(args: argparse.Namespace, err: IO[str] | None = None) -> int:
    err = err or sys.stderr  # stdout is the MCP wire: nothing else may go there
    if importlib.util.find_spec("mcp") is None:
        print("rlm: error: rlm mcp needs the mcp extra: pip install 'rlmx[mcp]'", file=err)
        return 2
    try:
        settings, setup = from_args(args)
    except CLIUsageError as exc:
        print(f"rlm: error: {exc}", file=err, flush=True)
        return 2
    if setup.notice:
        print(setup.notice, file=err, flush=True)
    from rlm.mcp_server import run_stdio

    run_stdio(SettingsFactory(settings, setup))
    return 0
