"""Run one task with the ``rlms`` package, in another interpreter, in a subprocess.

rlms and rlmx share the import name ``rlm``, so rlms runs in the interpreter the user
names (a venv with ``pip install rlms``), never in this one and never copied. The
request (``RLM(...)`` arguments, context, question) goes to the child's stdin as JSON;
the child prints one marked JSON line with the reply and usage, or the error. The
child runs in an empty temporary directory with this package's directory kept off
``sys.path``, so ``import rlm`` there is rlms. Arguments rlms does not know are dropped
and listed in the result (``ignored``), never silently.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from dataclasses import dataclass, field
from typing import Any

from rlm.base.redact import redact_text

MARKER = "@@RLMX-EVAL-RESULT@@"

# Runs under the rlms interpreter: standard library and rlms only.
WORKER = r"""
import inspect, json, os, sys, time
sys.path = [p for p in sys.path if p not in ("", ".", os.getcwd())]
MARKER = "@@RLMX-EVAL-RESULT@@"

def emit(payload):
    sys.stdout.write("\n" + MARKER + json.dumps(payload) + "\n")
    sys.stdout.flush()

request = json.loads(sys.stdin.read())
try:
    import importlib.metadata as md
    version = md.version("rlms")
    from rlm import RLM
except Exception as exc:
    emit({"ok": False, "type": type(exc).__name__, "kind": "config",
          "message": "this interpreter has no rlms (pip install rlms): %s" % exc})
    sys.exit(0)
accepted = set(inspect.signature(RLM.__init__).parameters)
kwargs = {k: v for k, v in request["rlm_kwargs"].items() if k in accepted}
ignored = sorted(set(request["rlm_kwargs"]) - accepted)
start = time.perf_counter()
try:
    rlm = RLM(backend=request["backend"], backend_kwargs=request["backend_kwargs"], **kwargs)
    result = rlm.completion(request["context"], root_prompt=request["question"])
    emit({"ok": True, "response": result.response, "usage": result.usage_summary.to_dict(),
          "execution_time": result.execution_time, "version": version, "ignored": ignored})
except Exception as exc:
    emit({"ok": False, "type": type(exc).__name__, "message": str(exc)[:4000],
          "partial_answer": getattr(exc, "partial_answer", None), "version": version,
          "ignored": ignored, "elapsed": time.perf_counter() - start})
"""


@dataclass
class RlmsResult:
    """What the child reported (``ok`` False: ``error_type``/``message`` say why)."""

    ok: bool
    response: str | None = None
    usage: dict[str, Any] = field(default_factory=dict)
    error_type: str | None = None
    message: str | None = None
    kind: str | None = None
    version: str | None = None
    ignored: list[str] = field(default_factory=list)


def run_rlms(
    python: str,
    backend: str,
    backend_kwargs: dict[str, Any],
    rlm_kwargs: dict[str, Any],
    context: Any,
    question: str,
    timeout: float | None = None,
) -> RlmsResult:
    """One ``rlms`` completion in the interpreter ``python``."""
    if not os.path.isfile(python) or not os.access(python, os.X_OK):
        return RlmsResult(
            False,
            error_type="FileNotFoundError",
            kind="config",
            message=f"no Python interpreter at {python!r} (point --rlms-python at a venv's python)",
        )
    request = json.dumps(
        {
            "backend": backend,
            "backend_kwargs": backend_kwargs,
            "rlm_kwargs": rlm_kwargs,
            "context": context,
            "question": question,
        }
    )
    with tempfile.TemporaryDirectory(prefix="rlmx-eval-rlms-") as workdir:
        try:
            proc = subprocess.run(
                [python, "-c", WORKER],
                input=request,
                capture_output=True,
                text=True,
                cwd=workdir,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return RlmsResult(
                False,
                error_type="TimeoutExpired",
                kind="limit",
                message=f"the rlms subprocess ran past {timeout:.0f} s and was killed",
            )
    lines = [line for line in proc.stdout.splitlines() if line.startswith(MARKER)]
    if not lines:
        tail = redact_text((proc.stderr or proc.stdout)[-2000:])
        return RlmsResult(
            False,
            error_type="SubprocessError",
            kind="error",
            message=f"rlms exited with status {proc.returncode} without a result: {tail}",
        )
    payload: dict[str, Any] = json.loads(lines[-1][len(MARKER) :])
    return RlmsResult(
        ok=bool(payload.get("ok")),
        response=payload.get("response") if payload.get("ok") else payload.get("partial_answer"),
        usage=payload.get("usage") or {},
        error_type=payload.get("type"),
        message=redact_text(str(payload["message"])) if payload.get("message") else None,
        kind=payload.get("kind"),
        version=payload.get("version"),
        ignored=list(payload.get("ignored") or []),
    )
