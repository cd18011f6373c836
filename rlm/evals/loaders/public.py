"""Converters from the public datasets' rows to ``Task``s (layouts in docs/evals.md).

Each converter takes the selected rows and the source's options and returns tasks; a
row missing a documented field raises ``DatasetError`` naming it. Nothing is
downloaded: the rows come from files the user already has.
"""

from __future__ import annotations

import ast
import json
import random
import re
from pathlib import Path
from typing import Any

from rlm.evals.loaders.files import DatasetError, read_rows, require
from rlm.evals.records import Task, estimate_tokens, format_length
from rlm.evals.tasks.corpus import AST_LOCK

LETTERS = "ABCD"


def bin_label(tokens: int) -> str:
    """The smallest power of two (at least 1K) holding ``tokens``, as ``"8K"``."""
    size = 1024
    while size < tokens:
        size *= 2
    return format_length(size)


def _row_id(row: dict[str, Any], keys: tuple[str, ...], index: int) -> str:
    for key in keys:
        if row.get(key) not in (None, ""):
            return str(row[key])
    return f"row{index}"


def _oolong_gold(raw: Any, answer_type: str) -> tuple[Any, str]:
    """(gold, scorer) from OOLONG's stored answer (``"[12]"``, ``"['entity']"``...)."""
    text = str(raw)
    date = re.fullmatch(r"\[?datetime\.date\((\d+),\s*(\d+),\s*(\d+)\)\]?", text.strip())
    if date:
        y, m, d = (int(g) for g in date.groups())
        return f"{y:04d}-{m:02d}-{d:02d}", "exact"
    try:
        with AST_LOCK:  # literal_eval parses: not thread-safe in CPython 3.11
            value = ast.literal_eval(text) if isinstance(raw, str) else raw
    except (ValueError, SyntaxError):
        value = text
    if isinstance(value, list | tuple):
        if len(value) != 1:
            return [str(v) for v in value], "set_f1"
        value = value[0]
    if answer_type.endswith("NUMERIC") and isinstance(value, int | float):
        return value, "oolong"
    return str(value), "oolong"


def oolong(rows: list[dict[str, Any]], options: dict[str, str], family: str) -> list[Task]:
    """OOLONG-synth / OOLONG-real rows: ``context_window_text``, ``question``, ``answer``
    (``answer_type`` and ``context_len`` when present)."""
    tasks = []
    for i, row in enumerate(rows):
        require(row, ("context_window_text", "question", "answer"), f"{family} row {i}")
        gold, scorer = _oolong_gold(row["answer"], str(row.get("answer_type") or ""))
        context = str(row["context_window_text"])
        tokens = int(row.get("context_len") or estimate_tokens(context))
        tasks.append(
            Task(
                family=family,
                task_id=_row_id(row, ("id", "question_id"), i),
                context=context,
                question=str(row["question"]),
                answer=gold,
                scorer=scorer,
                length_tokens=tokens,
                length_label=bin_label(tokens),
                metadata={k: row[k] for k in ("dataset", "task", "answer_type") if k in row},
            )
        )
    return tasks


def longbench_v2(rows: list[dict[str, Any]], options: dict[str, str], family: str) -> list[Task]:
    """LongBench-v2 ``data.json`` rows: ``_id``, ``question``, ``choice_A``..``choice_D``,
    ``answer`` (a letter), ``context``, ``length``, ``domain``, ``sub_domain``."""
    fields = ("question", "choice_A", "choice_B", "choice_C", "choice_D", "answer", "context")
    tasks = []
    for i, row in enumerate(rows):
        require(row, fields, f"{family} row {i}")
        choices = "\n".join(f"({x}) {row[f'choice_{x}']}" for x in LETTERS)
        context = str(row["context"])
        tokens = estimate_tokens(context)
        tasks.append(
            Task(
                family=family,
                task_id=_row_id(row, ("_id", "id"), i),
                context=context,
                question=(
                    f"{row['question']}\n{choices}\n"
                    "Reply with 'The correct answer is (X)', X being the letter."
                ),
                answer=str(row["answer"]).strip().upper(),
                scorer="multiple_choice",
                length_tokens=tokens,
                length_label=str(row.get("length") or bin_label(tokens)),
                metadata={k: row[k] for k in ("domain", "sub_domain", "difficulty") if k in row},
            )
        )
    return tasks


