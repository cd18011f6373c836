"""The rlmx error tree. Every error the engine raises on purpose is an ``RLMError``.

    RLMError
    ├── RLMLimitError                 a run stopped early; carries ``partial_answer``
    │   ├── BudgetExceededError       max_budget (USD)
    │   ├── TimeoutExceededError      max_timeout (seconds)
    │   ├── TokenLimitExceededError   max_tokens (input + output)
    │   ├── ErrorThresholdExceededError  max_errors consecutive failing iterations
    │   ├── LLMCallLimitExceededError max_llm_calls (LM calls, children included)
    │   └── CancellationError         Ctrl-C, task cancellation or RLM.cancel()
    ├── BudgetExhaustedError          a call's reservation would break a limit (a sub-call
    │                                 sees "Error: budget exhausted ..."; a run, a limit error)
    ├── ClientError                   talking to a model provider
    │   ├── MissingExtraError         the backend's optional dependency is not installed
    │   ├── MissingAPIKeyError        no key configured for the backend
    │   ├── ProviderError             the provider answered with an error
    │   │   └── RateLimitError        429 or the provider's equivalent
    │   ├── ProviderConnectionError   the provider could not be reached
    │   ├── CircuitOpenError          an auth/quota error tripped the call tree's breaker
    │   └── ContextWindowExceededError  a prompt cannot fit the model's window (not sent)
    ├── EnvironmentError_             an execution environment failed (worker, transport)
    │   ├── WorkerCrashedError
    │   └── WorkerTimeoutError
    ├── WireProtocolError             a malformed frame on the handler socket
    ├── SessionError                  a durable session (``rlm.sessions``)
    │   ├── SessionLockedError        another live process holds the session's write lock
    │   ├── SessionNotFoundError      no such session in the store (also a LookupError)
    │   └── SessionStoreError         the store file is corrupt, foreign or of a newer
    │                                 schema, or a checkpoint could not be written
    ├── SchemaValidationError         the answer does not match ``output_schema``, after every
    │                                 repair and the structured "answer now" call
    └── ConfigurationError            (also a ValueError) bad arguments to RLM(...)

The five limit errors keep the names and constructor signatures of ``rlms`` 0.1.3.
Every limit error raised by a root run carries ``checkpoint`` (an
``rlm.sessions.Checkpoint``): pass it to ``completion(..., resume=checkpoint)`` to go
on from the last completed iteration.
"""

from __future__ import annotations

from typing import Any


class RLMError(Exception):
    """Root of every error rlmx raises deliberately."""


class RLMLimitError(RLMError):
    """A run stopped before it submitted an answer. ``partial_answer`` is the best so far."""

    partial_answer: str | None = None
    # The turn so far (an ``rlm.sessions.Checkpoint``), set by the run that raised it.
    checkpoint: Any = None


class BudgetExceededError(RLMLimitError):
    """The run's spending (USD), children included, went over ``max_budget``."""

    def __init__(
        self,
        spent: float,
        budget: float,
        message: str | None = None,
        partial_answer: str | None = None,
    ) -> None:
        self.spent = spent
        self.budget = budget
        self.partial_answer = partial_answer
        super().__init__(message or f"Budget exceeded: spent ${spent:.6f} of ${budget:.6f} budget")


class TimeoutExceededError(RLMLimitError):
    """The run took longer than ``max_timeout`` seconds."""

    def __init__(
        self,
        elapsed: float,
        timeout: float,
        partial_answer: str | None = None,
        message: str | None = None,
    ) -> None:
        self.elapsed = elapsed
        self.timeout = timeout
        self.partial_answer = partial_answer
        super().__init__(message or f"Timeout exceeded: {elapsed:.1f}s of {timeout:.1f}s limit")


class TokenLimitExceededError(RLMLimitError):
    """The run used more than ``max_tokens`` tokens (input + output, children included)."""

    def __init__(
        self,
        tokens_used: int,
        token_limit: int,
        partial_answer: str | None = None,
        message: str | None = None,
    ) -> None:
        self.tokens_used = tokens_used
        self.token_limit = token_limit
        self.partial_answer = partial_answer
        super().__init__(
            message or f"Token limit exceeded: {tokens_used:,} of {token_limit:,} tokens"
        )


