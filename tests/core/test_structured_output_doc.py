"""The Python examples of ``docs/structured-output.md`` run as written (offline: the
scripted backend, and the embedded model where it is installed); each example's
``# ...`` comments after ``print`` are checked against what it printed."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from rlm.clients.embedded_model import default_gguf_path

DOC = Path(__file__).resolve().parents[2] / "docs" / "structured-output.md"
BLOCKS = re.findall(r"^```python\n(.*?)^```$", DOC.read_text("utf-8"), re.M | re.S)
RUNNABLE = [b for b in BLOCKS if not b.startswith("# needs:")]
GGUF = default_gguf_path()
HAS_MODEL = (
    importlib.util.find_spec("llama_cpp") is not None and bool(GGUF) and os.path.isfile(str(GGUF))
)


def _expected(block: str) -> list[str]:
    """The ``# value`` comments after a ``print(...)`` line (``e.g.`` ones excluded)."""
    found = re.findall(r"^print\(.*\)\s+# (.+)$", block, re.M)
    return [f for f in found if not f.startswith("e.g.")]


@pytest.mark.parametrize("block", RUNNABLE, ids=[f"example{i}" for i in range(len(RUNNABLE))])
def test_the_example_runs(block: str) -> None:
    if "LlamaCppClient" in block and not HAS_MODEL:
        pytest.skip("needs llama-cpp-python and the embedded GGUF model")
    pytest.importorskip("pydantic")
    done = subprocess.run(
        [sys.executable, "-c", block], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    for value in _expected(block):
        assert value in done.stdout, (value, done.stdout)


def test_the_doc_has_its_examples() -> None:
    assert len(RUNNABLE) >= 5
