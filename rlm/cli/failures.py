"""How ``rlm`` commands report a failure: one ``rlm: error: ...`` line and an exit code.

Exit codes, the same for every command:

===  ==========================================================================
0    done
1    any other rlmx error (a session in use by another process included)
2    bad usage, input or setup: a flag, a file, an empty context or question, a
     missing optional extra (the line names its ``pip install``), a missing API key,
     a port in use, a session or session store that does not exist, an environment
     that cannot start (no Docker daemon, no bubblewrap: the line names the fix)
3    a limit stopped the run (``rlm run``: the partial answer is printed)
4    the model provider failed (unreachable, refused the key, errored)
130  interrupted (Ctrl-C)
141  stdout was closed early (``rlm ... | head``), as for a tool killed by SIGPIPE
===  ==========================================================================

A provider's 401 says which key the CLI sent and how to send another
(``--api-key-env VAR``); a missing API key names the flag rather than Python's
``backend_kwargs``; a locked durable session names the ``rlm`` commands that get
around it (with the ``--store`` the user passed). No line names an internal class such
as ``EnvironmentError_``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

from rlm.base.errors import (
    ClientError,
    ConfigurationError,
    EnvironmentError_,
    MissingAPIKeyError,
    MissingExtraError,
    ProviderError,
    SessionLockedError,
    WorkerCrashedError,
    WorkerTimeoutError,
)
from rlm.base.redact import redact_text
from rlm.cli.settings import Settings
from rlm.logger.verbose import one_line, printable

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


_SHELL_SAFE = re.compile(r"[\w@%+=:,./~-]+")


def shell_word(text: str) -> str:
    """``text`` as one shell word: bare when it is safe, else in double quotes (the
    commands a message names are themselves in single quotes)."""
    if _SHELL_SAFE.fullmatch(text):
        return text
    return '"' + re.sub(r'(["\\$`])', r"\\\1", text) + '"'


def store_flag(store: str | None) -> str:
    """`` --store PATH`` for a command line the user can copy (empty for the default
    store); a URL's credentials are never shown (``***``: put the password back)."""
    if not store:
        return ""
    return f" --store {shell_word(redact_text(str(store)))}"


def locked_message(exc: SessionLockedError, session: str, store: str | None = None) -> str:
    """A locked session, with the command-line ways around it; ``store`` is the
    ``--store`` the user passed (None: the default store), repeated in each command."""
    holder = getattr(exc, "holder", None)
    who = holder.describe() if holder is not None and hasattr(holder, "describe") else None
    name = printable(session)
    flag = printable(store_flag(store))
    return printable(
        f"session {session!r} is in use by {who or 'another process'}; one process "
        "writes a session at a time. Quit the other rlm chat (or wait for it), read the "
        f"session with 'rlm sessions show {name}{flag}', or copy it with 'rlm sessions fork "
        f"{name} NEW{flag}' and use --session NEW{flag}"
    )


def public_name(exc: BaseException) -> str:
    """The error's class name as a user may see it (``EnvironmentError_``, named so
    only to stay clear of Python's builtin, is "EnvironmentError")."""
    return type(exc).__name__.rstrip("_") or "Error"


def is_environment_failure(exc: BaseException) -> bool:
    """The environment could not be started (or restarted): a setup problem, exit 2.
    A worker that crashed or timed out while running a cell is not one."""
    return isinstance(exc, EnvironmentError_) and not isinstance(
        exc, WorkerCrashedError | WorkerTimeoutError
    )


# Other places for model-written code, best first, for an environment that cannot start.
_INSTEAD = {
    "docker": "--env sandbox (isolated, needs bubblewrap) or --env local (not isolated)",
    "sandbox": "--env docker or --env local (not isolated)",
}
_DEFAULT_INSTEAD = "--env sandbox (isolated) or --env local (not isolated)"


def environment_message(exc: BaseException, env: str | None = None) -> str:
    """One line for an environment that cannot start: what is wrong, and the fix
    (start the service it needs, or another ``--env``)."""
    text = redact_text(str(exc))
    where = f"the {env!r} environment" if env else "the code environment"
    instead = _INSTEAD.get(env or "", _DEFAULT_INSTEAD)
    lower = text.lower()
    if "cannot connect to the docker daemon" in lower:
        line = next(ln for ln in text.splitlines() if "docker daemon" in ln.lower())
        detail = line.strip().removeprefix("docker: ").split(". Is the docker daemon")[0]
        return one_line(f"{where} cannot start: no Docker daemon is reachable ({detail}). "
                        f"Start Docker, or pass {instead}", 600)  # fmt: skip
    if "permission denied while trying to connect to the docker daemon" in lower:
        return one_line(f"{where} cannot start: this user may not use the Docker daemon "
                        "(permission denied on its socket). Add the user to the 'docker' "
                        f"group, or pass {instead}", 600)  # fmt: skip
    if "needs the docker cli" in lower:
        return one_line(f"{where} cannot start: the docker command is not installed. "
                        "Install Docker (https://docs.docker.com/engine/install/), or pass "
                        f"{instead}", 600)  # fmt: skip
    if "bubblewrap (bwrap)" in lower and "not found" in lower:
        return one_line(f"{where} cannot start: bubblewrap (bwrap) is not installed. Install "
                        "it (sudo apt-get install bubblewrap, or dnf install bubblewrap), or "
                        f"pass {instead}", 600)  # fmt: skip
    detail = one_line(text, 300) or "no reason given"
    return one_line(f"{where} cannot start: {detail}. Fix that, or pass {instead}", 600)


def error_line(exc: BaseException, env: str | None = None) -> str:
    """An error a turn ended with, for a line of its own (``rlm chat``)."""
    if is_environment_failure(exc):
        return environment_message(exc, env)
    return redact_text(f"{public_name(exc)}: {exc}")


def describe(
    exc: BaseException, hint: str | None = None, env: str | None = None
) -> tuple[int, str]:
    """The exit code and the (redacted) message for an error a run raised; ``hint``
    (``key_hint``) is added when the provider refused the key (HTTP 401); ``env`` names
    the environment (``--env``) for one that cannot start."""
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
    if is_environment_failure(exc):
        return EXIT_USAGE, environment_message(exc, env)
    return EXIT_ERROR, redact_text(f"{public_name(exc)}: {exc}")
