"""A suite: which tasks (families x lengths x seeds, and dataset rows) and which methods.

``Suite.plan()`` expands it into ``WorkItem``s in a fixed order (seed, then length,
family and method; dataset rows after the generated tasks), so two runs of the same
suite plan the same keys. ``describe()`` is the JSON written to ``suite.json``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlm.base.version import __version__
from rlm.evals.loaders import DatasetSource, load_source
from rlm.evals.methods import MethodSpec
from rlm.evals.records import TaskSpec, WorkItem, estimate_tokens, format_length
from rlm.evals.tasks import FAMILIES, make_spec


class SuiteError(ValueError):
    """The suite cannot be planned (nothing to run, unknown family, duplicate method)."""


@dataclass
class Suite:
    methods: list[MethodSpec]
    families: list[str] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)
    seeds: list[int] = field(default_factory=lambda: [0])
    datasets: list[DatasetSource] = field(default_factory=list)
    family_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    title: str | None = None

    def validate(self) -> None:
        if not self.methods:
            raise SuiteError("no methods to run")
        names = [m.name for m in self.methods]
        if len(set(names)) != len(names):
            raise SuiteError(f"method names must be unique: {', '.join(names)}")
        unknown = [f for f in self.families if f not in FAMILIES]
        if unknown:
            raise SuiteError(
                f"unknown task family {', '.join(unknown)}; known: {', '.join(FAMILIES)}"
            )
        if self.families and not self.lengths:
            raise SuiteError("generated families need at least one context length")
        if any(n <= 0 for n in self.lengths):
            raise SuiteError("context lengths must be positive")
        if not self.seeds:
            raise SuiteError("at least one seed is needed")
        if not self.families and not self.datasets:
            raise SuiteError("nothing to run: give task families or datasets")
        haystack = self.family_options.get("niah", {}).get("haystack")
        if haystack and not Path(haystack).expanduser().is_file():
            raise SuiteError(f"haystack text not found: {haystack}")

    def _generated(self) -> list[TaskSpec]:
        specs = []
        for seed in self.seeds:
            for length in self.lengths:
                for family in self.families:
                    options = dict(self.family_options.get(family, {}))
                    if "haystack" in options:
                        options["haystack"] = str(Path(options["haystack"]).expanduser().resolve())
                    specs.append(make_spec(family, length, seed, **options))
        return specs

    def _loaded(self) -> list[TaskSpec]:
        specs = []
        for source in self.datasets:
            for task in load_source(source):
                specs.append(
                    TaskSpec(task.family, task.length_tokens, 0, (), task.content_hash(), task)
                )
        return specs

    def plan(self) -> list[WorkItem]:
        """Every (method, task, seed) of the suite, in a fixed order."""
        self.validate()
        items = [WorkItem(m, spec, spec.seed) for spec in self._generated() for m in self.methods]
        loaded = self._loaded()
        items += [
            WorkItem(m, spec, seed) for seed in self.seeds for spec in loaded for m in self.methods
        ]
        keys = [i.key for i in items]
        if len(set(keys)) != len(keys):
            dup = sorted({k for k in keys if keys.count(k) > 1})[:3]
            raise SuiteError(
                f"two items share a key (duplicate dataset row ids?): {', '.join(dup)}"
            )
        return items

    def describe(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "rlmx_version": __version__,
            "families": list(self.families),
            "lengths": [format_length(n) for n in self.lengths],
            "seeds": list(self.seeds),
            "datasets": [
                {"name": d.name, "path": d.path, "options": dict(d.options)} for d in self.datasets
            ],
            "family_options": self.family_options,
            "methods": [m.describe() for m in self.methods],
        }


def batch_spec(row_id: str, context: Any, question: str) -> TaskSpec:
    """A spec carrying one ``rlm batch`` row (no gold answer)."""
    from rlm.evals.records import Task

    tokens = estimate_tokens(context)
    task = Task("batch", row_id, context, question, None, "exact", tokens, "-")
    return TaskSpec("batch", tokens, 0, (), task.content_hash(), task)
