"""Shared plumbing for the extra scenario scripts: find and load the shared harness.

The harness (``rlm_bench.py``) is not copied into this repo. It lives in
``../shared/bench/`` next to the repo root (CI has a copy of ``shared/`` beside the
clone); ``$RLM_BENCH_DIR`` points elsewhere.

Every scenario script here registers its scenarios in the harness's ``SCENARIOS``
table and then runs the harness's own ``main``: the harness does the process
isolation, the aggregation (median/min/max over correct samples), the noise
records, the table and the JSON, so the output shape is the harness's.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

REPO_ROOT = Path(__file__).resolve().parents[2]
HARNESS_ENV_VAR = "RLM_BENCH_DIR"


def harness_dir() -> Path:
    """Folder holding ``rlm_bench.py``: ``$RLM_BENCH_DIR`` or ``<repo>/../shared/bench``."""
    override = os.environ.get(HARNESS_ENV_VAR)
    return Path(override) if override else REPO_ROOT.parent / "shared" / "bench"


def load_harness() -> ModuleType:
    """Import ``rlm_bench`` from the shared folder (once per process)."""
    if "rlm_bench" in sys.modules:
        return sys.modules["rlm_bench"]
    path = harness_dir() / "rlm_bench.py"
    if not path.is_file():
        sys.exit(
            f"rlm_bench.py not found at {path}; set ${HARNESS_ENV_VAR} to the folder "
            "that holds the shared harness"
        )
    spec = importlib.util.spec_from_file_location("rlm_bench", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["rlm_bench"] = module
    spec.loader.exec_module(module)
    return module


def run_harness_main(hb: ModuleType, script: str, argv: list[str], default_only: str) -> int:
    """Run the harness's ``main`` with this script as the child entry point.

    The harness starts each (scenario, variant, repeat) as ``python <its __file__>
    --_child ...``. Pointing its ``__file__`` at ``script`` makes those children run
    the calling script, which registers the same extra scenarios before it hands
    over to the harness again.
    """
    hb.__file__ = os.path.abspath(script)
    if "--_child" not in argv and "--only" not in argv and "--list" not in argv:
        argv = [*argv, "--only", default_only]
    return hb.main(argv)


def pre_parse(argv: list[str]) -> tuple[bool, str | None]:
    """(``--quick``, ``--s4-sizes``) from argv, before the harness parses it."""
    quick = "--quick" in argv
    sizes = None
    for i, arg in enumerate(argv):
        if arg == "--s4-sizes" and i + 1 < len(argv):
            sizes = argv[i + 1]
        elif arg.startswith("--s4-sizes="):
            sizes = arg.split("=", 1)[1]
    return quick, sizes


def missing_environment(name: str) -> str | None:
    """Why ``environment=name`` cannot run with the imported ``rlm``, or ``None``."""
    try:
        from rlm.environments import _REGISTRY  # rlmx's registry
    except ImportError:
        return f"this rlm has no environment registry, so no {name!r} environment"
    entry = _REGISTRY.get(name)
    if entry is None:
        return f"environment {name!r} is not registered in this rlm"
    if importlib.util.find_spec(entry.module) is None:
        return f"environment {name!r} is not implemented yet ({entry.module} does not exist)"
    return None
