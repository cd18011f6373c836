"""What ``rlm run`` needs from its arguments and the environment: a backend and a context.

Everything here is pure apart from reading files, so it is easy to test, and it raises
``CLIUsageError`` (exit code 2) for anything the user has to fix on the command line.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import IO, Any

from rlm.logger.verbose import plural, printable

EMBEDDED_NOTICE = (
    "rlm: no API key or --base-url set; using the embedded offline smoke-test model "
    "(SmolLM2-135M). Answers will be poor. Set OPENAI_API_KEY or pass --base-url for real use."
)
DEFAULT_MODELS = {"openai": "gpt-5-mini", "anthropic": "claude-sonnet-4-5"}
DEFAULT_MAX_ITERATIONS = 30
# The embedded model is tiny and runs on CPU: a few iterations show the loop working,
# and starting each reply with a ```repl fence gives it code the loop can execute.
EMBEDDED_MAX_ITERATIONS = 4
EMBEDDED_CODE_PREFILL = "```repl\n"


class CLIUsageError(Exception):
    """A problem with the command line or its inputs; reported in one line, exit 2."""


@dataclass(frozen=True)
class BackendChoice:
    backend: str
    backend_kwargs: dict[str, Any] = field(default_factory=dict)
    max_iterations: int = DEFAULT_MAX_ITERATIONS
    notice: str | None = None  # one line for stderr explaining an automatic choice


def _is_gguf(model: str | None) -> bool:
    return bool(model) and str(model).lower().endswith(".gguf")


def _embedded(model_path: str | None, notice: str | None) -> BackendChoice:
    """The in-process llama_cpp backend. ``model_name`` is the GGUF's name (its file
    stem), so sessions and results name the real model rather than "unknown"."""
    from rlm.clients.llama_cpp import model_label

    name = model_label(model_path)
    named: dict[str, Any] = {"model_name": name} if name else {}
    if model_path:  # a user's own GGUF: probably capable, so no training wheels
        return BackendChoice("llama_cpp", {"model_path": model_path, **named})
    kwargs = {"code_prefill": EMBEDDED_CODE_PREFILL, **named}
    return BackendChoice("llama_cpp", kwargs, EMBEDDED_MAX_ITERATIONS, notice)


def choose_backend(
    backend: str | None,
    model: str | None,
    base_url: str | None,
    api_key_env: str | None,
    environ: Mapping[str, str],
) -> BackendChoice:
    """The backend to use: ``--backend`` if given, else the first of ``--base-url``,
    OPENAI_API_KEY, ANTHROPIC_API_KEY, a ``.gguf`` ``--model``, the embedded model.

    ``--base-url`` alone is ``openai`` at that URL, as ``RLM(backend="openai",
    backend_kwargs={"base_url": ...})`` is in Python: the server gets $OPENAI_API_KEY
    when it is set (a hosted URL its own variable, e.g. OPENROUTER_API_KEY), and
    ``--api-key-env VAR`` sends $VAR instead. ``--backend openai_compatible`` (or
    ``vllm``) sends a key only with ``--api-key-env``, as those backends do in Python."""
    if backend is None:
        if base_url:
            if not model:
                raise CLIUsageError("--base-url needs --model (the model name the server serves)")
            backend = "openai"
        elif environ.get("OPENAI_API_KEY"):
            backend = "openai"
        elif environ.get("ANTHROPIC_API_KEY"):
            backend = "anthropic"
        elif model and not _is_gguf(model):
            backend = "openai"  # a named hosted model: fail with the missing-key message
        else:
            return _embedded(model, None if model else EMBEDDED_NOTICE)
    if backend == "llama_cpp":
        return _embedded(model, None)

    kwargs: dict[str, Any] = {}
    model = model or DEFAULT_MODELS.get(backend)
    if model:
        kwargs["model_name"] = model
    elif base_url:
        raise CLIUsageError("--base-url needs --model (the model name the server serves)")
    if base_url:
        kwargs["base_url"] = base_url
    if api_key_env:
        key = environ.get(api_key_env)
        if not key:
            raise CLIUsageError(
                f"--api-key-env {api_key_env}: that environment variable is not set"
            )
        kwargs["api_key"] = key  # never printed: loggers filter credential-like keys
    return BackendChoice(backend, kwargs)


# -- context ------------------------------------------------------------------------

# Called with (path, reason) for each file of a directory or glob that is left out.
SkipReport = Callable[[str, str], None]
MAX_SKIPS_LISTED = 20  # skipped files named one a line; past this, a count


def _read_text(path: str, label: str = "--context") -> str:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except UnicodeDecodeError:
        raise CLIUsageError(f"{label} {path}: not a UTF-8 text file") from None
    except OSError as exc:
        raise CLIUsageError(f"{label} {path}: {exc.strerror or exc}") from None
    if "\x00" in text:  # valid UTF-8 yet binary (or UTF-16): garbage to a model
        raise CLIUsageError(f"{label} {path}: a binary file (it holds NUL bytes)")
    return text


def _files_under(directory: str) -> list[str]:
    found: list[str] = []
    for root, dirs, files in os.walk(directory):
        dirs[:] = [d for d in dirs if not d.startswith(".")]  # .git, .venv, caches
        found.extend(os.path.join(root, f) for f in files if not f.startswith("."))
    return found


def _read_many(paths: list[str], spec: str, label: str, on_skip: SkipReport | None) -> list[str]:
    """Each UTF-8 text file's text, sorted by path; the others are reported to
    ``on_skip`` (binary and unreadable files in a directory are not an error)."""
    texts: list[str] = []
    for path in sorted(paths):
        try:
            texts.append(_read_text(path, label))
        except CLIUsageError as exc:
            if on_skip is not None:
                on_skip(path, str(exc).removeprefix(f"{label} {path}: "))
    if not texts:
        raise CLIUsageError(f"{label} {spec}: no readable UTF-8 text files")
    return texts


def load_context(
    spec: str, stdin: IO[str], label: str = "--context", on_skip: SkipReport | None = None
) -> str | list[str]:
    """A file's text, a list of texts (directory or glob), or stdin for ``-``.
    ``label`` starts error messages (the flag or command that named ``spec``);
    ``on_skip(path, reason)`` hears of each file a directory or glob leaves out."""
    if spec == "-":
        return stdin.read()
    spec = os.path.expanduser(spec)
    if os.path.isdir(spec):
        return _read_many(_files_under(spec), spec, label, on_skip)
    if os.path.exists(spec):
        return _read_text(spec, label)
    if glob.has_magic(spec):
        matches = [p for p in glob.glob(spec, recursive=True) if os.path.isfile(p)]
        if matches:
            return _read_many(matches, spec, label, on_skip)
        raise CLIUsageError(f"{label} {spec}: no files match")
    raise CLIUsageError(f"{label} {spec}: no such file or directory")


def is_empty(context: str | list[str]) -> bool:
    """Nothing but whitespace: a file, stdin, or every file of a directory or glob."""
    texts = [context] if isinstance(context, str) else context
    return not any(text.strip() for text in texts)


class SkipLister:
    """``on_skip`` for ``load_context`` that names each skipped file on ``err``, one a
    line, up to ``MAX_SKIPS_LISTED``; ``finish()`` then says how many more there were."""

    def __init__(self, err: IO[str], prefix: str = "rlm: ") -> None:
        self.err, self.prefix = err, prefix
        self.count = 0

    def __call__(self, path: str, reason: str) -> None:
        self.count += 1
        if self.count <= MAX_SKIPS_LISTED:
            print(f"{self.prefix}skipped {printable(path)}: {reason}", file=self.err, flush=True)

    def finish(self) -> None:
        hidden = self.count - MAX_SKIPS_LISTED
        if hidden > 0:
            more = plural(hidden, "more file", "more files")
            print(f"{self.prefix}skipped {more} ({self.count} in all)", file=self.err, flush=True)
