"""The two interpreters: rlms 0.1.3 in its own venv, this repo in another (or in none).

``rlms==0.1.3`` + ``psutil`` go into a venv under the cache dir; this repo goes,
editable, into a second venv that sees the current interpreter's packages
(``--system-site-packages``, so llama-cpp-python and the GGUF model are found) plus
``psutil``. Both are reused on later runs. Without ``install`` nothing is created and
pip is never called: rlmx then runs on the current interpreter with this repo first
on ``PYTHONPATH``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import REPO, RLMS_SPEC


@dataclass
class Interp:
    name: str
    python: str
    env: dict[str, str]
    rlm_file: str = ""
    version: str = ""
    psutil: bool = False


def run_cmd(cmd: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, text=True, capture_output=True, stdin=subprocess.DEVNULL, **kw)


def _check(cmd: list[str], what: str) -> None:
    print(f"[bench] {what}: {shlex.join(cmd)}", file=sys.stderr, flush=True)
    cp = run_cmd(cmd)
    if cp.returncode != 0:
        sys.exit(f"[bench] {what} failed (rc={cp.returncode}):\n{(cp.stderr or cp.stdout)[-3000:]}")


_PROBE = (
    "import json, importlib.util as u, rlm\n"
    "from importlib import metadata as md\n"
    "v = {}\n"
    "for d in ('rlms', 'rlmx'):\n"
    "    try: v[d] = md.version(d)\n"
    "    except Exception: pass\n"
    "print(json.dumps({'rlm_file': rlm.__file__, 'dists': v,"
    " 'psutil': u.find_spec('psutil') is not None}))"
)


def probe(interp: Interp) -> Interp:
    cp = run_cmd([interp.python, "-c", _PROBE], env=interp.env, cwd=tempfile.gettempdir())
    if cp.returncode != 0:
        raise RuntimeError(f"{interp.python} cannot import rlm: {cp.stderr[-1500:]}")
    info = json.loads(cp.stdout.strip().splitlines()[-1])
    interp.rlm_file = info["rlm_file"]
    interp.psutil = info["psutil"]
    dist = "rlms" if interp.name == "rlms" else "rlmx"
    interp.version = f"{dist} {info['dists'].get(dist, '?')}"
    return interp


def _venv_python(d: Path) -> Path:
    return d / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def _base_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    env.pop("PYTHONHOME", None)
    return env


def rlms_interp(cache: Path, install: bool) -> Interp:
    d = cache / "rlms-0.1.3"
    py = _venv_python(d)
    marker = d / ".rlmx-bench-ok"
    want = f"{RLMS_SPEC} psutil"
    if not (py.exists() and marker.exists() and marker.read_text() == want):
        if not install:
            raise RuntimeError(f"no rlms venv at {d} and --no-install was given")
        _check([sys.executable, "-m", "venv", "--clear", str(d)], "create the rlms venv")
        _check([str(py), "-m", "pip", "install", "-q", RLMS_SPEC, "psutil"], "install rlms")
        marker.write_text(want)
    it = probe(Interp("rlms", str(py), _base_env()))
    if not Path(it.rlm_file).resolve().is_relative_to(d.resolve()):
        raise RuntimeError(f"the rlms venv imports rlm from {it.rlm_file}")
    return it


def _in_repo(path: str) -> bool:
    return Path(path).resolve().is_relative_to(REPO / "rlm")


def rlmx_interp(cache: Path, install: bool) -> Interp:
    if not install:  # the current interpreter, with this repo first on the path
        env = _base_env()
        env["PYTHONPATH"] = str(REPO)
        it = probe(Interp("rlmx", sys.executable, env))
    else:
        key = hashlib.sha1(str(REPO).encode()).hexdigest()[:10]
        d = cache / f"rlmx-{key}"
        py = _venv_python(d)
        marker = d / ".rlmx-bench-ok"
        want = f"-e {REPO} psutil (system site packages of {sys.base_prefix})"
        if not (py.exists() and marker.exists() and marker.read_text() == want):
            _check(
                [sys.executable, "-m", "venv", "--clear", "--system-site-packages", str(d)],
                "create the rlmx venv",
            )
            _check([str(py), "-m", "pip", "install", "-q", "psutil"], "install psutil")
            _check(
                [str(py), "-m", "pip", "install", "-q", "--no-deps", "-e", str(REPO)],
                "install this repo (editable)",
            )
            marker.write_text(want)
        it = probe(Interp("rlmx", str(py), _base_env()))
    if not _in_repo(it.rlm_file):
        raise RuntimeError(f"the rlmx interpreter imports rlm from {it.rlm_file}, not {REPO}")
    return it
