"""``rlm serve``: the OpenAI-compatible HTTP server (``rlmx[server]``).

Start-up, in order: settings, the port bound (a port in use is one line, before any
token is printed), the model's client built once (the embedded model is loaded now),
then the banner (URL, token, environment) and the server. While serving, stderr gets
one line per request (method, path, status, duration, session, tokens; never the
token, a header or a body) and a line when the model provider fails. ``GET /health``
answers without a token. Exit codes (``rlm.cli.failures``): 0 stopped, 1 the server
failed, 2 bad usage or setup (a port in use, a missing extra or API key).
"""

from __future__ import annotations

import argparse
import importlib.util
import ipaddress
import os
import secrets
import socket
import sys
from typing import IO, TYPE_CHECKING, Any

from rlm.base.errors import RLMError
from rlm.base.redact import redact_text
from rlm.cli.config import CLIUsageError
from rlm.cli.factory import SettingsFactory, environment_notice, exposed_warning, from_args
from rlm.cli.failures import EXIT_ERROR, EXIT_OK, EXIT_USAGE
from rlm.cli.serve_start import bind_listener, check_model, log_to
from rlm.cli.settings import (
    NON_NEGATIVE_FLOAT,
    PORT,
    POSITIVE_FLOAT,
    POSITIVE_INT,
    Settings,
    add_model_options,
)

if TYPE_CHECKING:
    from rlm.sessions.store import SessionStore

MIB = 1024 * 1024
EXAMPLES = """examples:
  rlm serve                                   # prints a generated token
  RLM_SERVER_TOKEN=s3cret rlm serve --port 9000 --base-url http://127.0.0.1:8080/v1 --model qwen
  curl http://127.0.0.1:8000/health            # no token needed: {"status": "ok"}

  from openai import OpenAI
  client = OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="<token>")
  client.chat.completions.create(model="rlm", messages=[{"role": "user", "content": "..."}],
                                 extra_body={"session_id": "notes"})
"""


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "serve",
        help="run the OpenAI-compatible HTTP server",
        description="Serve POST /v1/chat/completions (streaming too), GET /v1/models and "
        "GET /health (no token), with one log line per request on stderr. "
        "Needs the server extra: pip install 'rlmx[server]'.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    g = p.add_argument_group("server (flags > RLM_* env vars > [serve] in rlm.toml)")
    g.add_argument("--host", help="interface to bind (default: 127.0.0.1)")
    g.add_argument("--port", type=PORT, help="default: 8000; 0 picks a free port")
    g.add_argument(
        "--token",
        help="the bearer token clients must send (default: $RLM_SERVER_TOKEN, else a "
        "generated one, printed at start); prefer the env var: flags show in ps",
    )
    g.add_argument("--max-concurrency", type=POSITIVE_INT,
                   help="completions at once; more get 429 (default: 4)")  # fmt: skip
    g.add_argument("--max-body-mb", type=POSITIVE_FLOAT, help="request size limit (default: 32)")
    g.add_argument(
        "--max-sessions",
        type=POSITIVE_INT,
        help="sessions kept in memory (default: 64, or --max-concurrency if that is more: "
        "every running request may hold a session of its own)",
    )
    g.add_argument("--session-ttl", type=POSITIVE_FLOAT, metavar="SECONDS",
                   help="idle sessions are closed after this long (default: 3600)")  # fmt: skip
    g.add_argument(
        "--header-timeout",
        type=POSITIVE_FLOAT,
        metavar="SECONDS",
        help="close a connection whose request headers take longer (default: 10)",
    )
    g.add_argument(
        "--idle-timeout",
        type=POSITIVE_FLOAT,
        metavar="SECONDS",
        help="close a connection whose request body stalls this long (default: 30)",
    )
    g.add_argument(
        "--max-connections",
        type=POSITIVE_INT,
        help="open connections at most; more get 503 and are closed (default: 256)",
    )
    g.add_argument("--session-grace", type=NON_NEGATIVE_FLOAT, metavar="SECONDS",
                   help="a session used this recently is never evicted for a new one; a new "
                   "session waits, then gets 429 (default: 120 in memory, 0 with "
                   "--session-store, where eviction loses nothing)")  # fmt: skip
    g.add_argument("--body-timeout", type=POSITIVE_FLOAT, metavar="SECONDS",
                   help="a request's whole body must arrive within this (default: 30)")  # fmt: skip
    g.add_argument("--keep-alive", type=POSITIVE_INT, metavar="SECONDS",
                   help="close an idle keep-alive connection after this (default: 5)")  # fmt: skip
    g.add_argument("--shutdown-timeout", type=NON_NEGATIVE_FLOAT, metavar="SECONDS",
                   help="on SIGTERM/Ctrl-C, requests in flight get this long to finish, "
                   "then are cancelled (default: 10)")  # fmt: skip
    g.add_argument("--session-store", metavar="PATH|URL",
                   help="keep sessions in this store: they survive eviction and restarts "
                   "(default: in memory only; see 'rlm sessions')")  # fmt: skip
    add_model_options(p)
    p.set_defaults(handler=serve)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def build_app(settings: Settings, factory: SettingsFactory, token: str) -> Any:
    from rlm.server import create_app
    from rlm.server.sessions import (
        DEFAULT_GRACE,
        DEFAULT_MAX_SESSIONS,
        InMemorySessionRegistry,
        StoreBackedSessionRegistry,
    )

    store = factory.session_store
    grace = settings.session_grace
    max_sessions = settings.max_sessions or max(DEFAULT_MAX_SESSIONS, settings.max_concurrency)
    registry: Any = (
        StoreBackedSessionRegistry(store, max_sessions, settings.session_ttl, grace=grace or 0.0)
        if store
        else InMemorySessionRegistry(
            max_sessions,
            settings.session_ttl,
            grace=DEFAULT_GRACE if grace is None else grace,
        )
    )
    return create_app(
        factory,
        token=token,
        model_ids=factory.model_ids,
        sessions=registry,
        max_body_bytes=int(settings.max_body_mb * MIB),
        max_concurrency=settings.max_concurrency,
        body_timeout=settings.body_timeout,
    )