class ErrorThresholdExceededError(RLMLimitError):
    """``max_errors`` iterations in a row had a failing code block."""

    def __init__(
        self,
        error_count: int,
        threshold: int,
        last_error: str | None = None,
        partial_answer: str | None = None,
        message: str | None = None,
    ) -> None:
        self.error_count = error_count
        self.threshold = threshold
        self.last_error = last_error
        self.partial_answer = partial_answer
        super().__init__(
            message
            or f"Error threshold exceeded: {error_count} consecutive errors (limit: {threshold})"
        )


class LLMCallLimitExceededError(RLMLimitError):
    """The run (children included) made ``max_llm_calls`` LM calls and needed another."""

    def __init__(
        self,
        calls_used: int,
        call_limit: int,
        partial_answer: str | None = None,
        message: str | None = None,
    ) -> None:
        self.calls_used = calls_used
        self.call_limit = call_limit
        self.partial_answer = partial_answer
        super().__init__(message or f"LM call limit reached: {calls_used} of {call_limit} calls")


class CancellationError(RLMLimitError):
    """The run was cancelled (Ctrl-C, task cancellation or ``RLM.cancel()``)."""

    def __init__(self, partial_answer: str | None = None, message: str | None = None) -> None:
        self.partial_answer = partial_answer
        super().__init__(message or "Execution cancelled by user")


class BudgetExhaustedError(RLMError):
    """Reserving a call's estimated cost would break a limit of the call tree.

    ``breach`` (a ``rlm.core.budget.Breach``) names the limit. Inside the REPL the
    sub-call returns ``"Error: budget exhausted ..."``; a run turns it into its limit error.
    """

    def __init__(self, breach: Any, message: str) -> None:
        self.breach = breach
        super().__init__(message)


# ---------------------------------------------------------------------------
# Clients
# ---------------------------------------------------------------------------


class ClientError(RLMError):
    """A model client could not produce a completion."""


class MissingExtraError(ClientError, ImportError):
    """An optional dependency is missing; the message names the extra to install."""

    def __init__(self, what: str, extra: str, package: str | None = None) -> None:
        self.extra = extra
        self.package = package or extra
        super().__init__(
            f"{what} needs the optional dependency '{self.package}'. "
            f"Install it with: pip install 'rlmx[{extra}]'"
        )


class MissingAPIKeyError(ClientError):
    """No API key was given and the environment variable that holds it is unset."""

    def __init__(self, backend: str, env_var: str) -> None:
        self.backend = backend
        self.env_var = env_var
        super().__init__(
            f"The '{backend}' backend needs an API key: set the {env_var} environment "
            f"variable or pass api_key in backend_kwargs."
        )


class ProviderError(ClientError):
    """The provider answered with an error. ``status`` is the HTTP status when known."""

    def __init__(
        self,
        message: str,
        status: int | None = None,
        retry_after: float | None = None,
        retryable: bool | None = None,
    ) -> None:
        self.status = status
        self.retry_after = retry_after
        if retryable is None:
            retryable = status is not None and (status == 429 or status >= 500)
        self.retryable = retryable
        super().__init__(message)


class RateLimitError(ProviderError):
    """429 or the provider's equivalent."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message, status=429, retry_after=retry_after, retryable=True)


class ProviderConnectionError(ClientError):
    """The provider could not be reached (refused, reset, DNS, timeout)."""

    retryable = True


class CircuitOpenError(ClientError):
    """An auth or quota error tripped the call tree's circuit breaker: further LM calls
    fail fast with this error until the session is closed. ``cause`` is the first error."""

    def __init__(self, cause: BaseException) -> None:
        self.cause = cause
        super().__init__(
            f"circuit open, LM call not attempted: an earlier call failed with "
            f"{type(cause).__name__}: {cause}"
        )


class ContextWindowExceededError(ClientError):
    """A prompt cannot fit its model's context window, so it was not sent. Inside the
    REPL a sub-call returns ``"Error: prompt is N tokens, MODEL takes M: split it ..."``.
    ``limit`` is the most prompt tokens the model takes (its ``window`` less the
    ``reply_tokens`` kept for the answer, when those are known)."""

    def __init__(
        self,
        model: str,
        prompt_tokens: int,
        limit: int,
        window: int | None = None,
        reply_tokens: int | None = None,
        estimated: bool = False,
    ) -> None:
        self.model, self.prompt_tokens, self.limit = model, prompt_tokens, limit
        self.window, self.reply_tokens, self.estimated = window, reply_tokens, estimated
        about = " (estimated)" if estimated else ""
        room = ""
        if reply_tokens and window:
            room = f" ({window:,} less {reply_tokens:,} kept for the reply)"
        super().__init__(
            f"prompt is {prompt_tokens:,} tokens{about}, {model} takes {limit:,}{room}: "
            "split it into smaller prompts (nothing was sent)"
        )


class ImagesNotSupportedError(ClientError):
    """A prompt with images for a model that takes none, so it was not sent. Inside the
    REPL the sub-call returns ``"Error: MODEL does not take images ..."``."""

    def __init__(self, model: str, count: int, why: str = "") -> None:
        self.model, self.count = model, count
        super().__init__(
            f"{model} does not take images ({count} in the prompt){why}: nothing was sent. "
            "Ask a model with vision (llm_query(..., model=...)) or describe the image in text"
        )


# ---------------------------------------------------------------------------
# Environments and wire
# ---------------------------------------------------------------------------


class EnvironmentError_(RLMError):
    """An execution environment failed outside the model's code."""


