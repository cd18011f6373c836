"""Plain records of an evaluation: tasks, task specs, work items and token lengths.

A ``Task`` is one question with its context and gold answer. A ``TaskSpec`` names a task
without holding it (family, length, seed, options), so a generated task is built where
it runs (a Ray worker builds its own) and a resumed run recognises finished work from
the spec alone; a loaded task (a dataset row, a batch row) travels inside its spec
(``inline``). A ``WorkItem`` is one (method, task, run seed) to run; its ``key`` names
its result row and its ``fingerprint`` says whether a stored row is still valid.

Lengths are in estimated tokens, 4 characters per token (``estimate_tokens``), and
``K``/``M`` are binary (8K = 8,192 tokens), as in OOLONG and RULER.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rlm.evals.methods import MethodSpec

Context = str | list[str]
CHARS_PER_TOKEN = 4


def digest(value: Any) -> str:
    """A short, stable hash of a JSON-able value (sorted keys)."""
    text = json.dumps(value, sort_keys=True, default=str, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def estimate_tokens(context: Context) -> int:
    """Estimated tokens of a context: characters / 4, rounded up."""
    chars = len(context) if isinstance(context, str) else sum(len(part) for part in context)
    return (chars + CHARS_PER_TOKEN - 1) // CHARS_PER_TOKEN


_LENGTH = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kKmM]?)\s*$")


def parse_length(text: str | int) -> int:
    """``"8k"`` -> 8192, ``"1M"`` -> 1048576, ``"3000"`` -> 3000 (tokens)."""
    if isinstance(text, int):
        if text <= 0:
            raise ValueError(f"a context length must be positive, got {text}")
        return text
    match = _LENGTH.match(text)
    if not match:
        raise ValueError(f"bad context length {text!r} (use tokens: 8192, 8k, 128K, 1M)")
    number, unit = float(match.group(1)), match.group(2).lower()
    tokens = int(number * {"": 1, "k": 1024, "m": 1024 * 1024}[unit])
    if tokens <= 0:
        raise ValueError(f"a context length must be positive, got {text!r}")
    return tokens


def format_length(tokens: int) -> str:
    """8192 -> ``"8K"``, 1048576 -> ``"1M"``, 3000 -> ``"3000"``."""
    if tokens >= 1024 * 1024 and tokens % (1024 * 1024) == 0:
        return f"{tokens // (1024 * 1024)}M"
    if tokens >= 1024 and tokens % 1024 == 0:
        return f"{tokens // 1024}K"
    return str(tokens)


@dataclass(frozen=True)
class Task:
    """One question over one context, with its gold answer (``None``: none known)."""

    family: str
    task_id: str
    context: Context
    question: str
    answer: Any
    scorer: str
    length_tokens: int
    length_label: str
    metadata: dict[str, Any] = field(default_factory=dict)

    def content_hash(self) -> str:
        """A hash of what the model sees and what it is scored against."""
        return digest([self.family, self.context, self.question, self.answer, self.scorer])


@dataclass(frozen=True)
class TaskSpec:
    """A task by name: generated on demand, or carried whole (``inline``)."""

    family: str
    length_tokens: int
    seed: int
    options: tuple[tuple[str, Any], ...] = ()
    fingerprint: str = ""  # generator version and sources; set by the family at planning
    inline: Task | None = None

    @property
    def key(self) -> str:
        if self.inline is not None:
            return f"{self.family}/{self.inline.task_id}"
        return f"{self.family}/{format_length(self.length_tokens)}/s{self.seed}"

    @property
    def length_label(self) -> str:
        if self.inline is not None:
            return self.inline.length_label
        return format_length(self.length_tokens)

    def option(self, name: str, default: Any = None) -> Any:
        return dict(self.options).get(name, default)


@dataclass(frozen=True)
class WorkItem:
    """One method on one task with one run seed."""

    method: MethodSpec
    task: TaskSpec
    seed: int

    @property
    def key(self) -> str:
        return f"{self.method.name}|{self.task.key}|r{self.seed}"

    @property
    def fingerprint(self) -> str:
        return digest([self.method.fingerprint, self.task.fingerprint, self.seed])
