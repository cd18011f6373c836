"""Deciding what a turn resumes from, and what the model is told after a resume.

Called by ``rlm.core.session.Session`` when a turn opens. ``resume`` is the argument of
``completion(..., resume=)``:

* a ``Checkpoint``: go on from it (from ``exc.checkpoint`` of a limit error);
* ``True``: go on from this session's stopped last turn (an error if there is none);
* ``False``: never resume;
* ``None`` (the default): a durable session asked the same again (same context and
  root prompt) after its last turn stopped goes on with that turn; otherwise a new turn.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rlm.base.checkpoint import Checkpoint
from rlm.base.errors import ConfigurationError
from rlm.base.ports import SupportsSnapshot
from rlm.core.snapshots import vet_blob

if TYPE_CHECKING:
    from rlm.core.durable import DurableSession

Resume = Checkpoint | bool | None


def resume_point(
    resume: Resume,
    pending: Checkpoint | None,
    durable: DurableSession | None,
    prompt: Any,
    root_prompt: str | None,
) -> Checkpoint | None:
    """The checkpoint the new turn continues, or ``None`` for a fresh turn. ``pending``
    is the session's own stopped last turn, if any."""
    if isinstance(resume, Checkpoint):
        return resume
    if resume is True:
        pending = pending or (durable.pending() if durable is not None else None)
        if pending is None:
            raise ConfigurationError("resume=True, but this session has no stopped turn")
        return pending
    if resume not in (None, False):
        raise ConfigurationError(
            f"resume must be a Checkpoint, True, False or None, not {type(resume).__name__}"
        )
    if resume is None and durable is not None and durable.same_request(prompt, root_prompt):
        return durable.pending()
    return None


def restore_one_shot(env: Any, checkpoint: Checkpoint, owned: bool = True) -> str | None:
    """Give the fresh environment of a run that resumes another session's stopped turn
    (a one-shot run's, or another RLM's) that turn's variables; returns the note for
    the model. An ``owned`` (one-shot) environment is cleaned up if this fails."""
    lost = dict.fromkeys(checkpoint.unsaved, "could not be saved")
    if checkpoint.snapshot is not None:
        try:
            if not isinstance(env, SupportsSnapshot):
                raise ConfigurationError(f"{type(env).__name__} cannot restore variables")
            refused = vet_blob(env, checkpoint.snapshot)  # e.g. a sandbox's, into local
            if refused is not None:
                lost.update(refused)
            else:
                restored = env.restore(checkpoint.snapshot)
                lost.update(dict.fromkeys(restored, "could not be restored"))
        except BaseException:
            if owned:
                env.cleanup()
            raise
    return restore_note(lost, "this run was resumed after it stopped")


def restore_note(lost: dict[str, str], what: str) -> str | None:
    """What the model is told about variables a resume could not bring back."""
    if not lost:
        return None
    if "*" in lost:
        return f"Note: {what}; your REPL variables are not back ({lost['*']})."
    shown = "; ".join(f"{name} ({why})" for name, why in sorted(lost.items())[:20])
    more = f"; and {len(lost) - 20} more" if len(lost) > 20 else ""
    return (
        f"Note: {what}. Every context_N, history_N and final_answer_N is there, and so "
        "are your variables except these, which could not be restored (recreate them "
        f"if you need them): {shown}{more}."
    )
