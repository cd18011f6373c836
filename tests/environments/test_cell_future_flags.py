"""Model-written code is compiled on its own terms: the engine's modules use
``from __future__ import annotations``, and a cell must not inherit it (its
annotations would become strings, and a Pydantic model or a dataclass defined in the
REPL could not resolve the names they refer to)."""

from __future__ import annotations

import pytest

from rlm.environments import get_environment

CODE = """
def f(x: int) -> str: ...
print(f.__annotations__ == {"x": int, "return": str})
"""


@pytest.mark.parametrize("name", ["local", "ipython", "sandbox"])
def test_cell_annotations_are_evaluated(name: str) -> None:
    if name == "ipython":
        pytest.importorskip("IPython")
    env = get_environment(name, {})
    try:
        result = env.execute_code(CODE)
    finally:
        env.cleanup()
    assert not result.stderr, result.stderr
    assert result.stdout.strip() == "True"