def _docs(value: Any) -> list[dict[str, Any]]:
    if isinstance(value, str):
        value = json.loads(value) if value.strip() else []
    return [d for d in (value or []) if isinstance(d, dict) and "text" in d]


def browsecomp_plus(rows: list[dict[str, Any]], options: dict[str, str], family: str) -> list[Task]:
    """BrowseComp-Plus decrypted rows: ``query_id``, ``query``, ``answer`` and the
    ``gold_docs``/``evidence_docs``/``negative_docs`` lists of ``{docid, text}``.
    Options: ``docs`` (documents per query, default 1000) and ``corpus`` (a JSONL of
    ``{docid, text}`` that tops each query's documents up to ``docs``)."""
    from rlm.evals.loaders import int_option

    want = int_option(options, "docs", 1000)
    corpus: list[dict[str, Any]] = []
    if options.get("corpus"):
        corpus = [r for r in read_rows(Path(options["corpus"])) if "text" in r]
    tasks = []
    for i, row in enumerate(rows):
        require(row, ("query", "answer"), f"{family} row {i}")
        qid = _row_id(row, ("query_id", "id"), i)
        rng = random.Random(f"browsecomp:{qid}")
        docs: dict[str, dict[str, Any]] = {}
        for key in ("gold_docs", "evidence_docs", "negative_docs"):
            for doc in _docs(row.get(key)):
                docs.setdefault(str(doc.get("docid", len(docs))), doc)
        if corpus and len(docs) < want:
            for doc in rng.sample(corpus, min(len(corpus), want)):
                if len(docs) >= want:
                    break
                docs.setdefault(str(doc.get("docid", f"c{len(docs)}")), doc)
        if not docs:
            raise DatasetError(f"{family} row {i}: no documents (gold/evidence/negative_docs)")
        chosen = list(docs.items())[:want] if len(docs) > want else list(docs.items())
        rng.shuffle(chosen)
        context = [f"[doc {docid}]\n{doc['text']}" for docid, doc in chosen]
        tasks.append(
            Task(
                family=family,
                task_id=qid,
                context=context,
                question=f"{row['query']}\nAnswer with the exact answer only.",
                answer=str(row["answer"]),
                scorer="contains",
                length_tokens=estimate_tokens(context),
                length_label=f"{len(context)} docs",
                metadata={"docs": len(context)},
            )
        )
    return tasks


def _messages(value: Any, where: str) -> list[dict[str, Any]]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise DatasetError(f"{where}: 'prompt' is not a JSON list of messages") from None
    if not isinstance(value, list) or not value:
        raise DatasetError(f"{where}: 'prompt' must be a non-empty list of messages")
    return [m for m in value if isinstance(m, dict)]


def mrcr(rows: list[dict[str, Any]], options: dict[str, str], family: str) -> list[Task]:
    """OpenAI MRCR rows: ``prompt`` (a JSON list of chat messages), ``answer`` and
    ``random_string_to_prepend`` (also ``n_needles``, ``n_chars``). The conversation but
    its last message is the context; the last user message is the question."""
    tasks = []
    for i, row in enumerate(rows):
        where = f"{family} row {i}"
        require(row, ("prompt", "answer", "random_string_to_prepend"), where)
        messages = _messages(row["prompt"], where)
        *history, last = messages
        context = "\n\n".join(
            f"{str(m.get('role', 'user')).capitalize()}: {m.get('content', '')}" for m in history
        )
        tokens = estimate_tokens(context)
        tasks.append(
            Task(
                family=family,
                task_id=_row_id(row, ("id",), i),
                context=context,
                question=str(last.get("content", "")),
                answer={
                    "answer": str(row["answer"]),
                    "prefix": str(row["random_string_to_prepend"]),
                },
                scorer="mrcr",
                length_tokens=tokens,
                length_label=bin_label(int(row.get("n_chars") or 0) // 4 or tokens),
                metadata={k: row[k] for k in ("n_needles", "total_messages") if k in row},
            )
        )
    return tasks
