"""The floors of ``rlm``, checked from every module's imports (read with ``ast``).

    base                                   standard library only, nothing else of rlm
    clients  environments  sessions  logger  each stands on base alone
    core  (the engine)                     stands on base and the wings
    cli  server  mcp_server  viewer        the surfaces, on top

A module may import its own package and the floors below it, never a floor above it
or a neighbour on its own floor (the surfaces excepted: ``cli`` runs the others).
Nothing inside ``rlm`` imports a compatibility path (a module that makes itself an
alias of another through ``sys.modules``); those exist for code outside. Every import
counts, also the ones inside functions and under ``TYPE_CHECKING``.
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "rlm"

FLOORS: dict[str, int] = {
    "base": 0,
    "clients": 1,
    "environments": 1,
    "sessions": 1,
    "logger": 1,
    "core": 2,
    "utils": 3,  # compatibility paths only (rlms's ``rlm.utils.*``), aliases of core/base
    "cli": 3,
    "server": 3,
    "mcp_server": 3,
    "viewer": 3,
    "evals": 3,
    "": 4,  # rlm/__init__.py (the public names) and rlm/__main__.py
}
NEIGHBOURS_ALLOWED = {3}  # surfaces may use each other (no cycles, checked below)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _package(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return ""
    if len(parts) == 2 and not (PKG / parts[1]).is_dir():
        return ""
    return parts[1]


def _imports(path: Path) -> list[tuple[int, str, bool]]:
    """(line, imported module, at module level) for every import in ``path``."""
    module = _module_name(path)
    is_package = path.name == "__init__.py"
    tree = ast.parse(path.read_text(encoding="utf-8"))
    top_level = {id(node) for node in tree.body}
    found: list[tuple[int, str, bool]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name, id(node) in top_level) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                if not is_package:
                    base = base[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            if target in ("rlm", "rlm.") or (
                target.count(".") == 1 and (PKG / target.split(".")[1]).is_dir()
            ):
                # ``from rlm.core import comms_utils`` imports rlm.core.comms_utils
                found += [
                    (node.lineno, f"{target}.{a.name}", id(node) in top_level) for a in node.names
                ]
            else:
                found.append((node.lineno, target, id(node) in top_level))
    return found


def _sources() -> list[Path]:
    return sorted(p for p in PKG.rglob("*.py") if "__pycache__" not in p.parts)


def _is_alias(path: Path) -> bool:
    return "sys.modules[__name__] =" in path.read_text(encoding="utf-8")


SOURCES = _sources()
ALIASES = {_module_name(p) for p in SOURCES if _is_alias(p)}


def _resolve(target: str) -> str:
    """The module an import names: ``rlm.core.types.Foo`` and ``rlm.core.types`` are
    both ``rlm.core.types``."""
    parts = target.split(".")
    while parts:
        candidate = PKG.parent.joinpath(*parts)
        if candidate.with_suffix(".py").is_file() or (candidate / "__init__.py").is_file():
            return ".".join(parts)
        parts.pop()
    return target


def test_every_package_has_a_floor() -> None:
    packages = {_package(_module_name(p)) for p in SOURCES}
    assert packages <= set(FLOORS), f"packages without a floor: {packages - set(FLOORS)}"


def test_the_compatibility_paths_are_the_expected_ones() -> None:
    # rlms's own paths must stay importable; each of these is an alias, not a copy.
    for path in (
        "rlm.core.types",
        "rlm.core.comms_utils",
        "rlm.utils.exceptions",
        "rlm.utils.parsing",
        "rlm.utils.prompts",
        "rlm.utils.rlm_utils",
    ):
        assert path in ALIASES, path


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PKG)))
def test_module_imports_respect_the_floors(path: Path) -> None:
    module = _module_name(path)
    own = _package(module)
    floor = FLOORS[own]
    problems: list[str] = []
    for line, target, top in _imports(path):
        if target == "rlm" or target.startswith("rlm."):
            resolved = _resolve(target)
            if resolved in ALIASES and module not in ALIASES:
                problems.append(f"line {line}: imports the compatibility path {resolved}")
                continue
            other = _package(resolved)
            if other == own:
                continue
            if FLOORS[other] > floor:
                problems.append(
                    f"line {line}: {own or 'rlm'} (floor {floor}) imports "
                    f"{resolved} (floor {FLOORS[other]}, above)"
                )
            elif FLOORS[other] == floor and floor not in NEIGHBOURS_ALLOWED:
                problems.append(f"line {line}: {own} imports its neighbour {resolved}")
        elif own == "base" and top:
            root = target.split(".")[0]
            if root not in sys.stdlib_module_names and root != "__future__":
                problems.append(f"line {line}: the ground floor imports {target} (not stdlib)")
    assert not problems, f"{path.relative_to(PKG.parent)}:\n" + "\n".join(problems)


def test_no_import_cycles_between_packages() -> None:
    graph: dict[str, set[str]] = defaultdict(set)
    for path in SOURCES:
        module = _module_name(path)
        if module in ALIASES:
            continue
        for _, target, _ in _imports(path):
            if target.startswith("rlm."):
                other = _package(_resolve(target))
                if other != _package(module):
                    graph[_package(module)].add(other)
    seen: set[str] = set()
    stack: list[str] = []

    def visit(node: str) -> None:
        if node in stack:
            cycle = [*stack[stack.index(node) :], node]
            pytest.fail("package import cycle: " + " -> ".join(n or "rlm" for n in cycle))
        if node in seen:
            return
        stack.append(node)
        for nxt in sorted(graph[node]):
            visit(nxt)
        stack.pop()
        seen.add(node)

    for node in sorted(graph):
        visit(node)


def test_the_scan_sees_a_violation() -> None:
    """The checks above can fail: a ground-floor module importing the engine is caught."""
    probe = PKG / "base" / "_layer_probe_tmp.py"
    probe.write_text("from rlm.core.rlm import RLM\nimport numpy\n", encoding="utf-8")
    try:
        with pytest.raises(AssertionError, match="above"):
            test_module_imports_respect_the_floors(probe)
        with pytest.raises(AssertionError, match="not stdlib"):
            test_module_imports_respect_the_floors(probe)
    finally:
        probe.unlink()
