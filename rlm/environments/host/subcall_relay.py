"""How ``llm_query``/``rlm_query`` reach the engine: one relay per environment.

``SubcallRelay`` turns a request (``op``, prompts, model) into outcomes, one per
prompt, for LocalREPL's cells (in this process) and for a worker's (``WorkerSupervisor``
relays them). The outcome rules are LocalREPL's, so the model sees the same texts
whichever environment it runs in: a failed single call reads ``Error: LM query failed -
...``, a failed batch item ``Error: <its error>``, a failed child ``Error: RLM query
failed - ...``, and ``rlm_query`` falls back to ``llm_query`` without a ``subcall_fn``.
Calls go through the session's ``SubcallRoute`` (in-process: usage is charged to the
route's sink), else through the handler socket at ``lm_handler_address``.

``SubcallRouting`` is the mixin every built-in environment uses to expose its relay
under rlms's names (``lm_handler_address``, ``lm_handler_token``, ``lm_route``,
``subcall_fn``, ``update_handler_address``): the routing knobs live here only.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from rlm.base.types import Prompt, RLMChatCompletion

if TYPE_CHECKING:
    from rlm.base.ports import SubcallRoute
    from rlm.base.wire import LMConnection, LMRequest, LMResponse

SubcallFn = Callable[[str, str | None], RLMChatCompletion]
Outcome = RLMChatCompletion | str  # a completion, or the "Error: ..." text to show
# Entered around every ``subcall_fn`` call (IPythonREPL marks the calling thread).
SubcallScope = Callable[[], AbstractContextManager[object]]

NO_HANDLER = "Error: No LM handler configured"
NOT_RUN = "Error: RLM query failed - not run"
OPS = ("llm", "llm_batched", "rlm", "rlm_batched")


def outcome_text(outcome: Outcome) -> str:
    if isinstance(outcome, str):
        return outcome
    if outcome.error and not outcome.response:
        return f"Error: {outcome.error}"
    return outcome.response


class SubcallRelay:
    """Turns one sub-call request into outcomes (one per prompt)."""

    def __init__(
        self,
        depth: int,
        max_concurrent_subcalls: int,
        lm_route: SubcallRoute | None = None,
        lm_handler_address: tuple[str, int] | None = None,
        lm_handler_token: str | None = None,
        subcall_fn: SubcallFn | None = None,
        scope: SubcallScope | None = None,
    ) -> None:
        self.depth = depth
        self.max_concurrent_subcalls = max_concurrent_subcalls
        self.lm_route = lm_route
        self.lm_handler_address = lm_handler_address
        self.lm_handler_token = lm_handler_token
        self.subcall_fn = subcall_fn
        self._scope: SubcallScope = scope or contextlib.nullcontext
        # One bound per environment: concurrent batches (from several threads of a
        # cell, or of a worker) share it, rather than each getting its own.
        self._subcall_slots = threading.BoundedSemaphore(max(1, max_concurrent_subcalls))
        self._conn_lock = threading.Lock()
        self._connection: LMConnection | None = None
        self._connection_address: tuple[str, int] | None = None

    def run(
        self, op: str, prompts: list[Any], model: str | None, schema: Any = None
    ) -> list[Outcome]:
        """``schema``: a typed ``llm_query``'s wire form (the engine checks it)."""
        if op not in OPS:
            return [f"Error: unknown sub-call {op!r}"] * len(prompts)
        if op.startswith("rlm") and self.subcall_fn is None:
            op = op.replace("rlm", "llm")
        if op == "llm":
            return [self._complete(prompts[0], model, schema)] if prompts else []
        if op == "llm_batched":
            return self._complete_many(prompts, model, schema)
        if op == "rlm" or len(prompts) <= 1:
            return [self._subcall(p, model) for p in prompts]
        return self._subcall_many(prompts, model)

    def _subcall_many(self, prompts: list[Any], model: str | None) -> list[Outcome]:
        """``rlm_query_batched``: a fixed pool of workers pulls the prompts in order (no
        future per prompt, however long the list). Each worker runs in a copy of the
        caller's context, so what a child prints lands in the calling cell's output."""
        outcomes: list[Outcome] = [NOT_RUN] * len(prompts)
        order = iter(range(len(prompts)))
        lock = threading.Lock()
        stopped = threading.Event()

        def work() -> None:
            while not stopped.is_set():
                with lock:
                    i = next(order, None)
                if i is None:
                    return
                outcomes[i] = self._subcall(prompts[i], model)

        workers = max(1, min(self.max_concurrent_subcalls, len(prompts)))
        pool = ThreadPoolExecutor(workers, thread_name_prefix="rlm-subcall")
        try:
            futures = [pool.submit(contextvars.copy_context().run, work) for _ in range(workers)]
            for future in futures:
                future.result()
        finally:
            stopped.set()  # an interrupted caller leaves the prompts not started unrun
            pool.shutdown(wait=False, cancel_futures=True)
        return outcomes

    def _subcall(self, prompt: Any, model: str | None) -> Outcome:
        assert self.subcall_fn is not None
        try:
            with self._subcall_slots, self._scope():
                return self.subcall_fn(str(prompt), model)
        except Exception as exc:
            return f"Error: RLM query failed - {exc}"

    def _complete(self, prompt: Prompt, model: str | None, schema: Any = None) -> Outcome:
        try:
            if self.lm_route is not None:
                if schema is not None:  # only typed calls need a route that knows schemas
                    return self.lm_route.llm_query(prompt, model, schema=schema)
                return self.lm_route.llm_query(prompt, model)
            if not self.lm_handler_address:
                return NO_HANDLER
            request = self._lm_request(prompt=prompt, model=model, schema=schema)
            response = self._request(request)
        except Exception as exc:
            return f"Error: LM query failed - {exc}"
        if not response.success or response.chat_completion is None:
            return f"Error: {response.error}"
        return response.chat_completion

    def _complete_many(
        self, prompts: list[Prompt], model: str | None, schema: Any = None
    ) -> list[Outcome]:
        if not prompts:
            return []
        try:
            if self.lm_route is not None:
                if schema is not None:
                    return list(self.lm_route.llm_query_batched(prompts, model, schema=schema))
                return list(self.lm_route.llm_query_batched(prompts, model))
            if not self.lm_handler_address:
                return [NO_HANDLER] * len(prompts)
            request = self._lm_request(prompts=prompts, model=model, schema=schema)
            response = self._request(request)
        except Exception as exc:
            return [f"Error: LM query failed - {exc}"] * len(prompts)
        if not response.success or response.chat_completions is None:
            return [f"Error: {response.error}"] * len(prompts)
        return list(response.chat_completions)

    def remaining(self) -> dict[str, Any] | None:
        """What remains of the run's limits (the REPL's ``budget()``), if known."""
        return self.lm_route.remaining() if self.lm_route is not None else None

    # -- socket route (no in-process route given) ------------------------------------

    def _lm_request(self, **fields: Any) -> LMRequest:
        from rlm.base.wire import LMRequest

        return LMRequest(depth=self.depth, **fields)

    def _request(self, request: LMRequest) -> LMResponse:
        from rlm.base.wire import LMConnection

        address = self.lm_handler_address
        assert address is not None
        with self._conn_lock:
            if self._connection is None or self._connection_address != address:
                self.close()
                self._connection = LMConnection(address, token=self.lm_handler_token)
                self._connection_address = address
            connection = self._connection
        return connection.request(request)

    def close(self) -> None:
        """Close the handler connection, if one was opened."""
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(Exception):
                connection.close()


