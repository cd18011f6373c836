"""LMHandler: a session's model calls, behind the ``rlms`` handler API.

It lives as long as the session and puts together four parts, each in its own module:

* model routing (``rlm.core.lm_router.ModelRouter``): which client serves a call;
  every client enters it once (``rlm.clients.legacy.adopt``), its retries handed over
  to the governor;
* the call pipeline (``rlm.core.lm_pipeline.CallPipeline``, which the handler is):
  reservation on the caller's budget node, the governor, usage charging, sync and
  async, single and batched;
* the background event loop (``rlm.core.runtime.AsyncRuntime``) sync batches run on;
* the loopback socket (``rlm.core.lm_server.OnDemandServer``), started only when an
  out-of-process environment asks for it (``start()``), authenticated by ``token``.

In-process environments reach the pipeline through an ``LMRoute`` (``route()``: no
socket, no thread hop for single calls); out-of-process ones through the socket, whose
requests the handler answers (``handle_request``). Both check the model REPL code
names against ``model_policy`` (by default only registered models;
``rlm.core.model_policy``); Python code calling ``call`` itself is not restricted.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from rlm.base.types import Prompt, UsageSummary
from rlm.base.wire import LMRequest, LMResponse
from rlm.core.governor import Governor
from rlm.core.lm_batch import DEFAULT_MAX_BATCH_SIZE
from rlm.core.lm_pipeline import DEFAULT_MAX_CONCURRENT_LLM_CALLS, CallPipeline
from rlm.core.lm_route import LMRoute
from rlm.core.lm_router import ModelRouter
from rlm.core.lm_server import OnDemandServer
from rlm.core.model_policy import AllowedModels, ModelNotAllowedError, ModelPolicy
from rlm.core.runtime import AsyncRuntime

if TYPE_CHECKING:
    from rlm.base.events import RunScope
    from rlm.clients.base_lm import BaseLM
    from rlm.core.budget import BudgetNode


class LMHandler(CallPipeline):
    """Holds a session's clients and makes every LM call of that session."""

    def __init__(
        self,
        client: Any,
        host: str = "127.0.0.1",
        port: int = 0,
        other_backend_client: Any | None = None,
        batch_max_concurrent: int = DEFAULT_MAX_CONCURRENT_LLM_CALLS,
        client_factory: Callable[[str], Any] | None = None,
        auth_token: str | None = None,
        governor: Governor | None = None,
        *,
        max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
        allowed_models: AllowedModels = None,
    ) -> None:
        super().__init__(
            ModelRouter(client, other_backend_client, client_factory, allowed_models),
            governor if governor is not None else Governor(),
            AsyncRuntime(),
            batch_max_concurrent,
            max_batch_size,
        )
        self.token = auth_token or secrets.token_hex(16)
        self.server = OnDemandServer(self, host, port, self.token)

    # -- clients (rlms names) --------------------------------------------------------

    @property
    def default_client(self) -> BaseLM:
        return self.router.default

    @property
    def other_backend_client(self) -> BaseLM | None:
        return self.router.other

    @property
    def clients(self) -> dict[str, BaseLM]:
        return self.router.clients

    @property
    def client_factory(self) -> Callable[[str], Any] | None:
        return self.router.factory

    @property
    def model_policy(self) -> ModelPolicy:
        """The models REPL code may name: the allowed ones and every registered client's."""
        return self.router.model_policy

    def register_client(self, model_name: str, client: Any) -> None:
        """Serve ``model_name`` with ``client``; REPL code may then name it."""
        self.router.register(model_name, client)

    def get_client(self, model: str | None = None, depth: int = 0) -> BaseLM:
        """A named ``model`` wins; else depth 1 goes to the other backend when set."""
        return self.router.get(model, depth)

    def client_name(self, depth: int = 0) -> str:
        """The model name a call without ``model`` at ``depth`` is made with."""
        return self.router.name(depth)

    def get_usage_summary(self) -> UsageSummary:
        """Totals of every client this handler holds (one entry per model)."""
        return self.router.usage_summary()

    # -- calls -----------------------------------------------------------------------

    def completion(self, prompt: Prompt, model: str | None = None) -> str:
        """Plain text completion with the default (or named) client."""
        return self.call(prompt, model).response

    def route(
        self, depth: int, sink: BudgetNode | None = None, scope: RunScope | None = None
    ) -> LMRoute:
        """A view of this handler for one environment at ``depth``."""
        return LMRoute(self, self.model_policy, depth, sink, scope)

    def handle_request(self, request: LMRequest) -> LMResponse:
        """One request from the socket (``rlm.base.ports.RequestHandler``). REPL code is
        on the other side, so the model it names is checked first."""
        rid = request.id
        if not self.model_policy.allows(request.model):
            error = ModelNotAllowedError(str(request.model), self.model_policy.names)
            return LMResponse.error_response(str(error), id=rid)
        typed = request.schema is not None  # a typed sub-call: asked until it matches
        model, depth = request.model, request.depth
        try:
            if request.prompts is not None:
                if typed:
                    route = self.route(depth)
                    results = route.llm_query_batched(request.prompts, model, request.schema)
                else:
                    results = self.call_batched(request.prompts, model, depth)
                return LMResponse.batched_success_response(results, id=rid)
            if request.prompt is None:
                return LMResponse.error_response("missing 'prompt' or 'prompts'", id=rid)
            if not typed:
                result = self.call(request.prompt, model, depth)
            else:
                result = self.route(depth).llm_query(request.prompt, model, request.schema)
                if result.error and not result.response:
                    return LMResponse.error_response(result.error, id=rid)
            return LMResponse.success_response(result, id=rid)
        except Exception as exc:
            return LMResponse.error_response(f"LM call failed: {type(exc).__name__}: {exc}", id=rid)

    # -- the socket and the lifecycle ------------------------------------------------

    @property
    def host(self) -> str:
        return self.server.host

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def address(self) -> tuple[str, int]:
        return self.server.address

    def start(self) -> tuple[str, int]:
        """Start the loopback socket server (idempotent). Returns ``(host, port)``."""
        return self.server.start()

    def stop(self) -> None:
        """Stop the socket server, if running. Returns immediately (no polling)."""
        self.server.stop()

    def close(self) -> None:
        """Stop the server and the event loop, and close every client."""
        self.server.stop()
        self.runtime.close()
        self.router.close()

    def __enter__(self) -> LMHandler:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


__all__ = [
    "DEFAULT_MAX_BATCH_SIZE",
    "DEFAULT_MAX_CONCURRENT_LLM_CALLS",
    "LMHandler",
    "LMRoute",
]