class WorkerCrashedError(EnvironmentError_):
    """The out-of-process worker died."""


class WorkerTimeoutError(EnvironmentError_):
    """The worker did not answer in time."""


class WireProtocolError(RLMError):
    """A frame on the handler socket was malformed, oversized or unauthenticated."""


# ---------------------------------------------------------------------------
# Durable sessions
# ---------------------------------------------------------------------------


class SessionError(RLMError):
    """A durable session could not be opened, saved or changed."""


class SessionLockedError(SessionError):
    """Another live process holds the session's write lock (after the bounded wait).
    ``holder`` describes it (pid, hostname, since), when known; ``retry_after`` is the
    seconds until its lease runs out unless renewed, when known."""

    def __init__(self, message: str, holder: Any = None, retry_after: float | None = None) -> None:
        self.holder = holder
        self.retry_after = retry_after
        super().__init__(message)


class SessionNotFoundError(SessionError, LookupError):
    """No session with that id in the store."""


class SessionStoreError(SessionError):
    """The store cannot be used: not a SQLite file, corrupt, not an rlmx store, written
    by a newer rlmx, or a write failed. The file is left as it was."""


class SchemaValidationError(RLMError):
    """The run's answer does not match its ``output_schema``: every repair was used and
    the last call (in the provider's structured-output mode where it has one) did not
    produce a valid answer either. ``answer`` is the last invalid answer (its text),
    ``errors`` the readable reasons (``"$.items[0].price: expected number, got string"``),
    ``repairs`` how many repairs the model was given."""

    def __init__(
        self,
        answer: str | None,
        errors: list[str],
        schema_name: str = "answer",
        repairs: int = 0,
    ) -> None:
        self.answer = answer
        self.errors = list(errors)
        self.schema_name = schema_name
        self.repairs = repairs
        shown = "; ".join(self.errors[:5]) + (" ..." if len(self.errors) > 5 else "")
        super().__init__(
            f"The answer does not match the output schema {schema_name!r} after {repairs} "
            f"repair(s): {shown or 'no answer'}"
        )


class ConfigurationError(RLMError, ValueError):
    """Invalid arguments; also a ``ValueError`` so ``rlms``-style handlers still catch it."""


__all__ = [
    "BudgetExceededError",
    "BudgetExhaustedError",
    "CancellationError",
    "CircuitOpenError",
    "ClientError",
    "ConfigurationError",
    "ContextWindowExceededError",
    "EnvironmentError_",
    "ErrorThresholdExceededError",
    "ImagesNotSupportedError",
    "LLMCallLimitExceededError",
    "MissingAPIKeyError",
    "MissingExtraError",
    "ProviderConnectionError",
    "ProviderError",
    "RLMError",
    "RLMLimitError",
    "RateLimitError",
    "SchemaValidationError",
    "SessionError",
    "SessionLockedError",
    "SessionNotFoundError",
    "SessionStoreError",
    "TimeoutExceededError",
    "TokenLimitExceededError",
    "WireProtocolError",
    "WorkerCrashedError",
    "WorkerTimeoutError",
]
