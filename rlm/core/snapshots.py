"""Saving an environment's namespace with a turn, and putting it back on resume.

Two forms, chosen by what the environment offers:

* ``parts`` (``snapshot_delta()``: LocalREPL and the worker environments, sandbox,
  IPython kernel, docker...): a JSON manifest of entries plus the bodies that changed
  since the last turn, each stored once by its sha256. A turn that leaves a 10 MB
  variable alone writes a few hundred bytes. Contexts and histories are not in it: the
  store keeps each turn's own, once.
* ``bytes`` (any other ``SupportsSnapshot``): the environment's own ``snapshot()``
  bytes, stored as one content-addressed blob.

Either restores into either kind of environment: a parts manifest is turned into the
worker's blob format for an environment that only has ``restore(bytes)``.

Provenance: each snapshot records which kind of environment wrote it (``origin``: the
manifest's field, the blob's own). Variables written where model code ran with fewer
privileges are not restored where it would gain some: an isolated worker's (sandbox,
docker, modal, e2b, daytona, prime) only into an isolated worker, an IPython kernel's
not into the host process. Such a restore binds no variable, reports each one with the
reason (the model is told) and warns; ``trust_snapshots=True`` in the environment's
keywords lifts it. A parts manifest without ``origin`` was written by an in-process
environment (only those wrote parts); a blob without one counts as untrusted.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from typing import Any

from rlm.environments.base_env import IsolatedEnv, SupportsSnapshot
from rlm.environments.host.state import (
    ORIGIN_HOST,
    ORIGIN_ISOLATED,
    ORIGIN_LOCAL_PROCESS,
    WorkerState,
    refusal,
)
from rlm.sessions.models import SnapshotRead, SnapshotWrite

PARTS_FORMAT = "rlmx-snapshot-parts"
NOT_SAVED = "could not be saved with the session"
NOT_RESTORED = "could not be restored"


def capture(env: Any) -> SnapshotWrite | None:
    """The namespace of ``env`` for this turn's row, or ``None`` if it cannot snapshot."""
    delta = getattr(env, "snapshot_delta", None)
    if callable(delta):
        metas, bodies, unsaved = delta()
        manifest = {
            "format": PARTS_FORMAT,
            "version": 1,
            "origin": env_origin(env),
            "entries": metas,
            "unsaved": unsaved,
        }
        data = json.dumps(manifest, sort_keys=True, separators=(",", ":"), default=str).encode()
        digests = [str(m["digest"]) for m in metas if m.get("digest")]
        # the store may take the digests as given only if this process computed them
        here = getattr(type(env), "delta_hashed_here", False) is True
        return SnapshotWrite("parts", data, bodies, digests, dict(unsaved), hashed_here=here)
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
        data = bytes(snap.data)
        refused = vet_blob(env, data)
        if refused is not None:
            return refused
        return dict.fromkeys(env.restore(data), NOT_RESTORED)
    manifest = json.loads(snap.data)
    if manifest.get("format") != PARTS_FORMAT:
        raise ValueError("not an rlmx parts snapshot")
    entries: list[dict[str, Any]] = manifest["entries"]
    lost: dict[str, str] = dict(manifest.get("unsaved") or {})
    why = _vet(env, str(manifest.get("origin") or ORIGIN_HOST))
    if why is not None:
        return {**lost, **{str(e["name"]): why for e in entries}}
    restore_parts = getattr(env, "restore_parts", None)
    if callable(restore_parts):
        failed = restore_parts(entries, lambda digest: bytes(load_part(digest)))
    elif isinstance(env, SupportsSnapshot):
        failed = env.restore(_worker_blob(entries, load_part, str(manifest.get("origin") or "")))
    else:
        failed = [str(e["name"]) for e in entries]
        return {**lost, **dict.fromkeys(failed, f"{type(env).__name__} cannot restore variables")}
    return {**lost, **dict.fromkeys(failed, NOT_RESTORED)}


def _worker_blob(
    entries: list[dict[str, Any]], load_part: Callable[[str], bytes | bytearray], origin: str
) -> bytes:
    """A parts manifest in the worker environments' ``restore()`` format."""
    state = WorkerState(False, 1 << 62)
    for meta in entries:
        digest = meta.get("digest")
        body = bytes(load_part(digest)) if digest else None
        state.entries[str(meta["name"])] = ({k: v for k, v in meta.items() if k != "digest"}, body)
    return state.to_blob(origin or ORIGIN_HOST)


def env_origin(env: Any) -> str:
    """Where ``env`` runs model code, and so unpickles what it restores."""
    engine = getattr(env, "_engine", None) or env  # IPythonREPL runs one of two engines
    if isinstance(env, IsolatedEnv) or isinstance(engine, IsolatedEnv):
        return ORIGIN_ISOLATED
    from rlm.environments.host.worker_env import WorkerEnv  # a worker outside a sandbox

    return ORIGIN_LOCAL_PROCESS if isinstance(engine, WorkerEnv) else ORIGIN_HOST


def trusts_snapshots(env: Any) -> bool:
    """Whether ``env`` was made with ``trust_snapshots=True`` (``environment_kwargs``)."""
    kwargs = getattr(env, "kwargs", None)
    return isinstance(kwargs, dict) and bool(kwargs.get("trust_snapshots"))


def vet_blob(env: Any, data: bytes) -> dict[str, str] | None:
    """``None`` if ``env`` may restore the worker-format blob ``data``; else every
    variable in it with the reason it is not restored. Reads the blob's host-made
    envelope (the worker's entries stay opaque bytes); an unreadable blob is left to
    ``env.restore`` to reject."""
    try:
        state = WorkerState.from_blob(data, False, 1 << 62)
    except Exception:
        return None
    why = _vet(env, state.origin)
    if why is None:
        return None
    return {**state.unsaved, **dict.fromkeys(state.entries, why)}


def _vet(env: Any, writer: str) -> str | None:
    if trusts_snapshots(env):
        return None
    why = refusal(writer, env_origin(env))
    if why is not None:
        warnings.warn(
            f"{type(env).__name__} did not restore the saved REPL variables ({why}). "
            "Resume in an isolated environment, or pass trust_snapshots=True in "
            "environment_kwargs if you trust the code that wrote them.",
            RuntimeWarning,
            stacklevel=3,
        )
    return why
