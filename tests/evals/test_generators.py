"""The generated families: deterministic per seed, and their answers are right.

Each answer is checked by code written here, independently of the generators and of
the reference solver: string splitting instead of regular expressions for the
records, ``tokenize`` and code objects instead of ``ast`` for the source files.
"""

from __future__ import annotations

import io
import itertools
import tokenize
from collections import Counter

import pytest

from rlm.evals import FAMILIES, format_length, make_spec, materialize, parse_length
from rlm.evals.records import estimate_tokens
from rlm.evals.tasks import codeqa, corpus, niah

SEEDS = range(6)
LENGTHS = (1024, 8192, 32768)
CASES = list(itertools.product(SEEDS, LENGTHS))


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_same_seed_same_task_and_other_seeds_differ(family: str) -> None:
    first = materialize(make_spec(family, 4096, 3))
    again = materialize(make_spec(family, 4096, 3))
    assert first == again
    assert first.content_hash() == again.content_hash()
    others = {materialize(make_spec(family, 4096, s)).content_hash() for s in range(3)}
    assert len(others) == 3


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("length", LENGTHS)
def test_context_is_about_the_requested_length(family: str, length: int) -> None:
    task = materialize(make_spec(family, length, 0))
    assert task.length_tokens == estimate_tokens(task.context)
    low = 0.75 if family != "codeqa" else 0.8
    assert low * length <= task.length_tokens <= 1.6 * length, task.length_tokens
    assert task.length_label == format_length(length)


def test_niah_reaches_a_million_tokens() -> None:
    task = materialize(make_spec("niah", parse_length("1M"), 0))
    assert abs(task.length_tokens - 1024 * 1024) < 100
    assert task.context.count("special magic number") == 1


def _records(context: str) -> list[dict[str, str]]:
    rows = []
    for line in context.split("\n"):
        fields = dict(part.split(": ", 1) for part in line.split(" || "))
        rows.append(fields)
    return rows


@pytest.mark.parametrize(("seed", "length"), CASES)
def test_niah_answer(seed: int, length: int) -> None:
    task = materialize(make_spec("niah", length, seed))
    key = task.question.split("magic number for ")[1].split(" mentioned")[0]
    sentence = f"The special magic number for {key} is: "
    start = task.context.index(sentence) + len(sentence)
    assert task.context[start : start + 7] == task.answer
    assert task.context.count(sentence) == 1
    assert 0 <= task.metadata["depth"] <= 1


@pytest.mark.parametrize(("seed", "length"), CASES)
def test_oolong_answer(seed: int, length: int) -> None:
    task = materialize(make_spec("oolong", length, seed))
    counts = Counter(r["Label"] for r in _records(task.context))
    labels = task.question.split("(one of: ")[1].split(")")[0].split(", ")
    for label in labels:
        counts.setdefault(label, 0)
    q = task.question
    if "How many tickets" in q:
        assert task.answer == counts[q.split("label '")[1].split("'")[0]]
    elif "most common among" in q:
        top = max(counts.values())
        assert [k for k, v in counts.items() if v == top] == [task.answer]
    elif "least common among" in q:
        low = min(counts.values())
        assert [k for k, v in counts.items() if v == low] == [task.answer]
    else:
        a, b = (part.split("'")[0] for part in q.split("the label '")[1:3])
        expected = {True: "more common than", False: "less common than"}
        want = "same frequency as" if counts[a] == counts[b] else expected[counts[a] > counts[b]]
        assert task.answer == want


@pytest.mark.parametrize(("seed", "length"), CASES)
def test_pairs_answer(seed: int, length: int) -> None:
    task = materialize(make_spec("pairs", length, seed))
    by_label: dict[str, set[str]] = {}
    for r in _records(task.context):
        by_label.setdefault(r["Label"], set()).add(r["User"])
    names = [part.split("'")[0] for part in task.question.split("labelled '")[1:]]
    if len(names) == 1:
        want = {tuple(sorted(p)) for p in itertools.combinations(by_label[names[0]], 2)}
    else:
        want = {
            tuple(sorted((u, v))) for u in by_label[names[0]] for v in by_label[names[1]] if u != v
        }
    assert {tuple(p) for p in task.answer} == want
    assert all(a < b for a, b in task.answer)