class SubcallRouting:
    """The sub-call routing of an environment, kept in one ``SubcallRelay``.

    Reading or setting ``lm_handler_address``, ``lm_route`` or ``subcall_fn`` on the
    environment reads or sets its relay's (a new address opens a new connection on the
    next call), and ``update_handler_address`` (``SupportsPersistence``) points it at
    another handler. An environment calls ``_route_subcalls`` in its constructor, or
    shares the relay of the engine it runs on (IPythonREPL).
    """

    _relay: SubcallRelay
    depth: int  # BaseEnv's: the depth of the sub-calls' LM requests
    max_concurrent_subcalls: int  # BaseEnv's: one bound for all of the relay's sub-calls

    def _route_subcalls(
        self,
        lm_route: SubcallRoute | None,
        lm_handler_address: tuple[str, int] | None,
        lm_handler_token: str | None,
        subcall_fn: SubcallFn | None,
    ) -> SubcallRelay:
        """Make this environment's relay (call after ``BaseEnv.__init__``)."""
        self._relay = SubcallRelay(
            self.depth,
            self.max_concurrent_subcalls,
            lm_route,
            lm_handler_address,
            lm_handler_token,
            subcall_fn,
            self._subcall_scope(),
        )
        return self._relay

    def _subcall_scope(self) -> SubcallScope | None:
        """Entered around each ``subcall_fn`` call (None: nothing to enter)."""
        return None

    @property
    def lm_handler_address(self) -> tuple[str, int] | None:
        return self._relay.lm_handler_address

    @lm_handler_address.setter
    def lm_handler_address(self, address: tuple[str, int] | None) -> None:
        self._relay.lm_handler_address = address

    @property
    def lm_handler_token(self) -> str | None:
        return self._relay.lm_handler_token

    @property
    def lm_route(self) -> SubcallRoute | None:
        return self._relay.lm_route

    @lm_route.setter
    def lm_route(self, route: SubcallRoute | None) -> None:
        self._relay.lm_route = route

    @property
    def subcall_fn(self) -> SubcallFn | None:
        return self._relay.subcall_fn

    @subcall_fn.setter
    def subcall_fn(self, fn: SubcallFn | None) -> None:
        self._relay.subcall_fn = fn

    def update_handler_address(self, address: tuple[str, int]) -> None:
        """Send ``llm_query`` & co. to the LM handler listening on ``address``."""
        self.lm_handler_address = address
