"""Saving an environment's namespace with a turn, and putting it back on resume.

Two forms, chosen by what the environment offers:

* ``parts`` (LocalREPL's ``snapshot_delta()``): a JSON manifest of entries plus the
  bodies that changed since the last turn, each stored once by its sha256. A turn that
  leaves a 10 MB variable alone writes a few hundred bytes.
* ``bytes`` (any ``SupportsSnapshot``, e.g. the worker environments): the environment's
  own ``snapshot()`` bytes, stored as one content-addressed blob.

Either restores into either kind of environment: a parts manifest is turned into the
worker's blob format for an environment that only has ``restore(bytes)``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from rlm.environments.base_env import SupportsSnapshot
from rlm.environments.worker_state import WorkerState
from rlm.sessions.models import SnapshotRead, SnapshotWrite

PARTS_FORMAT = "rlmx-snapshot-parts"
NOT_SAVED = "could not be saved with the session"
NOT_RESTORED = "could not be restored"


def capture(env: Any) -> SnapshotWrite | None:
    """The namespace of ``env`` for this turn's row, or ``None`` if it cannot snapshot."""
    delta = getattr(env, "snapshot_delta", None)
    if callable(delta):
        metas, bodies, unsaved = delta()
        manifest = {"format": PARTS_FORMAT, "version": 1, "entries": metas, "unsaved": unsaved}
        data = json.dumps(manifest, sort_keys=True, separators=(",", ":"), default=str).encode()
        digests = [str(m["digest"]) for m in metas if m.get("digest")]
        return SnapshotWrite("parts", data, bodies, digests, dict(unsaved))
    if isinstance(env, SupportsSnapshot):
        data, unsaved_names = env.snapshot()
        return SnapshotWrite("bytes", data, unrestorable=dict.fromkeys(unsaved_names, NOT_SAVED))
    return None


def forget(env: Any) -> None:
    """The captured delta was not stored: the next capture carries every body."""
    reset = getattr(env, "snapshot_reset", None)
    if callable(reset):
        reset()


def restore(
    env: Any, snap: SnapshotRead, load_part: Callable[[str], bytes | bytearray]
) -> dict[str, str]:
    """Rebind the saved namespace into ``env``; returns ``{name: why}`` for every
    variable that is not back (never saved, or failed to load)."""
    if snap.kind == "bytes":
        if not isinstance(env, SupportsSnapshot):
            return {"*": f"{type(env).__name__} cannot restore variables"}
        return dict.fromkeys(env.restore(bytes(snap.data)), NOT_RESTORED)
    manifest = json.loads(snap.data)
    if manifest.get("format") != PARTS_FORMAT:
        raise ValueError("not an rlmx parts snapshot")
    entries: list[dict[str, Any]] = manifest["entries"]
    lost: dict[str, str] = dict(manifest.get("unsaved") or {})
    restore_parts = getattr(env, "restore_parts", None)
    if callable(restore_parts):
        failed = restore_parts(entries, lambda digest: bytes(load_part(digest)))
    elif isinstance(env, SupportsSnapshot):
        failed = env.restore(_worker_blob(entries, load_part))
    else:
        failed = [str(e["name"]) for e in entries]
        return {**lost, **dict.fromkeys(failed, f"{type(env).__name__} cannot restore variables")}
    return {**lost, **dict.fromkeys(failed, NOT_RESTORED)}


def _worker_blob(
    entries: list[dict[str, Any]], load_part: Callable[[str], bytes | bytearray]
) -> bytes:
    """A parts manifest in the worker environments' ``restore()`` format."""
    state = WorkerState(False, 1 << 62)
    for meta in entries:
        digest = meta.get("digest")
        body = bytes(load_part(digest)) if digest else None
        state.entries[str(meta["name"])] = ({k: v for k, v in meta.items() if k != "digest"}, body)
    return state.to_blob()