def _files(context: str) -> dict[str, str]:
    files: dict[str, str] = {}
    name = None
    for line in context.split("\n"):
        if line.startswith("### FILE: ") and line.endswith(" ###"):
            name = line[len("### FILE: ") : -len(" ###")]
            files[name] = ""
        elif name is not None:
            files[name] += line + "\n"
    return files


def _keyword_tokens(source: str) -> list[tuple[str, str]]:
    tokens = [
        t for t in tokenize.generate_tokens(io.StringIO(source).readline) if t.type == tokenize.NAME
    ]
    return [(a.string, b.string) for a, b in itertools.pairwise(tokens)]


def _top_level_params(source: str) -> dict[str, int]:
    code = compile(source, "<codeqa>", "exec")
    found = {}
    for const in code.co_consts:
        if hasattr(const, "co_argcount") and const.co_name != "<lambda>":
            flags = const.co_flags
            found[const.co_name] = (
                const.co_argcount
                + const.co_kwonlyargcount
                + bool(flags & 0x04)
                + bool(flags & 0x08)
            )
    return found


@pytest.mark.parametrize(("seed", "length"), CASES)
def test_codeqa_answer(seed: int, length: int) -> None:
    task = materialize(make_spec("codeqa", length, seed))
    files = _files(task.context)
    options = task.metadata["options"]
    assert task.answer in "ABCD" and len(options) == 4
    right = options["ABCD".index(task.answer)]
    qtype = task.metadata["qtype"]
    if qtype == "most_defs":
        defs = {p: sum(a == "def" for a, _ in _keyword_tokens(files[p])) for p in options}
        assert max(defs, key=defs.__getitem__) == right
        assert sorted(defs.values())[-1] > sorted(defs.values())[-2]
    elif qtype == "class_home":
        name = task.question.split("class `")[1].split("`")[0]
        homes = [p for p, src in files.items() if ("class", name) in _keyword_tokens(src)]
        assert homes == [right]
    else:
        params: dict[str, int] = {}
        for src in files.values():
            params.update(_top_level_params(src))
        counts = {o: params[o] for o in options}
        assert max(counts, key=counts.__getitem__) == right
        assert sorted(counts.values())[-1] > sorted(counts.values())[-2]


def test_codeqa_reads_the_standard_library() -> None:
    sources = corpus.stdlib_sources()
    paths = {p for p, _ in sources}
    assert "json/decoder.py" in paths and not any(p.startswith("test/") for p in paths)
    assert codeqa.fingerprint(make_spec("codeqa", 1024, 0)).startswith("codeqa-v1-py3")


def test_haystack_falls_back_and_can_be_chosen(
    tmp_path: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert corpus.corpus_identity().startswith("alice_in_wonderland.txt:")
    book = __import__("pathlib").Path(str(tmp_path)) / "book.txt"
    book.write_text(
        "\n\n".join(f"Paragraph {i} of a plain book." for i in range(50)), encoding="utf-8"
    )
    task = materialize(make_spec("niah", 2048, 0, haystack=str(book)))
    assert "Paragraph" in task.context and "Alice" not in task.context
    assert niah.fingerprint(make_spec("niah", 2048, 0, haystack=str(book))).startswith(
        "niah-v1-book.txt:"
    )
    monkeypatch.setattr(corpus, "SAMPLE_TEXT", corpus.SAMPLE_TEXT.with_name("missing.txt"))
    corpus._load.cache_clear()
    try:
        assert corpus.corpus_identity().startswith("stdlib-docstrings-py3")
        assert len(corpus.haystack_text()) > 100_000
    finally:
        corpus._load.cache_clear()


def test_lengths_parse_and_format() -> None:
    assert (
        parse_length("8k") == 8192 and parse_length("1M") == 1 << 20 and parse_length(3000) == 3000
    )
    assert format_length(131072) == "128K" and format_length(3000) == "3000"
    for bad in ("", "8x", "-1", "0"):
        with pytest.raises(ValueError):
            parse_length(bad)


def test_unknown_family_and_option_are_clear_errors() -> None:
    with pytest.raises(ValueError, match=r"unknown task family 'nope'.*niah"):
        make_spec("nope", 1024, 0)
    with pytest.raises(ValueError, match="unknown OOLONG question type"):
        materialize(make_spec("oolong", 1024, 0, qtype="median"))
