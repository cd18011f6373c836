"""Loaders for public long-context datasets the user has on disk (never downloaded).

``load_source(DatasetSource(name, path, options))`` reads the rows, keeps those matching
``where.FIELD=value`` options, samples ``limit`` of them with ``sample_seed`` (so a
subset is reproducible) and converts them to ``Task``s. Datasets: ``oolong-synth``,
``oolong-real``, ``longbench-v2``, ``browsecomp-plus`` and ``mrcr``; their file layouts
are in ``docs/evals.md`` and in each converter's docstring (``loaders.public``).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rlm.evals.loaders import public
from rlm.evals.loaders.files import DatasetError, read_rows
from rlm.evals.records import Task

Converter = Callable[[list[dict[str, Any]], dict[str, str], str], list[Task]]


@dataclass(frozen=True)
class Dataset:
    name: str
    description: str
    convert: Converter
    options: tuple[str, ...] = ()  # converter-specific option names


DATASETS: dict[str, Dataset] = {
    d.name: d
    for d in (
        Dataset("oolong-synth", "OOLONG synthetic (oolongbench/oolong-synth)", public.oolong),
        Dataset("oolong-real", "OOLONG real (oolongbench/oolong-real)", public.oolong),
        Dataset("longbench-v2", "LongBench-v2 data.json (THUDM/LongBench-v2)", public.longbench_v2),
        Dataset(
            "browsecomp-plus",
            "BrowseComp-Plus decrypted queries (Tevatron/browsecomp-plus)",
            public.browsecomp_plus,
            ("docs", "corpus"),
        ),
        Dataset("mrcr", "OpenAI MRCR (openai/mrcr)", public.mrcr),
    )
}
COMMON_OPTIONS = ("limit", "sample_seed")


@dataclass(frozen=True)
class DatasetSource:
    """A dataset file (or directory) and its options (see the module docstring)."""

    name: str
    path: str
    options: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> DatasetSource:
        """``NAME=PATH[,key=value...]``, e.g. ``longbench-v2=data.json,limit=20``."""
        name, sep, rest = text.partition("=")
        if not sep or not rest:
            raise DatasetError(f"bad dataset {text!r}: use NAME=PATH[,key=value...]")
        path, *pairs = rest.split(",")
        options: dict[str, str] = {}
        for pair in pairs:
            key, eq, value = pair.partition("=")
            if not eq:
                raise DatasetError(f"bad dataset option {pair!r} in {text!r}: use key=value")
            options[key.strip()] = value.strip()
        return cls(name.strip(), path.strip(), options)


def int_option(options: dict[str, str], key: str, default: int) -> int:
    """``options[key]`` as a positive integer; ``DatasetError`` when it is not one."""
    try:
        value = int(options.get(key, default))
    except ValueError:
        value = 0
    if value < 1:
        raise DatasetError(
            f"dataset option {key} must be a positive integer, got {options.get(key)!r}"
        )
    return value


def get_dataset(name: str) -> Dataset:
    try:
        return DATASETS[name]
    except KeyError:
        raise DatasetError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}") from None


def _check_options(dataset: Dataset, options: dict[str, str]) -> None:
    allowed = set(COMMON_OPTIONS) | set(dataset.options)
    bad = [k for k in options if k not in allowed and not k.startswith("where.")]
    if bad:
        raise DatasetError(
            f"unknown option(s) {', '.join(bad)} for {dataset.name}; known: "
            f"{', '.join(sorted(allowed))}, where.FIELD"
        )


def load_source(source: DatasetSource) -> list[Task]:
    """The tasks of ``source``, filtered and sampled as its options say."""
    dataset = get_dataset(source.name)
    _check_options(dataset, source.options)
    rows = read_rows(source.path)
    where = {k[len("where.") :]: v for k, v in source.options.items() if k.startswith("where.")}
    rows = [r for r in rows if all(str(r.get(k)) == v for k, v in where.items())]
    if not rows:
        raise DatasetError(f"{source.path}: no rows for {source.name} match {where or 'at all'}")
    limit = source.options.get("limit")
    if limit is not None:
        count = int_option(source.options, "limit", 0)
        if count < len(rows):
            rng = random.Random(f"{source.name}:{source.options.get('sample_seed', '0')}")
            rows = [rows[i] for i in sorted(rng.sample(range(len(rows)), count))]
    return dataset.convert(rows, source.options, source.name)


__all__ = ["DATASETS", "Dataset", "DatasetError", "DatasetSource", "get_dataset", "load_source"]
