"""``Checkpoint``: a turn that stopped before its answer, enough to go on from there.

Every limit error raised by a root run carries one as ``exc.checkpoint``;
``rlm.completion(prompt, root_prompt, resume=exc.checkpoint)`` continues after the last
completed iteration, so the model calls already made are not made (nor paid) again.
A durable session also stores it with the stopped turn, so the next process can go on.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from rlm.base.types import UsageSummary


@dataclass
class Checkpoint:
    """The state of a stopped turn at the end of its last completed iteration.

    ``messages`` are the turn's messages up to then (the opening messages included),
    ``iteration`` the number of completed iterations, ``usage`` what every attempt of
    this turn has spent so far. ``context_index`` is the turn's ``context_N`` in a
    persistent session. ``snapshot`` holds a one-shot run's REPL variables (its
    environment is gone after the run); a persistent session keeps its live one.
    """

    messages: list[dict[str, Any]]
    iteration: int = 0
    consecutive_errors: int = 0
    last_error: str | None = None
    best_partial: str | None = None
    compactions: int = 0
    usage: UsageSummary = field(default_factory=UsageSummary)
    context_index: int | None = None
    root_prompt: str | None = None
    session_id: str | None = None
    error: str | None = None
    snapshot: bytes | None = None
    unsaved: list[str] = field(default_factory=list)

    def to_record(self) -> dict[str, Any]:
        """JSON-able form for a store that keeps the turn's messages apart (the messages
        are the first ``messages`` entries of the stored history)."""
        return {
            "messages": len(self.messages),
            "iteration": self.iteration,
            "consecutive_errors": self.consecutive_errors,
            "last_error": self.last_error,
            "best_partial": self.best_partial,
            "compactions": self.compactions,
            "usage": self.usage.to_dict(),
            "context_index": self.context_index,
            "root_prompt": self.root_prompt,
            "error": self.error,
        }

    @classmethod
    def from_record(
        cls, record: dict[str, Any], history: list[dict[str, Any]], session_id: str | None
    ) -> Checkpoint:
        return cls(
            messages=copy.deepcopy(history[: int(record["messages"])]),
            iteration=int(record.get("iteration", 0)),
            consecutive_errors=int(record.get("consecutive_errors", 0)),
            last_error=record.get("last_error"),
            best_partial=record.get("best_partial"),
            compactions=int(record.get("compactions", 0)),
            usage=UsageSummary.from_dict(record.get("usage")),
            context_index=record.get("context_index"),
            root_prompt=record.get("root_prompt"),
            session_id=session_id,
            error=record.get("error"),
        )

    def __repr__(self) -> str:
        return (
            f"Checkpoint(iteration={self.iteration}, messages={len(self.messages)}, "
            f"calls={self.usage.total_calls}, context_index={self.context_index}, "
            f"error={self.error!r})"
        )
