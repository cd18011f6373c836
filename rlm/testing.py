"""pytest helpers: turn a recorded run into a regression test.

Record once, against a real model::

    from rlm import RLM
    from rlm.logger import RLMLogger

    rlm = RLM(backend="openai", backend_kwargs={"model_name": "gpt-5-mini"},
              logger=RLMLogger(log_dir="tests/recordings"), record=True)
    rlm.completion(context, root_prompt="...")

then, in a test (no model, no network, no key)::

    from rlm.testing import assert_replays

    def test_report_pipeline():
        assert_replays("tests/recordings/rlm_....jsonl")

``replay_run(path)`` returns the ``ReplayReport`` (``identical``, ``divergences``,
``summary()``) and ``assert_replays(path)`` fails with the report's summary when the
replay diverged. Both re-run every recorded completion with the recorded settings;
``**overrides`` are passed to ``RLM(...)`` (``custom_tools=`` for a run that had tools).
To replay your own code instead, build the RLM with ``replay=path`` and call
``rlm.replay_report()`` after it ran.
"""

from __future__ import annotations

import os
from typing import Any

from rlm.core.replay import Divergence, ReplayReport
from rlm.core.replay_run import replay_recording


class ReplayDivergedError(AssertionError):
    """A replayed run did not do what its recording did; ``report`` says where."""

    def __init__(self, report: ReplayReport) -> None:
        self.report = report
        super().__init__(report.summary())


def replay_run(path: str | os.PathLike[str], **overrides: Any) -> ReplayReport:
    """Replay the run recorded at ``path`` and return where it diverged."""
    report, _ = replay_recording(path, **overrides)
    return report


def assert_replays(path: str | os.PathLike[str], **overrides: Any) -> ReplayReport:
    """Replay the run recorded at ``path``; raise ``ReplayDivergedError`` (an
    ``AssertionError``) naming each divergence unless it did exactly the same."""
    report = replay_run(path, **overrides)
    if not report.identical:
        raise ReplayDivergedError(report)
    return report


__all__ = ["Divergence", "ReplayDivergedError", "ReplayReport", "assert_replays", "replay_run"]
