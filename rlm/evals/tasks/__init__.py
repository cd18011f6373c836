"""The generated task families, by name: each builds a ``Task`` from a ``TaskSpec``.

``niah`` (S-NIAH), ``oolong`` (OOLONG-style aggregation), ``pairs`` (OOLONG-Pairs-style,
F1) and ``codeqa`` (CodeQA-style multiple choice over the standard library's source).
Generation is offline and deterministic: the same spec gives the same task, byte for
byte, on every machine with the same sources (see each module for what it reads).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from rlm.evals.records import Task, TaskSpec
from rlm.evals.tasks import codeqa, niah, oolong, pairs


@dataclass(frozen=True)
class Family:
    """A generated task family."""

    name: str
    description: str
    scorer: str
    generate: Callable[[TaskSpec], Task]
    fingerprint: Callable[[TaskSpec], str]


def _family(name: str, module: ModuleType, description: str) -> Family:
    return Family(name, description, module.SCORER, module.generate, module.fingerprint)


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        _family("niah", niah, "S-NIAH: one needle (a magic number) in prose"),
        _family("oolong", oolong, "OOLONG-style: counts and ranks of labelled records"),
        _family("pairs", pairs, "OOLONG-Pairs-style: pairs of users meeting a condition (F1)"),
        _family("codeqa", codeqa, "CodeQA-style: multiple choice on stdlib source (ast)"),
    )
}


def get_family(name: str) -> Family:
    """The family called ``name``; a ``ValueError`` listing the known ones otherwise."""
    try:
        return FAMILIES[name]
    except KeyError:
        raise ValueError(f"unknown task family {name!r}; known: {', '.join(FAMILIES)}") from None


def make_spec(family: str, length_tokens: int, seed: int, **options: Any) -> TaskSpec:
    """A spec for a generated task, fingerprinted by its family."""
    fam = get_family(family)
    spec = TaskSpec(family, length_tokens, seed, tuple(sorted(options.items())))
    return TaskSpec(spec.family, spec.length_tokens, spec.seed, spec.options, fam.fingerprint(spec))


def materialize(spec: TaskSpec) -> Task:
    """The task ``spec`` names: its inline task, or one generated now."""
    if spec.inline is not None:
        return spec.inline
    return get_family(spec.family).generate(spec)


__all__ = ["FAMILIES", "Family", "get_family", "make_spec", "materialize"]
