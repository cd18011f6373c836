"""Re-run a recording as it was asked: what ``rlm replay LOG`` and ``rlm.testing`` do.

``replay_recording(path)`` builds an ``RLM`` with the settings recorded with each
completion (``recorded_input``), ``replay=`` the recording, asks each recorded
completion again in order and returns the ``ReplayReport``. What a recording cannot
hold is given by the caller: ``custom_tools`` (only their names are recorded) and any
other ``RLM`` argument (``**overrides``). A completion that raises is compared by its
error, like the recorded one.
"""

from __future__ import annotations

import os
from typing import Any

from rlm.base.errors import ConfigurationError
from rlm.core.replay import ReplayReport
from rlm.logger.replay_log import Recording, RecordingError, load_recording

_SETTINGS = (
    "environment",
    "environment_kwargs",
    "max_depth",
    "max_iterations",
    "custom_system_prompt",
    "persistent",
    "compaction",
    "compaction_threshold_pct",
    "max_concurrent_subcalls",
    "orchestrator",
    "user_prologue",
    "max_output_chars",
    "max_budget",
    "max_timeout",
    "max_tokens",
    "max_errors",
    "max_llm_calls",
)


def rlm_arguments(found: Recording, overrides: dict[str, Any]) -> dict[str, Any]:
    """The ``RLM(...)`` arguments that rebuild the recorded RLM (``overrides`` win)."""
    if not found.inputs:
        raise RecordingError(f"{found.path}: the recording holds no completion input")
    settings = found.inputs[0].get("settings") or {}
    backend = str(settings.get("backend") or (found.metadata or {}).get("backend") or "openai")
    kwargs: dict[str, Any] = {}
    model = settings.get("model_name")
    if isinstance(model, str):
        kwargs["model_name"] = model
    args: dict[str, Any] = {"backend": backend, "backend_kwargs": kwargs}
    for key in _SETTINGS:
        if settings.get(key) is not None:
            args[key] = settings[key]
    others = settings.get("other_backends") or []
    if others:
        models = settings.get("other_models") or [None] * len(others)
        args["other_backends"] = list(others)
        args["other_backend_kwargs"] = [{"model_name": m} if m else {} for m in models]
    tools = settings.get("custom_tools") or []
    if tools and "custom_tools" not in overrides:
        raise ConfigurationError(
            f"the recorded run had custom tools ({', '.join(map(str, tools))}); pass them "
            "again (custom_tools=...) to replay it"
        )
    args.update(overrides)
    return args


def recorded_environment(found: Recording) -> str:
    """The environment the recording's first completion ran in (``local`` if unsaid)."""
    for entry in found.inputs:
        settings = entry.get("settings")
        env = settings.get("environment") if isinstance(settings, dict) else None
        if isinstance(env, str):
            return env
    return "local"


def replay_recording(
    path: str | os.PathLike[str] | Recording, **overrides: Any
) -> tuple[ReplayReport, list[Any]]:
    """Replay every completion of the recording at ``path``: the report, and each
    completion's result (an ``RLMChatCompletion``, or the exception it raised).
    Raises ``RecordingError`` (a ``ValueError``) for a file that is not a recording."""
    from rlm.core.rlm import RLM

    found = path if isinstance(path, Recording) else load_recording(path)
    args = rlm_arguments(found, overrides)
    results: list[Any] = []
    rlm = RLM(**args, replay=found)
    try:
        for entry in found.inputs:
            prompt: Any = entry.get("prompt")
            root_prompt = entry.get("root_prompt")
            schema = entry.get("output_schema")
            try:
                results.append(
                    rlm.completion(
                        prompt,
                        root_prompt if isinstance(root_prompt, str) else None,
                        output_schema=schema if isinstance(schema, dict) else None,
                    )
                )
            except Exception as exc:  # compared with the recorded run's own error
                results.append(exc)
        return rlm.replay_report(), results
    finally:
        rlm.close()


__all__ = ["replay_recording", "rlm_arguments"]
