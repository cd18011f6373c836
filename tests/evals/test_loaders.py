"""Loaders for the public datasets, on small fixture files in their documented layouts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rlm.evals import DatasetError, DatasetSource, load_source, score

FIXTURES = Path(__file__).parent / "fixtures"


def load(name: str, file: str, **options: str) -> list:  # type: ignore[type-arg]
    return load_source(DatasetSource(name, str(FIXTURES / file), options))


def test_oolong_synth() -> None:
    tasks = load("oolong-synth", "oolong_synth.jsonl")
    assert [t.task_id for t in tasks] == ["s1", "s2", "s3"]
    count, label, date = tasks
    assert (count.answer, count.scorer, count.length_label) == (1, "oolong", "1K")
    assert score(count.scorer, "Answer: 3", count.answer) == pytest.approx(0.75**2)
    assert (label.answer, label.scorer) == ("human being", "oolong")
    assert (date.answer, date.scorer, date.length_label) == ("2023-01-03", "exact", "2K")
    assert "Denver" in count.context and count.metadata["dataset"] == "trec_coarse"


def test_oolong_where_and_limit_are_reproducible() -> None:
    only = load("oolong-synth", "oolong_synth.jsonl", **{"where.dataset": "spam"})
    assert [t.task_id for t in only] == ["s3"]
    one = load("oolong-synth", "oolong_synth.jsonl", limit="2", sample_seed="4")
    again = load("oolong-synth", "oolong_synth.jsonl", limit="2", sample_seed="4")
    assert [t.task_id for t in one] == [t.task_id for t in again] and len(one) == 2


def test_oolong_real_lists_are_set_f1() -> None:
    listed, number = load("oolong-real", "oolong_real.jsonl")
    assert (listed.answer, listed.scorer) == (["Matt", "Laura"], "set_f1")
    assert number.answer == "2"


def test_longbench_v2() -> None:
    code, novel = load("longbench-v2", "longbench_v2.json")
    assert (code.answer, code.scorer, code.length_label) == ("B", "multiple_choice", "short")
    assert "(B) parse_config()" in code.question
    assert code.metadata["domain"] == "Code Repository Understanding"
    assert novel.length_label == "medium"
    codeqa = load(
        "longbench-v2", "longbench_v2.json", **{"where.domain": "Code Repository Understanding"}
    )
    assert [t.task_id for t in codeqa] == ["lb1"]


def test_browsecomp_plus_with_and_without_a_corpus() -> None:
    (task,) = load("browsecomp-plus", "browsecomp_plus.jsonl")
    assert isinstance(task.context, list) and len(task.context) == 3  # d1, d2, d3 once each
    assert task.length_label == "3 docs" and task.scorer == "contains"
    (full,) = load(
        "browsecomp-plus",
        "browsecomp_plus.jsonl",
        docs="6",
        corpus=str(FIXTURES / "browsecomp_corpus.jsonl"),
    )
    assert len(full.context) == 6 and sum("Vltava" in d for d in full.context) == 1
    assert score(full.scorer, "It is the Vltava.", full.answer) == 1.0


def test_mrcr() -> None:
    (task,) = load("mrcr", "mrcr.jsonl")
    assert task.question.startswith("Prepend aBc12")
    assert "A tapir dreams" in task.context and "Prepend" not in task.context
    assert score("mrcr", "aBc12A tapir dreams of mud and rain.", task.answer) == 1.0


def test_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="dataset file not found"):
        load_source(DatasetSource("mrcr", str(tmp_path / "nope.jsonl")))
    with pytest.raises(DatasetError, match="unknown dataset 'oolong'"):
        load_source(DatasetSource("oolong", str(FIXTURES / "mrcr.jsonl")))
    with pytest.raises(
        DatasetError, match=r"mrcr row 0: missing field\(s\) prompt, random_string_to_prepend"
    ):
        load("mrcr", "oolong_real.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"a": 1}\n{oops\n', encoding="utf-8")
    with pytest.raises(DatasetError, match=r"bad.jsonl:2: not JSON"):
        load_source(DatasetSource("mrcr", str(bad)))
    with pytest.raises(DatasetError, match="unknown option"):
        load("mrcr", "mrcr.jsonl", docs="5")
    with pytest.raises(DatasetError, match="no rows"):
        load("oolong-synth", "oolong_synth.jsonl", **{"where.dataset": "nope"})
    with pytest.raises(DatasetError, match="limit must be"):
        load("mrcr", "mrcr.jsonl", limit="many")
    with pytest.raises(DatasetError, match="use NAME=PATH"):
        DatasetSource.parse("longbench-v2")
    assert DatasetSource.parse("mrcr=a.jsonl,limit=3").options == {"limit": "3"}


def test_directory_of_files(tmp_path: Path) -> None:
    for i in range(2):
        (tmp_path / f"part{i}.jsonl").write_text(
            (FIXTURES / "mrcr.jsonl")
            .read_text(encoding="utf-8")
            .replace('"n_chars": 120', f'"id": "m{i}"'),
            encoding="utf-8",
        )
    tasks = load_source(DatasetSource("mrcr", str(tmp_path)))
    assert [t.task_id for t in tasks] == ["m0", "m1"]
    assert json.dumps(tasks[0].answer)
