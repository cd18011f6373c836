"""``rlm mcp``: the MCP server over stdio, for agents that speak MCP."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from typing import IO, Any

from rlm.base.redact import redact_text
from rlm.cli.config import CLIUsageError
from rlm.cli.factory import SettingsFactory, environment_notice, from_args
from rlm.cli.settings import add_model_options

EXAMPLES = """examples:
  rlm mcp
  claude mcp add rlm -- rlm mcp --base-url http://127.0.0.1:8080/v1 --model qwen
  rlm mcp --context-root ~/papers --context-root ~/notes --env sandbox

tools: rlm_query(question, context?, context_path?, session_id?), add_context(session_id,
context? | context_path?), list_sessions(), get_trajectory(session_id, turn?)

context_path reads only regular files under the context roots (default: the directory
the server starts in), at most --max-context-mb per call.
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
    g = p.add_argument_group("context_path (flags > RLM_MCP_* env vars > [mcp] in rlm.toml)")
    g.add_argument(
        "--context-root",
        dest="context_roots",
        action="append",
        metavar="DIR",
        help="a directory context_path may read under (repeatable; replaces the default, "
        "the working directory; env RLM_MCP_CONTEXT_ROOTS, separated by ':')",
    )
    g.add_argument(
        "--max-context-mb",
        type=float,
        metavar="MB",
        help="most a context_path may read per call (default: 100; env RLM_MCP_MAX_CONTEXT_MB)",
    )
    add_model_options(p)
    p.set_defaults(handler=mcp)


def mcp(args: argparse.Namespace, err: IO[str] | None = None) -> int:
    err = err or sys.stderr  # stdout is the MCP wire: nothing else may go there
    if importlib.util.find_spec("mcp") is None:
        print("rlm: error: rlm mcp needs the mcp extra: pip install 'rlmx[mcp]'", file=err)
        return 2
    from rlm.mcp_server.paths import ContextPolicy

    try:
        settings, setup = from_args(args)
        policy = ContextPolicy.create(settings.context_roots, settings.max_context_mb)
    except (CLIUsageError, ValueError) as exc:
        print(f"rlm: error: {redact_text(str(exc))}", file=err, flush=True)
        return 2
    if setup.notice:
        print(setup.notice, file=err, flush=True)
    print(environment_notice(settings.env, "this MCP server's process"), file=err, flush=True)
    print(f"rlm: context_path reads under {', '.join(policy.roots)} "
          f"(at most {policy.max_mb:g} MB per call)", file=err, flush=True)  # fmt: skip
    from rlm.mcp_server import run_stdio

    run_stdio(SettingsFactory(settings, setup), policy)
    return 0
