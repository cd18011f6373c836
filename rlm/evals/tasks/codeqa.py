"""CodeQA-style: multiple-choice questions about real code, the Python standard library.

The context is whole source files of the running interpreter's standard library
(``corpus.stdlib_sources``), picked by the seed until they reach the target length,
each under a ``### FILE: path ###`` header. Every answer is computed with ``ast``, and
the four options are built so exactly one is right:

* ``most_defs``: which of four files has the most ``def``/``async def`` statements;
* ``class_home``: in which file a given class (defined once in the context) lives;
* ``most_params``: which of four functions takes the most parameters.

The answer is a letter, scored as multiple choice, as LongBench-v2's CodeQA is. The
files depend on the Python version, so the version is part of the task's fingerprint.
"""

from __future__ import annotations

import ast
import random
import sys
from collections import Counter

from rlm.evals.records import CHARS_PER_TOKEN, Task, TaskSpec, estimate_tokens, format_length
from rlm.evals.tasks.corpus import parse, stdlib_sources

VERSION = "1"
SCORER = "multiple_choice"
QTYPES = ("most_defs", "class_home", "most_params")
HEADER = "### FILE: {path} ###"
LETTERS = "ABCD"


def fingerprint(spec: TaskSpec) -> str:
    return f"codeqa-v{VERSION}-py{sys.version.split()[0]}"


def count_defs(source: str) -> int:
    """``def`` and ``async def`` statements anywhere in ``source``."""
    tree = parse(source)
    return sum(isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) for n in ast.walk(tree))


def class_names(source: str) -> list[str]:
    return [n.name for n in ast.walk(parse(source)) if isinstance(n, ast.ClassDef)]


def function_params(source: str) -> dict[str, int]:
    """Top-level function name -> number of parameters (all kinds, ``*``/``**`` too)."""
    found: dict[str, int] = {}
    for node in parse(source).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            a = node.args
            found[node.name] = (
                len(a.posonlyargs)
                + len(a.args)
                + len(a.kwonlyargs)
                + bool(a.vararg)
                + bool(a.kwarg)
            )
    return found


def _pick_files(rng: random.Random, target_chars: int, at_least: int) -> list[tuple[str, str]]:
    sources = list(stdlib_sources())
    rng.shuffle(sources)
    limit = max(target_chars // 4, 2_000)  # small files first for short contexts
    chosen: list[tuple[str, str]] = []
    size = 0
    for path, source in sources:
        if len(source) > limit and size + len(source) > target_chars:
            continue
        chosen.append((path, source))
        size += len(source) + len(path) + 20
        if size >= target_chars and len(chosen) >= at_least:
            break
    return chosen


def _options(rng: random.Random, right: str, wrong: list[str]) -> tuple[list[str], str]:
    options = [right, *rng.sample(wrong, 3)]
    rng.shuffle(options)
    return options, LETTERS[options.index(right)]


def _question(
    rng: random.Random, qtype: str, files: list[tuple[str, str]]
) -> tuple[str, list[str], str] | None:
    if qtype == "most_defs":
        by_count: dict[int, str] = {}
        for path, source in files:
            by_count.setdefault(count_defs(source), path)
        if len(by_count) < 4:
            return None
        counts = rng.sample(sorted(by_count), 4)
        best = by_count[max(counts)]
        options, letter = _options(rng, best, [by_count[c] for c in counts if by_count[c] != best])
        text = (
            "Which of these files contains the most function definitions (def and async def "
            "statements, methods and nested functions included)?"
        )
        return text, options, letter
    if qtype == "class_home":
        homes = Counter(name for _, source in files for name in set(class_names(source)))
        unique = sorted(name for name, n in homes.items() if n == 1)
        if not unique or len(files) < 4:
            return None
        name = rng.choice(unique)
        home = next(path for path, source in files if name in class_names(source))
        options, letter = _options(rng, home, [p for p, _ in files if p != home])
        return f"In which file is the class `{name}` defined?", options, letter
    funcs: dict[str, tuple[str, int]] = {}
    clashes: set[str] = set()
    for path, source in files:
        for name, params in function_params(source).items():
            if name in funcs:
                clashes.add(name)
            funcs[name] = (path, params)
    by_params: dict[int, str] = {}
    for name in sorted(funcs):
        if name not in clashes:
            by_params.setdefault(funcs[name][1], name)
    if len(by_params) < 4:
        return None
    counts = rng.sample(sorted(by_params), 4)
    best = by_params[max(counts)]
    options, letter = _options(rng, best, [by_params[c] for c in counts if by_params[c] != best])
    text = (
        "Which of these top-level functions takes the most parameters (positional, keyword-only, "
        "*args and **kwargs all counted)?"
    )
    return text, options, letter


def generate(spec: TaskSpec) -> Task:
    """The CodeQA-style task for ``spec`` (option ``qtype``: one of ``QTYPES``)."""
    wanted = spec.option("qtype")
    if wanted is not None and wanted not in QTYPES:
        raise ValueError(f"unknown CodeQA question type {wanted!r}; known: {', '.join(QTYPES)}")
    made, files, qtype = None, [], ""
    for attempt in range(12):  # short contexts: more (small) files until a question fits
        rng = random.Random(f"codeqa:{spec.seed}:{spec.length_tokens}:{attempt}")
        files = _pick_files(rng, spec.length_tokens * CHARS_PER_TOKEN, 4 + 2 * attempt)
        for qtype in [wanted] if wanted else rng.sample(QTYPES, len(QTYPES)):
            made = _question(rng, qtype, files)
            if made is not None:
                break
        if made is not None:
            break
    if made is None:
        raise ValueError(f"no CodeQA question fits a context of {spec.length_tokens} tokens")
    text, options, letter = made
    listed = "\n".join(f"({LETTERS[i]}) {option}" for i, option in enumerate(options))
    context = "\n\n".join(f"{HEADER.format(path=path)}\n{source}" for path, source in files)
    return Task(
        family="codeqa",
        task_id=f"{format_length(spec.length_tokens)}-s{spec.seed}",
        context=context,
        question=(
            "The context is Python source files, each under a '### FILE: path ###' line. "
            f"{text}\n{listed}\nReply with the letter of the right option."
        ),
        answer=letter,
        scorer=SCORER,
        length_tokens=estimate_tokens(context),
        length_label=format_length(spec.length_tokens),
        metadata={"qtype": qtype, "files": [p for p, _ in files], "options": options},
    )
