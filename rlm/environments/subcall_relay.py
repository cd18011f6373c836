"""Host-side answers to a worker's ``llm_query``/``rlm_query`` requests.

The outcome rules are LocalREPL's, so the model sees the same texts whichever
environment it runs in: a failed single call reads ``Error: LM query failed - ...``, a
failed batch item ``Error: <its error>``, a failed child ``Error: RLM query failed -
...``, and ``rlm_query`` falls back to ``llm_query`` without a ``subcall_fn``. Calls go
through the session's ``SubcallRoute`` (in-process: usage is charged to the route's sink),
else through the handler socket at ``lm_handler_address``.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from rlm.base.types import Prompt, RLMChatCompletion

if TYPE_CHECKING:
    from rlm.base.ports import SubcallRoute
    from rlm.base.wire import LMConnection, LMRequest, LMResponse

SubcallFn = Callable[[str, str | None], RLMChatCompletion]
Outcome = RLMChatCompletion | str  # a completion, or the "Error: ..." text to show

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
    """Turns one worker request into outcomes (one per prompt)."""

    def __init__(
        self,
        depth: int,
        max_concurrent_subcalls: int,
        lm_route: SubcallRoute | None = None,
        lm_handler_address: tuple[str, int] | None = None,
        lm_handler_token: str | None = None,
        subcall_fn: SubcallFn | None = None,
    ) -> None:
        self.depth = depth
        self.max_concurrent_subcalls = max_concurrent_subcalls
        self.lm_route = lm_route
        self.lm_handler_address = lm_handler_address
        self.lm_handler_token = lm_handler_token
        self.subcall_fn = subcall_fn
        # One bound per environment: concurrent batches (from several threads of a
        # cell, or of a worker) share it, rather than each getting its own.
        self._subcall_slots = threading.BoundedSemaphore(max(1, max_concurrent_subcalls))
        self._conn_lock = threading.Lock()
        self._connection: LMConnection | None = None
        self._connection_address: tuple[str, int] | None = None

    def run(self, op: str, prompts: list[Any], model: str | None) -> list[Outcome]:
        if op not in OPS:
            return [f"Error: unknown sub-call {op!r}"] * len(prompts)
        if op.startswith("rlm") and self.subcall_fn is None:
            op = op.replace("rlm", "llm")
        if op == "llm":
            return [self._complete(prompts[0], model)] if prompts else []
        if op == "llm_batched":
            return self._complete_many(prompts, model)
        if op == "rlm" or len(prompts) <= 1:
            return [self._subcall(p, model) for p in prompts]
        return self._subcall_many(prompts, model)

    def _subcall_many(self, prompts: list[Any], model: str | None) -> list[Outcome]:
        """``rlm_query_batched``: a fixed pool of workers pulls the prompts in order (no
        future per prompt, however long the list)."""
        outcomes: list[Outcome] = [NOT_RUN] * len(prompts)
        order = iter(range(len(prompts)))
        lock = threading.Lock()

        def work() -> None:
            while True:
                with lock:
                    i = next(order, None)
                if i is None:
                    return
                outcomes[i] = self._subcall(prompts[i], model)

        workers = max(1, min(self.max_concurrent_subcalls, len(prompts)))
        with ThreadPoolExecutor(workers, thread_name_prefix="rlm-subcall") as pool:
            for future in [pool.submit(work) for _ in range(workers)]:
                future.result()
        return outcomes

    def _subcall(self, prompt: Any, model: str | None) -> Outcome:
        assert self.subcall_fn is not None
        try:
            with self._subcall_slots:
                return self.subcall_fn(str(prompt), model)
        except Exception as exc:
            return f"Error: RLM query failed - {exc}"

    def _complete(self, prompt: Prompt, model: str | None) -> Outcome:
        try:
            if self.lm_route is not None:
                return self.lm_route.llm_query(prompt, model)
            if not self.lm_handler_address:
                return NO_HANDLER
            response = self._request(self._lm_request(prompt=prompt, model=model))
        except Exception as exc:
            return f"Error: LM query failed - {exc}"
        if not response.success or response.chat_completion is None:
            return f"Error: {response.error}"
        return response.chat_completion

    def _complete_many(self, prompts: list[Prompt], model: str | None) -> list[Outcome]:
        if not prompts:
            return []
        try:
            if self.lm_route is not None:
                return list(self.lm_route.llm_query_batched(prompts, model))
            if not self.lm_handler_address:
                return [NO_HANDLER] * len(prompts)
            response = self._request(self._lm_request(prompts=prompts, model=model))
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