def serve(args: argparse.Namespace, err: IO[str] | None = None) -> int:
    err = err or sys.stderr
    if not all(importlib.util.find_spec(m) for m in ("starlette", "uvicorn")):
        print("rlm: error: rlm serve needs the server extra: pip install 'rlmx[server]'",
              file=err)  # fmt: skip
        return EXIT_USAGE
    try:
        settings, setup = from_args(args)
        listener = bind_listener(settings.host, settings.port)
    except CLIUsageError as exc:
        print(f"rlm: error: {redact_text(str(exc))}", file=err, flush=True)
        return EXIT_USAGE
    with listener:
        if setup.notice:
            print(setup.notice, file=err, flush=True)
        failed = check_model(setup, err)
        if failed is not None:
            return failed
        spec = getattr(args, "session_store", None)
        store = _open_store(spec, err) if spec else None
        if spec and store is None:
            return EXIT_USAGE
        # One store for every session (a PostgreSQL store is a connection pool) and one
        # governor for the upstream, so a 429 paces every session's calls together.
        factory = SettingsFactory(settings, setup, store, shared_governor=True)
        try:
            return _serve(args, settings, factory, listener, err)
        finally:
            if store is not None:
                store.close()


def _open_store(spec: str, err: IO[str]) -> SessionStore | None:
    """Open ``--session-store`` at start-up, so a path that cannot hold a store is one
    line now rather than a 500 on the first request; None (and the line) if it fails."""
    from rlm.sessions.store import open_store

    try:
        return open_store(spec)
    except (OSError, RLMError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        shown = redact_text(f"--session-store {spec}: {reason}")
        print(f"rlm: error: {shown}", file=err, flush=True)
        return None


def _serve(
    args: argparse.Namespace,
    settings: Settings,
    factory: SettingsFactory,
    listener: socket.socket,
    err: IO[str],
) -> int:
    given = args.token or os.environ.get("RLM_SERVER_TOKEN")
    token = given or secrets.token_urlsafe(24)
    app = build_app(settings, factory, token)

    port = listener.getsockname()[1]  # --port 0: the one the system picked
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    url = f"http://{host}:{port}/v1"
    print(f"rlm: serving {url} · models: {', '.join(factory.model_ids)}", file=err)
    if given:
        print("rlm: clients authenticate with the token you gave", file=err)
    else:  # generated: the only way the user learns it
        print(f"rlm: token: {token}  (set RLM_SERVER_TOKEN to choose one)", file=err)
    print(environment_notice(settings.env, "this server's process"), file=err)
    if not _is_loopback(settings.host):
        print(f"rlm: warning: {settings.host} is reachable from other machines; anyone "
              "with the token can spend your model budget", file=err)  # fmt: skip
        loud = exposed_warning(settings.env, settings.host)
        if loud:
            print(loud, file=err)
    err.flush()
    log_to(err)

    import uvicorn

    from rlm.server.transport import ConnectionLimits, uvicorn_config

    limits = ConnectionLimits(
        settings.header_timeout,
        settings.idle_timeout,
        settings.max_connections,
        settings.keep_alive,
    )
    config = uvicorn_config(
        app,
        settings.host,
        port,
        limits,
        log_level="warning",
        timeout_graceful_shutdown=settings.shutdown_timeout,
    )
    server = uvicorn.Server(config)
    server.run(sockets=[listener])
    return EXIT_OK if server.started else EXIT_ERROR
