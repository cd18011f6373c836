"""docs/architecture.md stays true: every package appears in it, and every module path
it names exists."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DOC = (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")


def test_every_package_is_on_the_map() -> None:
    packages = sorted(
        str(p.parent.relative_to(REPO / "rlm"))
        for p in (REPO / "rlm").rglob("__init__.py")
        if p.parent != REPO / "rlm" and "__pycache__" not in p.parts
    )
    missing = [p for p in packages if f"{p.rsplit('/', 1)[-1]}/" not in DOC]
    assert not missing, f"docs/architecture.md does not mention: {missing}"


def test_every_module_path_it_names_exists() -> None:
    names = set(re.findall(r"`((?:rlm/)?[a-z_]+(?:/[a-z_]+)*\.py)", DOC))
    names |= set(
        re.findall(
            r"^\s*(?:\S.*?)?\b((?:core|clients|environments|sessions|logger"
            r"|base)/[a-z_/]+\.py)",
            DOC,
            flags=re.M,
        )
    )
    assert len(names) > 20  # the page names modules; a broken pattern must not pass
    files = [p.relative_to(REPO).as_posix() for p in REPO.rglob("*.py") if ".venv" not in p.parts]
    missing = [n for n in names if not any(f == n or f.endswith("/" + n) for f in files)]
    assert not missing, f"docs/architecture.md names modules that do not exist: {missing}"
