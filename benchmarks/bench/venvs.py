"""The two interpreters: rlms 0.1.3 in its own venv, this repo in another (or in none).

``rlms==0.1.3`` + ``psutil`` go into a venv under the cache dir; this repo goes,
editable, into a second venv that sees the packages of the interpreter running
``run.py`` (so llama-cpp-python and the GGUF model are found) plus ``psutil``. Both are
reused on later runs. Without ``install`` nothing is created and pip is never called:
rlmx then runs on the current interpreter with this repo first on ``PYTHONPATH``.

How the rlmx venv sees the running interpreter's packages: it is made with
``--system-site-packages``, which shows the *base* interpreter's site-packages only.
When ``run.py`` itself runs in a virtualenv (``sys.prefix != sys.base_prefix``), that
venv's site-packages are added by a ``.pth`` file in the bench venv
(``zz_rlmx_bench_parent.pth``, which imports ``_rlmx_bench_parent.py``), rewritten on
every run from the interpreter of that run, so switching venvs never leaves a stale
path. The same module puts a finder for ``rlm`` at the front of ``sys.meta_path``, so
this repo's ``rlm`` wins over any ``rlm`` installed in the running venv or the base
interpreter (setuptools' editable finder is appended *after* the path finder, so a
plain install elsewhere on the path would otherwise shadow it); the probe checks it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import site
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


_PARENT_PTH = "zz_rlmx_bench_parent.pth"  # after setuptools' __editable__*.pth
_PARENT_MODULE = "_rlmx_bench_parent"
_PARENT_SOURCE = '''"""Written by rlmx's benchmarks/bench/venvs.py on every run; do not edit.

Adds the site-packages of the interpreter that ran benchmarks/run.py (a virtualenv)
and makes ``import rlm`` load the repo the bench venv was made for.
"""

import importlib.machinery
import site
import sys

REPO = {repo!r}
PARENT_SITE_DIRS = {dirs!r}

for _d in PARENT_SITE_DIRS:
    site.addsitedir(_d)  # its .pth files too (editable installs, namespace packages)


class RepoRlmFirst:
    """``rlm`` (and so its submodules) from REPO, before any path entry."""

    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if name != "rlm":
            return None
        return importlib.machinery.PathFinder.find_spec(name, [REPO])


if RepoRlmFirst not in sys.meta_path:
    sys.meta_path.insert(0, RepoRlmFirst)
'''


def parent_site_dirs() -> list[str]:
    """The site-packages of the interpreter running this, when it is a virtualenv.

    ``--system-site-packages`` already shows the base interpreter's, so it is ``[]``
    outside a venv.
    """
    if sys.prefix == sys.base_prefix:
        return []
    return [d for d in site.getsitepackages() if os.path.isdir(d)]


def _site_packages(py: Path) -> Path:
    cp = run_cmd([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"])
    if cp.returncode != 0:
        raise RuntimeError(f"{py} cannot say where its site-packages are: {cp.stderr[-800:]}")
    return Path(cp.stdout.strip())


def link_parent_site(venv_python: Path) -> None:
    """(Re)write the bench venv's ``.pth`` + module for this run's interpreter."""
    target = _site_packages(venv_python)
    source = _PARENT_SOURCE.format(repo=str(REPO), dirs=parent_site_dirs())
    files = {
        target / f"{_PARENT_MODULE}.py": source,
        target / _PARENT_PTH: f"import {_PARENT_MODULE}\n",
    }
    for path, text in files.items():
        if not path.exists() or path.read_text() != text:
            path.write_text(text)


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
        link_parent_site(py)
        it = probe(Interp("rlmx", str(py), _base_env()))
    if not _in_repo(it.rlm_file):
        raise RuntimeError(f"the rlmx interpreter imports rlm from {it.rlm_file}, not {REPO}")
    return it
