"""S-NIAH: one needle (a key and a 7-digit number) in a haystack of prose.

As in RULER's single-needle task: the haystack is cut from a public-domain text (see
``corpus``), starting at a seeded paragraph and wrapping around until it reaches the
target length; the needle sentence is inserted at a seeded depth between paragraphs.
The answer is the number; the scorer checks that it appears in the reply.
"""

from __future__ import annotations

import random

from rlm.evals.records import CHARS_PER_TOKEN, Task, TaskSpec, estimate_tokens, format_length
from rlm.evals.tasks.corpus import corpus_identity, haystack_text, paragraphs

VERSION = "1"
SCORER = "contains"
_ADJECTIVES = (
    "amber",
    "brisk",
    "copper",
    "dusky",
    "elder",
    "frosty",
    "gilded",
    "hollow",
    "ivory",
    "jagged",
    "kindly",
    "lunar",
    "misty",
    "nimble",
    "olive",
    "placid",
    "quiet",
    "russet",
    "silent",
    "tawny",
    "umber",
    "velvet",
    "wistful",
    "young",
)
_NOUNS = (
    "harbor",
    "lantern",
    "meadow",
    "orchard",
    "pebble",
    "quarry",
    "river",
    "saddle",
    "thimble",
    "valley",
    "willow",
    "anchor",
    "beacon",
    "cellar",
    "dune",
    "ember",
    "falcon",
    "garnet",
    "heron",
    "island",
    "juniper",
    "kettle",
    "ledger",
    "mirror",
)
QUESTION = (
    "What is the special magic number for {key} mentioned in the text? Reply with the number."
)
NEEDLE = "The special magic number for {key} is: {number}."


def fingerprint(spec: TaskSpec) -> str:
    return f"niah-v{VERSION}-{corpus_identity(spec.option('haystack'))}"


def generate(spec: TaskSpec) -> Task:
    """The S-NIAH task for ``spec`` (length, seed; option ``haystack``: a text file)."""
    rng = random.Random(f"niah:{spec.seed}:{spec.length_tokens}")
    paras = paragraphs(haystack_text(spec.option("haystack")))
    key = f"{rng.choice(_ADJECTIVES)}-{rng.choice(_NOUNS)}-{rng.randint(100, 999)}"
    number = rng.randint(1_000_000, 9_999_999)
    needle = NEEDLE.format(key=key, number=number)
    target = max(spec.length_tokens * CHARS_PER_TOKEN - len(needle) - 2, 0)
    chosen: list[str] = []
    size, index = 0, rng.randrange(len(paras))
    while size < target:
        para = paras[index % len(paras)]
        if size + len(para) + 2 > target and chosen:
            para = para[: max(target - size - 2, 0)]  # the last one cut to fit exactly
            if para:
                chosen.append(para)
            break
        chosen.append(para)
        size += len(para) + 2
        index += 1
    depth = rng.random()
    position = round(depth * len(chosen))
    chosen.insert(position, needle)
    context = "\n\n".join(chosen)
    return Task(
        family="niah",
        task_id=f"{format_length(spec.length_tokens)}-s{spec.seed}",
        context=context,
        question=QUESTION.format(key=key),
        answer=str(number),
        scorer=SCORER,
        length_tokens=estimate_tokens(context),
        length_label=format_length(spec.length_tokens),
        metadata={"key": key, "depth": round(position / max(len(chosen) - 1, 1), 3)},
    )
