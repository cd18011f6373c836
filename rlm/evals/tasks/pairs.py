"""OOLONG-Pairs-style: list every pair of users meeting a condition, scored by F1.

Common tickets use the six ``ledger.LABELS``; two rare labels are given to seeded sets
of users only, so the number of qualifying pairs stays small (at most a few dozen)
while the context grows. Conditions: both users have a ticket with rare label A; or
one has A and the other has B (the sets may overlap; a user never pairs with itself).
The answer is the sorted list of pairs, each with the smaller ID first.
"""

from __future__ import annotations

import itertools
import random

from rlm.evals.records import Task, TaskSpec, estimate_tokens, format_length
from rlm.evals.tasks.ledger import (
    LABELS,
    RARE_LABELS,
    Record,
    make_record,
    make_users,
    records_for,
    render,
)

VERSION = "1"
SCORER = "pairs_f1"
CONDITIONS = ("both", "cross")
_PREAMBLE = (
    "The context is a list of support tickets, one per line, each with a date, a user ID, "
    "the ticket text and its label."
)
QUESTIONS = {
    "both": ("List every pair of distinct users who both have at least one ticket labelled '{a}'."),
    "cross": (
        "List every pair of distinct users where one user has at least one ticket labelled "
        "'{a}' and the other has at least one ticket labelled '{b}'."
    ),
}
FORMAT = " Write one pair per line as (uXXXX, uYYYY) with the smaller ID first."


def fingerprint(spec: TaskSpec) -> str:
    return f"pairs-v{VERSION}"


def qualifying_pairs(condition: str, group_a: set[str], group_b: set[str]) -> list[list[str]]:
    """The sorted pairs (smaller ID first) that meet ``condition``."""
    if condition == "both":
        found = {tuple(sorted(p)) for p in itertools.combinations(group_a, 2)}
    else:
        found = {tuple(sorted((u, v))) for u in group_a for v in group_b if u != v}
    return [list(p) for p in sorted(found)]


def generate(spec: TaskSpec) -> Task:
    """The OOLONG-Pairs-style task for ``spec`` (option ``condition``: both|cross)."""
    rng = random.Random(f"pairs:{spec.seed}:{spec.length_tokens}")
    condition = spec.option("condition") or CONDITIONS[rng.randrange(len(CONDITIONS))]
    if condition not in CONDITIONS:
        raise ValueError(f"unknown pairs condition {condition!r}; known: both, cross")
    total = records_for(spec.length_tokens)
    users = make_users(rng, max(8, total // 6))
    cap = max(2, min(7, len(users) // 2))
    group_a = set(rng.sample(users, rng.randint(2, cap)))
    group_b = set(rng.sample(users, rng.randint(2, cap))) if condition == "cross" else set()
    rare: list[Record] = []
    for group, label in ((group_a, RARE_LABELS[0]), (group_b, RARE_LABELS[1])):
        for user in sorted(group):
            rare += [make_record(rng, user, label) for _ in range(rng.randint(1, 2))]
    common = [
        make_record(rng, rng.choice(users), rng.choice(LABELS))
        for _ in range(max(total - len(rare), 0))
    ]
    records = common + rare
    rng.shuffle(records)
    context = render(records)
    question = QUESTIONS[condition].format(a=RARE_LABELS[0], b=RARE_LABELS[1])
    return Task(
        family="pairs",
        task_id=f"{format_length(spec.length_tokens)}-s{spec.seed}",
        context=context,
        question=f"{_PREAMBLE} {question}{FORMAT}",
        answer=qualifying_pairs(condition, group_a, group_b),
        scorer=SCORER,
        length_tokens=estimate_tokens(context),
        length_label=format_length(spec.length_tokens),
        metadata={"condition": condition, "records": len(records), "users": len(users)},
    )
