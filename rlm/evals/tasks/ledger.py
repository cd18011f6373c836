"""Synthetic labelled records (support tickets), shared by the OOLONG-style families.

One record per line::

    Date: 2024-03-17 || User: u4821 || Ticket: The parcel with my kettle never came. || Label: shipping

Every field comes from a seeded ``random.Random``, so the same seed gives the same
records on every machine; labels are explicit, so every answer is computed exactly.
"""

from __future__ import annotations

import datetime
import random
from collections.abc import Sequence
from dataclasses import dataclass

LABELS = (
    "billing",
    "shipping",
    "returns",
    "technical issue",
    "account access",
    "product feedback",
)
RARE_LABELS = ("fraud report", "data deletion")
_PRODUCTS = (
    "kettle",
    "lamp",
    "backpack",
    "blender",
    "headset",
    "monitor",
    "chair",
    "router",
    "toaster",
    "keyboard",
    "camera",
    "heater",
    "scooter",
    "speaker",
    "printer",
    "watch",
)
_TEMPLATES: dict[str, tuple[str, ...]] = {
    "billing": (
        "I was charged twice for the {p} last month.",
        "Why does my invoice for the {p} show {n} euros more?",
        "The discount code was not applied when I paid for the {p}.",
    ),
    "shipping": (
        "The parcel with my {p} never came.",
        "Tracking for the {p} has not moved in {n} days.",
        "The courier left the {p} at the wrong address.",
    ),
    "returns": (
        "I want to send the {p} back, it is the wrong size.",
        "How do I get a label to return the {p}?",
        "My refund for the returned {p} is still pending after {n} days.",
    ),
    "technical issue": (
        "The {p} turns off after {n} minutes of use.",
        "The app cannot find my {p} over bluetooth.",
        "The {p} shows error code E{n} on start.",
    ),
    "account access": (
        "I cannot log in to see my {p} order.",
        "The password reset mail never arrives, I need my {p} receipt.",
        "My account was locked after {n} tries.",
    ),
    "product feedback": (
        "The {p} is great, but the cable could be longer.",
        "I love the colour of the new {p}.",
        "Please make the {p} in a smaller size, I would buy {n}.",
    ),
    "fraud report": (
        "Someone ordered a {p} with my card without my consent.",
        "I got a mail asking for my password for a {p} order, is it fake?",
    ),
    "data deletion": (
        "Please delete every record you keep about me and my {p} order.",
        "I ask you to erase my account and its {n} orders.",
    ),
}
_START = datetime.date(2023, 1, 1)


@dataclass(frozen=True)
class Record:
    date: str
    user: str
    text: str
    label: str

    def line(self) -> str:
        return (
            f"Date: {self.date} || User: {self.user} || Ticket: {self.text} || Label: {self.label}"
        )


def make_users(rng: random.Random, count: int) -> list[str]:
    """``count`` distinct user IDs (``u`` and four digits), sorted."""
    return sorted(f"u{n:04d}" for n in rng.sample(range(1000, 10000), count))


def make_record(rng: random.Random, user: str, label: str) -> Record:
    template = rng.choice(_TEMPLATES[label])
    text = template.format(p=rng.choice(_PRODUCTS), n=rng.randint(2, 99))
    date = _START + datetime.timedelta(days=rng.randrange(730))
    return Record(date.isoformat(), user, text, label)


def average_line_length() -> float:
    """The mean length of a record line plus its newline (measured on a fixed sample)."""
    rng = random.Random(0)
    users = make_users(rng, 50)
    lines = [make_record(rng, rng.choice(users), rng.choice(LABELS)).line() for _ in range(400)]
    return sum(len(line) + 1 for line in lines) / len(lines)


def records_for(length_tokens: int, minimum: int = 30) -> int:
    """How many records make about ``length_tokens`` tokens (4 characters each)."""
    return max(minimum, round(length_tokens * 4 / average_line_length()))


def distinct_counts(rng: random.Random, total: int, k: int) -> list[int]:
    """``k`` pairwise different positive counts summing to ``total``, in seeded order.

    Start from the staircase k, k-1, ..., 1 and share the rest out in seeded steps: a
    step of size j lifts the top j ranks by one (so it costs j records), which keeps
    every rank strictly above the next."""
    base = [k - i for i in range(k)]
    rest = total - sum(base)
    if rest < 0:
        raise ValueError(f"{total} records cannot hold {k} distinct label counts")
    weights = [rng.uniform(0.2, 3.0) for _ in range(k)]
    steps = [int(rest * w / sum(weights)) // (j + 1) for j, w in enumerate(weights)]
    steps[0] += rest - sum(n * (j + 1) for j, n in enumerate(steps))  # the top rank alone
    counts = [base[i] + sum(steps[i:]) for i in range(k)]
    rng.shuffle(counts)
    return counts


def render(records: Sequence[Record]) -> str:
    return "\n".join(r.line() for r in records)
