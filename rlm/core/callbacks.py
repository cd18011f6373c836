"""Adapters from the event stream to the ``rlms`` ``on_*`` callback keywords."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rlm.base.events import Event, EventBus

OnSubcallStart = Callable[[int, str, str], None]
OnSubcallComplete = Callable[[int, str, float, str | None], None]
OnIterationStart = Callable[[int, int], None]
OnIterationComplete = Callable[[int, int, float], None]


def attach_callbacks(
    bus: EventBus,
    on_subcall_start: OnSubcallStart | None = None,
    on_subcall_complete: OnSubcallComplete | None = None,
    on_iteration_start: OnIterationStart | None = None,
    on_iteration_complete: OnIterationComplete | None = None,
) -> Callable[[], None] | None:
    """Subscribe the given callbacks; ``None`` if there are none.

    Sub-call callbacks fire for child RLMs (``rlm_query``) with the child's depth;
    iteration callbacks fire for every run in the tree with that run's depth.
    """
    if not any((on_subcall_start, on_subcall_complete, on_iteration_start, on_iteration_complete)):
        return None

    def dispatch(event: Event) -> None:
        data: dict[str, Any] = event.data
        kind = event.type
        if kind == "iteration_started" and on_iteration_start:
            on_iteration_start(event.depth, data["iteration"])
        elif kind == "iteration_finished" and on_iteration_complete:
            on_iteration_complete(event.depth, data["iteration"], data.get("duration") or 0.0)
        elif kind == "subcall_started" and data.get("kind") == "rlm" and on_subcall_start:
            on_subcall_start(
                data["child_depth"], str(data.get("model")), data.get("prompt_preview", "")
            )
        elif kind == "subcall_finished" and data.get("kind") == "rlm" and on_subcall_complete:
            on_subcall_complete(
                data["child_depth"],
                str(data.get("model")),
                data.get("duration", 0.0),
                data.get("error"),
            )

    return bus.subscribe(dispatch)
