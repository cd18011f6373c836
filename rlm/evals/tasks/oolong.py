"""OOLONG-style aggregation: questions about the label distribution of many records.

The records (``ledger``) carry explicit labels, so this family measures aggregation
over a long context (counting, ranking, comparing thousands of lines), not the
classification step of the real OOLONG (use the ``oolong-synth`` loader for that).
Question types, chosen by the seed: the count of one label (scored with OOLONG's
partial credit 0.75^|y-ŷ|), the most and the least frequent label (no ties, by
construction), and a comparison of two labels answered with OOLONG's phrases
"more common than", "less common than" or "same frequency as".
"""

from __future__ import annotations

import random

from rlm.evals.records import Task, TaskSpec, estimate_tokens, format_length
from rlm.evals.tasks.ledger import (
    LABELS,
    distinct_counts,
    make_record,
    make_users,
    records_for,
    render,
)

VERSION = "1"
SCORER = "oolong"
QTYPES = ("count", "most", "least", "compare")
_PREAMBLE = (
    "The context is a list of support tickets, one per line, each with a date, a user ID, "
    "the ticket text and its label (one of: {labels})."
)
QUESTIONS = {
    "count": "How many tickets have the label '{a}'? Reply with the number.",
    "most": "Which label is the most common among the tickets? Reply with the label.",
    "least": "Which label is the least common among the tickets? Reply with the label.",
    "compare": (
        "Is the label '{a}' more common than, less common than, or the same frequency as "
        "the label '{b}'? Reply with exactly one of: more common than, less common than, "
        "same frequency as."
    ),
}


def fingerprint(spec: TaskSpec) -> str:
    return f"oolong-v{VERSION}"


def generate(spec: TaskSpec) -> Task:
    """The OOLONG-style task for ``spec`` (option ``qtype``: one of ``QTYPES``)."""
    rng = random.Random(f"oolong:{spec.seed}:{spec.length_tokens}")
    qtype = spec.option("qtype") or QTYPES[rng.randrange(len(QTYPES))]
    if qtype not in QTYPES:
        raise ValueError(f"unknown OOLONG question type {qtype!r}; known: {', '.join(QTYPES)}")
    total = records_for(spec.length_tokens)
    counts = distinct_counts(rng, total, len(LABELS))
    a, b = rng.sample(range(len(LABELS)), 2)
    outcome = ""
    if qtype == "compare":
        outcome = rng.choice(("more common than", "less common than", "same frequency as"))
        if outcome == "same frequency as":  # move records between the two to level them
            pooled = counts[a] + counts[b]
            counts[a], counts[b] = pooled // 2, pooled - pooled // 2
            if counts[a] != counts[b]:  # odd: one record goes to a third label
                counts[b] -= 1
                counts[next(i for i in range(len(LABELS)) if i not in (a, b))] += 1
        elif (counts[a] > counts[b]) != (outcome == "more common than"):
            counts[a], counts[b] = counts[b], counts[a]
    labels = [LABELS[i] for i, c in enumerate(counts) for _ in range(c)]
    rng.shuffle(labels)
    users = make_users(rng, max(5, total // 8))
    records = [make_record(rng, rng.choice(users), label) for label in labels]
    context = render(records)
    by_label = {label: labels.count(label) for label in LABELS}
    answer: str | int
    if qtype == "count":
        answer = by_label[LABELS[a]]
    elif qtype == "most":
        answer = max(by_label, key=by_label.__getitem__)
    elif qtype == "least":
        answer = min(by_label, key=by_label.__getitem__)
    else:
        answer = outcome
    preamble = _PREAMBLE.format(labels=", ".join(LABELS))
    question = QUESTIONS[qtype].format(a=LABELS[a], b=LABELS[b])
    return Task(
        family="oolong",
        task_id=f"{format_length(spec.length_tokens)}-s{spec.seed}",
        context=context,
        question=f"{preamble} {question}",
        answer=answer,
        scorer=SCORER,
        length_tokens=estimate_tokens(context),
        length_label=format_length(spec.length_tokens),
        metadata={"qtype": qtype, "records": total, "label_counts": by_label},
    )
