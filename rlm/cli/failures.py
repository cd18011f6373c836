"""How ``rlm`` commands report a failure: one ``rlm: error: ...`` line and an exit code.

Exit codes, the same for every command:

===  ==========================================================================
0    done
1    any other rlmx error (a session in use by another process included)
2    bad usage, input or setup: a flag, a file, an empty context or question, a
     missing optional extra (the line names its ``pip install``), a missing API key,
     a port in use
3    a limit stopped the run (``rlm run``: the partial answer is printed)
4    the model provider failed (unreachable, refused the key, errored)
130  interrupted (Ctrl-C)
141  stdout was closed early (``rlm ... | head``), as for a tool killed by SIGPIPE
===  ==========================================================================

A provider's 401 says which key the CLI sent and how to send another
(``--api-key-env VAR``); a missing API key names the flag rather than Python's
``backend_kwargs``; a locked durable session names the ``rlm`` commands that get
around it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from rlm.base.errors import (
    ClientError,
    ConfigurationError,
    MissingAPIKeyError,
    MissingExtraError,
    ProviderError,
    SessionLockedError,
)
from rlm.base.redact import redact_text
from rlm.cli.settings import Settings
from rlm.logger.verbose import printable

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_LIMIT, EXIT_PROVIDER = 0, 1, 2, 3, 4
EXIT_INTERRUPTED, EXIT_PIPE = 130, 141


def provider_status(exc: BaseException) -> int | None:
    """The provider's HTTP status behind ``exc`` (its cause, or a tripped circuit's)."""
    seen: BaseException | None = exc
    for _ in range(4):
        if seen is None:
            return None
        if isinstance(seen, ProviderError) and seen.status is not None:
            return seen.status
        cause = getattr(seen, "cause", None)
        seen = cause if isinstance(cause, BaseException) else seen.__cause__
    return None


def key_hint(
    settings: Settings,
    backend: str,
    backend_kwargs: Mapping[str, object],
    environ: Mapping[str, str] | None = None,
) -> str:
    """Which key the CLI sent to the provider, and how to send the right one."""
    environ = os.environ if environ is None else environ
    flag = "pass --api-key-env VAR to send the key held in $VAR"
    if settings.api_key_env:
        return (f"the CLI sent the key in ${settings.api_key_env} (--api-key-env); check "
                "that it is the key this server expects")  # fmt: skip
    named = backend_kwargs.get("api_key_env")
    url = backend_kwargs.get("base_url")
    if backend == "openai" or isinstance(named, str):
        from rlm.clients.openai import key_env_for

        var = named if isinstance(named, str) else key_env_for("OPENAI_API_KEY", str(url or ""))
        if var and environ.get(var):
            return f"the CLI sent ${var}; {flag} instead"
        return f"the CLI sent no key (${var} is not set); set it, or {flag}"
    if url:
        return f"the {backend!r} backend sends no key by itself; {flag}"
    return f"check the API key ({flag})"


def locked_message(exc: SessionLockedError, session: str) -> str:
    """A locked session, with the command-line ways around it."""
    holder = getattr(exc, "holder", None)
    who = holder.describe() if holder is not None and hasattr(holder, "describe") else None
    name = printable(session)
    return printable(
        f"session {session!r} is in use by {who or 'another process'}; one process "
        "writes a session at a time. Quit the other rlm chat (or wait for it), read the "
        f"session with 'rlm sessions show {name}', or copy it with 'rlm sessions fork "
        f"{name} NEW' and use --session NEW"
    )


def describe(exc: BaseException, hint: str | None = None) -> tuple[int, str]:
    """The exit code and the (redacted) message for an error a run raised; ``hint``
    (``key_hint``) is added when the provider refused the key (HTTP 401)."""
    if isinstance(exc, MissingExtraError):
        return EXIT_USAGE, redact_text(str(exc))
    if isinstance(exc, MissingAPIKeyError):
        return EXIT_USAGE, (
            f"the '{exc.backend}' backend needs an API key: set {exc.env_var}, or pass "
            "--api-key-env VAR to send the key held in $VAR"
        )
    if isinstance(exc, ConfigurationError):
        return EXIT_USAGE, redact_text(str(exc))
    if isinstance(exc, ClientError):
        message = redact_text(str(exc))
        if hint and provider_status(exc) == 401:
            message = f"{message.rstrip('. ')}. {hint[:1].upper()}{hint[1:]}"
        return EXIT_PROVIDER, message
    return EXIT_ERROR, redact_text(f"{type(exc).__name__}: {exc}")
