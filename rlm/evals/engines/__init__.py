"""Engines run work items and hand back their result rows, one by one, as they finish.

``local``: threads in this process (``LocalEngine``). ``ray``: Ray tasks on a local or
remote cluster (``RayEngine``, in ``engines.ray``; needs ``pip install 'rlmx[ray]'``,
imported only when chosen). Both call ``execute`` for each item, so rows are the same
whichever runs them; the runner writes each row as it arrives, which is what makes a
run resumable. Neither engine retries a failed run (a failure is a result).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from rlm.evals.records import WorkItem

OnResult = Callable[[dict[str, Any]], None]
ENGINES = ("local", "ray")


class Engine(Protocol):
    name: str

    def run(self, items: Sequence[WorkItem], on_result: OnResult) -> dict[str, Any]:
        """Run ``items``; call ``on_result`` (in the caller's thread) with each row.
        Returns facts about the run (workers, the LM call cap and its peak)."""
        ...


def make_engine(name: str, **options: Any) -> Engine:
    """The engine called ``name`` with ``options`` (see each engine's constructor)."""
    if name == "local":
        from rlm.evals.engines.local import LocalEngine

        return LocalEngine(**options)
    if name == "ray":
        if importlib.util.find_spec("ray") is None:
            raise ValueError("the ray engine needs Ray: pip install 'rlmx[ray]'")
        from rlm.evals.engines.ray import RayEngine

        return RayEngine(**options)
    raise ValueError(f"unknown engine {name!r}; known: {', '.join(ENGINES)}")


__all__ = ["ENGINES", "Engine", "OnResult", "make_engine"]
