"""Scorers: (reply, gold) -> a score in [0, 1], as the papers define them.

* ``exact``: normalised exact match (case, surrounding punctuation and whitespace, an
  "Answer:" prefix and Markdown emphasis ignored).
* ``contains``: the normalised gold appears in the normalised reply (RULER's string
  match for needles; BrowseComp-Plus's offline proxy for its LLM judge).
* ``oolong``: OOLONG's rubric: the candidate is the text after the last ``:`` (or the
  last word of a long reply), or the last comparison phrase in the reply; exact match
  case-insensitively, else ``0.75 ** |y - ŷ|`` when the gold is a number.
* ``pairs_f1``: F1 between the pairs in the reply and the gold pairs (OOLONG-Pairs).
* ``set_f1``: F1 between the comma/newline-separated items of the reply and the gold
  list (OOLONG-real answers that are lists).
* ``multiple_choice``: the chosen letter equals the gold letter (LongBench-v2).
* ``mrcr``: OpenAI MRCR's ratio: 0 unless the reply starts with the required prefix,
  else ``difflib.SequenceMatcher`` ratio of the rest against the gold's rest.

``score(name, reply, gold)`` picks one by name; ``SCORERS`` lists them.
"""

from __future__ import annotations

import ast
import difflib
import re
from collections.abc import Callable
from typing import Any

from rlm.evals.tasks.corpus import AST_LOCK

COMPARISON_PHRASES = ("more common than", "less common than", "same frequency as")
_PREFIX = re.compile(r"^\s*(?:final\s+)?(?:answer|result)\s*[:=-]\s*", re.IGNORECASE)
_EMPHASIS = re.compile(r"[*_`]+")
_EDGE = re.compile(r"^[\s\"'.,;:!?()\[\]{}<>]+|[\s\"'.,;:!?()\[\]{}<>]+$")


def normalize(text: str) -> str:
    """Lowercase, without an answer prefix, emphasis, edge punctuation or extra spaces."""
    text = _EMPHASIS.sub("", str(text))
    text = _PREFIX.sub("", text.strip())
    text = " ".join(text.split()).lower()
    return _EDGE.sub("", text)


def exact(reply: str, gold: Any) -> float:
    return float(normalize(reply) == normalize(str(gold)))


def contains(reply: str, gold: Any) -> float:
    want = normalize(str(gold))
    if not want:
        return 0.0
    got = " ".join(str(reply).split()).lower()
    return float(re.search(rf"(?<![\w]){re.escape(want)}(?![\w])", got) is not None)


def oolong_candidate(reply: str) -> str:
    """The part of a reply OOLONG's scorer compares (see the module docstring)."""
    lowered = reply.lower()
    hits = [(lowered.rfind(p), p) for p in COMPARISON_PHRASES if p in lowered]
    if hits:
        return max(hits)[1]
    if ":" not in reply:
        words = reply.split()
        return reply.strip() if len(reply) < 20 or not words else words[-1]
    candidate = reply.split(":")[-1].strip()
    return candidate.replace("*", "").replace("[", "").replace("]", "").strip()


def _gold_value(gold: Any) -> Any:
    """A dataset's gold as stored (``"['entity']"``, ``"[12]"``) or a plain value."""
    if isinstance(gold, str) and gold.startswith("[") and gold.endswith("]"):
        try:
            with AST_LOCK:  # literal_eval parses: not thread-safe in CPython 3.11
                parsed = ast.literal_eval(gold)
        except (ValueError, SyntaxError):
            return gold
        if isinstance(parsed, list) and len(parsed) == 1:
            return parsed[0]
    return gold


def oolong(reply: str, gold: Any) -> float:
    value = _gold_value(gold)
    candidate = oolong_candidate(str(reply))
    clean = _EDGE.sub("", candidate.strip()).lower()
    if clean == str(value).strip().lower():
        return 1.0
    if isinstance(value, int | float) and not isinstance(value, bool):
        number = re.search(r"-?\d+(?:\.\d+)?", candidate.replace(",", ""))
        if number is not None:
            return float(0.75 ** abs(float(value) - float(number.group())))
    return 0.0


