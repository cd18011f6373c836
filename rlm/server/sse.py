"""Server-sent events: OpenAI's ``data:`` lines plus rlmx's trajectory comments.

While a streamed completion runs, each trajectory event goes out as one SSE comment
line, which SSE clients (the official openai client among them) skip::

    : rlm-event {"type": "iteration_started", "run_id": "run3", "depth": 0, ...}

The JSON is one line of ASCII (everything else is ``\\u``-escaped, so no client can
split it): ``type``, ``id``, ``run_id``, ``parent_id``, ``session_id``, ``turn``,
``depth``, ``time`` and ``data`` (the event's data as in ``rlm.base.events``, made
JSON-safe: strings over ``MAX_CHARS`` are cut with a ``…[+N chars]`` mark, lists over
``MAX_ITEMS`` items are cut, and ``iteration_obj`` is left out because ``model_reply``
and ``code_cell_finished`` already carry its parts). ``data:`` lines are ASCII too.
``rlm.server.client.iter_events`` reads them back.
"""

from __future__ import annotations

import json
from typing import Any

from rlm.base.events import Event
from rlm.base.types import serialize_value

EVENT_PREFIX = ": rlm-event "
DONE = "data: [DONE]\n\n"
MAX_CHARS = 2000
MAX_ITEMS = 50
_SKIPPED_KEYS = frozenset({"iteration_obj"})


def _jsonable(value: Any, depth: int = 0) -> Any:
    if hasattr(value, "to_dict") and callable(value.to_dict):
        value = value.to_dict()
    if isinstance(value, str):
        extra = len(value) - MAX_CHARS
        return value if extra <= 0 else f"{value[:MAX_CHARS]}…[+{extra} chars]"
    if depth > 8:  # deep nesting (child trajectories) says little in a progress event
        return "…"
    if isinstance(value, dict):
        return {str(k): _jsonable(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        items = [_jsonable(v, depth + 1) for v in value[:MAX_ITEMS]]
        if len(value) > MAX_ITEMS:
            items.append(f"…[+{len(value) - MAX_ITEMS} items]")
        return items
    return serialize_value(value)


def event_payload(event: Event) -> dict[str, Any]:
    """The JSON object one ``rlm-event`` comment carries."""
    data = {k: v for k, v in event.data.items() if k not in _SKIPPED_KEYS}
    return {
        "type": event.type,
        "id": event.id,
        "run_id": event.run_id,
        "parent_id": event.parent_id,
        "session_id": event.session_id,
        "turn": event.turn,
        "depth": event.depth,
        "time": event.time,
        "data": _jsonable(data),
    }


def _json(value: Any) -> str:
    # ASCII only: json.dumps escapes \n and \r, and ensure_ascii also escapes U+2028,
    # U+2029, U+0085 and the rest, which clients that split lines like str.splitlines
    # (httpx's iter_lines among them) would otherwise break the line on.
    return json.dumps(value, ensure_ascii=True)


def comment(event: Event) -> str:
    return f"{EVENT_PREFIX}{_json(event_payload(event))}\n\n"


def data(payload: Any) -> str:
    return f"data: {_json(payload)}\n\n"
