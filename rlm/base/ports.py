"""The protocols that cross floors: what one part of ``rlm`` may ask of another.

Each is structural (``typing.Protocol``), so a wing implements it without importing
the engine, and the engine calls it without importing the wing:

* ``SupportsPersistence``, ``SupportsCustomTools``, ``SupportsSnapshot``,
  ``SupportsInterrupt``: what an environment offers the engine (multi-turn namespaces,
  tools, saved namespaces, stopping the running cell).
* ``SubcallRoute``: what an in-process environment may call for ``llm_query`` and
  ``budget()``; the engine's ``rlm.core.lm_route.LMRoute`` is the implementation.
* ``RequestHandler``: what the socket server (``rlm.core.lm_server.LMServer``) serves:
  one decoded request in, one response out; the engine's ``LMHandler`` is one, so the
  server never imports the handler.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from rlm.base.types import Prompt, RLMChatCompletion
    from rlm.base.wire_messages import LMRequest, LMResponse


@runtime_checkable
class SupportsPersistence(Protocol):
    """Environments that keep one namespace across ``RLM.completion()`` calls.

    Contract (tested by ``tests/environments/test_local_repl_persistent.py``):

    * Versioning: contexts are bound as ``context_0, context_1, ...`` in the order they
      are added; histories as ``history_0, history_1, ...``.
    * Aliasing: ``context`` is always ``context_0`` and ``history`` is ``history_0``.
    * Histories are stored as deep copies: the caller may mutate its list afterwards.
    * Counts: ``get_context_count`` / ``get_history_count`` return one more than the
      highest index bound so far; ``RLM`` tells the model these numbers every turn.
    """

    def update_handler_address(self, address: tuple[str, int]) -> None:
        """Point ``llm_query`` & co. at the LM handler listening on ``address``."""
        ...

    def add_context(self, context_payload: Any, context_index: int | None = None) -> int:
        """Bind ``context_payload`` as ``context_{index}``; ``None`` means the next index.
        Returns the index used."""
        ...

    def get_context_count(self) -> int:
        """How many contexts are bound."""
        ...

    def add_history(
        self, message_history: list[dict[str, Any]], history_index: int | None = None
    ) -> int:
        """Bind a deep copy of ``message_history`` as ``history_{index}``; ``None`` means
        the next index. Returns the index used."""
        ...

    def get_history_count(self) -> int:
        """How many histories are bound."""
        ...


@runtime_checkable
class SupportsCustomTools(Protocol):
    """Environments that accept ``custom_tools``: callables become functions in the
    namespace, other values become variables. Tool names may not be reserved."""

    custom_tools: dict[str, Any]


@runtime_checkable
class SupportsSnapshot(Protocol):
    """Environments whose namespace can be saved and restored.

    ``snapshot()`` returns bytes plus the names that could not be saved;
    ``restore(data)`` rebinds what was saved and returns the names it could not restore.
    """

    def snapshot(self) -> tuple[bytes, list[str]]: ...

    def restore(self, data: bytes) -> list[str]: ...


@runtime_checkable
class SupportsInterrupt(Protocol):
    """Environments that can stop the cell running now (when a run is stopped:
    ``max_timeout``, ``RLM.cancel()``, an asyncio cancellation from outside).

    ``interrupt_cell()`` asks the environment to stop its running cell and returns at
    once (it never waits for the cell, and may be called from any thread, the event
    loop's included). It returns True if a cell was running and an interrupt was
    delivered, False if no cell was running. The interrupted cell ends with an error in
    its output (``KeyboardInterrupt: ... the run was stopped``) and the namespace stays
    usable for the next turn; how hard the environment tries is its own (an in-process
    cell is stopped at its next Python instruction, a worker's cell is interrupted and,
    if it does not stop within a bound, its worker is replaced).
    """

    def interrupt_cell(self) -> bool: ...


class SubcallRoute(Protocol):
    """The engine as an in-process environment sees it: sub-calls at one depth, charged
    to one budget node. ``llm_query`` raises on failure; ``llm_query_batched`` reports
    failures per item in ``RLMChatCompletion.error``. ``schema`` (a typed sub-call's
    ``{"name", "schema"}``) is passed only when REPL code gave one; a reply then is the
    matching value's JSON text."""

    def remaining(self) -> dict[str, Any]:
        """The REPL's ``budget()``: what remains of the run's limits."""
        ...

    def llm_query(
        self, prompt: Prompt, model: str | None = None, schema: Any = None
    ) -> RLMChatCompletion: ...

    def llm_query_batched(
        self, prompts: list[Prompt], model: str | None = None, schema: Any = None
    ) -> list[RLMChatCompletion]: ...


class RequestHandler(Protocol):
    """What the socket server hands each authenticated, well-formed request to.

    The server has checked the request's shape (``prompt`` or a list ``prompts``, a
    string ``model`` if any, an int ``depth``) and set its ``id``. REPL code is on the
    other side of the socket, so the handler checks the model it names. A failed call
    is an error response, not an exception (the server turns one that escapes into an
    error response as well).
    """

    def handle_request(self, request: LMRequest) -> LMResponse: ...