_PAIR = re.compile(r"([A-Za-z]*\d+|[A-Za-z][\w-]*)\s*[,;&]\s*([A-Za-z]*\d+|[A-Za-z][\w-]*)")


def parse_pairs(reply: str) -> set[tuple[str, str]]:
    """Unordered pairs written as ``(a, b)`` or ``a, b`` (one per line or in brackets)."""
    found: set[tuple[str, str]] = set()
    chunks = re.findall(r"\(([^()]*)\)", reply) or reply.splitlines()
    for chunk in chunks:
        match = _PAIR.search(chunk.replace("'", "").replace('"', "").strip().strip("[] "))
        if match:
            a, b = match.group(1).strip("'\""), match.group(2).strip("'\"")
            if a != b:
                found.add((min(a, b), max(a, b)))
    return found


def pairs_f1(reply: str, gold: Any) -> float:
    want = {(min(str(a), str(b)), max(str(a), str(b))) for a, b in gold}
    got = parse_pairs(str(reply))
    if not want and not got:
        return 1.0
    hits = len(want & got)
    if hits == 0:
        return 0.0
    precision, recall = hits / len(got), hits / len(want)
    return 2 * precision * recall / (precision + recall)


def set_f1(reply: str, gold: Any) -> float:
    items = gold if isinstance(gold, list | tuple) else [gold]
    want = {normalize(str(g)) for g in items} - {""}
    text = oolong_candidate(str(reply)) if ":" in str(reply) else str(reply)
    got = {normalize(part) for part in re.split(r"[,;\n]|\band\b", text)} - {""}
    hits = len(want & got)
    if hits == 0:
        return float(not want and not got)
    precision, recall = hits / len(got), hits / len(want)
    return 2 * precision * recall / (precision + recall)


_CHOICE_PATTERNS = (
    re.compile(r"(?i:correct answer is)\s*\(?\s*([A-D])\b"),
    re.compile(r"(?i:answer)\s*(?:(?i:is)\s*)?[:=]?\s*\(?\s*([A-D])\b(?![\w'])"),
    re.compile(r"^\s*\(?([A-D])\)?(?:[\s.:)]|$)"),
    re.compile(r"\(([A-D])\)"),
)


def choice_letter(reply: str) -> str | None:
    """The option letter a reply picks, LongBench-v2 style; ``None`` when it picks none."""
    text = str(reply).strip().replace("*", "")
    for pattern in _CHOICE_PATTERNS:
        match = pattern.search(text)
        if match:
            return match.group(1).upper()
    return None


def multiple_choice(reply: str, gold: Any) -> float:
    return float(choice_letter(reply) == str(gold).strip().upper())


def mrcr(reply: str, gold: Any) -> float:
    """``gold`` is ``{"answer": str, "prefix": str}`` (MRCR's random_string_to_prepend)."""
    prefix, answer = str(gold.get("prefix", "")), str(gold["answer"])
    if not str(reply).startswith(prefix):
        return 0.0
    rest, want = str(reply)[len(prefix) :], answer.removeprefix(prefix)
    return difflib.SequenceMatcher(None, rest, want).ratio()


SCORERS: dict[str, Callable[[str, Any], float]] = {
    "exact": exact,
    "contains": contains,
    "oolong": oolong,
    "pairs_f1": pairs_f1,
    "set_f1": set_f1,
    "multiple_choice": multiple_choice,
    "mrcr": mrcr,
}


def score(name: str, reply: str, gold: Any) -> float:
    """The score of ``reply`` against ``gold`` with scorer ``name``."""
    try:
        scorer = SCORERS[name]
    except KeyError:
        raise ValueError(f"unknown scorer {name!r}; known: {', '.join(SCORERS)}") from None
    return float(scorer(reply, gold))
