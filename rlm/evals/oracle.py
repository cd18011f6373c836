"""A reference solver for the generated families: a scripted model that writes real code.

``respond(prompt)`` is a ``responder`` for the ``scripted`` backend
(``backend_kwargs={"responder": "rlm.evals.oracle:respond"}``). Under an RLM it replies
with a ```repl block holding the family's solver (the function's own source, below)
which reads ``context`` in the REPL, computes the answer and submits it; called
directly (the ``base`` method) it runs the same solver on the prompt's context. It
knows only the questions' wording and the records' layout, not the generator's
answers, so a harness that scores it 100 % has carried every task, answer and score
end to end (``rlm eval --self-check``). ``respond_wrong`` always answers "I do not
know", which must score 0.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from typing import Any

from rlm.evals.tasks.corpus import AST_LOCK


def solve_niah(context: str, question: str) -> str:
    import re

    key = re.search(r"magic number for (\S+) mentioned", question)
    if key is None:
        return ""
    found = re.search(
        r"special magic number for " + re.escape(key.group(1)) + r" is: (\d+)", context
    )
    return found.group(1) if found else ""


def solve_oolong(context: str, question: str) -> str:
    import re
    from collections import Counter

    counts: Counter[str] = Counter(re.findall(r"\|\| Label: (.+)$", context, re.M))
    known = re.search(r"\(one of: (.*?)\)\.", question)
    for label in known.group(1).split(", ") if known else []:
        counts.setdefault(label, 0)
    asked = re.search(r"How many tickets have the label '(.+?)'", question)
    if asked:
        return str(counts[asked.group(1)])
    if "most common among" in question:
        return max(counts, key=lambda k: counts[k])
    if "least common among" in question:
        return min(counts, key=lambda k: counts[k])
    pair = re.search(r"Is the label '(.+?)' more common.*?the label '(.+?)'", question)
    if pair is None:
        return ""
    a, b = counts[pair.group(1)], counts[pair.group(2)]
    return "more common than" if a > b else "less common than" if a < b else "same frequency as"


def solve_pairs(context: str, question: str) -> str:
    import itertools
    import re

    rows = re.findall(r"User: (u\d+) \|\|.*\|\| Label: (.+)$", context, re.M)
    wanted = re.findall(r"labelled '(.+?)'", question)

    def users(label: str) -> set[str]:
        return {user for user, got in rows if got == label}

    if len(wanted) == 1:
        found = {tuple(sorted(p)) for p in itertools.combinations(users(wanted[0]), 2)}
    else:
        found = {
            tuple(sorted((u, v))) for u in users(wanted[0]) for v in users(wanted[1]) if u != v
        }
    return "\n".join(f"({a}, {b})" for a, b in sorted(found))


def solve_codeqa(context: str, question: str) -> str:
    import ast
    import re

    parts = re.split(r"^### FILE: (.+?) ###$", context, flags=re.M)
    files = {parts[i]: parts[i + 1] for i in range(1, len(parts) - 1, 2)}
    options: dict[str, str] = dict(re.findall(r"^\(([A-D])\) (.+)$", question, re.M))
    functions = (ast.FunctionDef, ast.AsyncFunctionDef)
    if "most function definitions" in question:

        def defs(source: str) -> int:
            return sum(isinstance(n, functions) for n in ast.walk(ast.parse(source)))

        return max(options, key=lambda k: defs(files[options[k]]))
    name = re.search(r"class `(.+?)` defined", question)
    if name:
        for letter, path in options.items():
            tree = ast.parse(files[path])
            if any(isinstance(n, ast.ClassDef) and n.name == name.group(1) for n in ast.walk(tree)):
                return letter
        return ""
    params: dict[str, int] = {}
    for source in files.values():
        for node in ast.parse(source).body:
            if isinstance(node, functions):
                a = node.args
                params[node.name] = (
                    len(a.posonlyargs)
                    + len(a.args)
                    + len(a.kwonlyargs)
                    + bool(a.vararg)
                    + bool(a.kwarg)
                )
    return max(options, key=lambda k: params.get(options[k], -1))


SOLVERS: dict[str, Callable[[str, str], str]] = {
    "niah": solve_niah,
    "oolong": solve_oolong,
    "pairs": solve_pairs,
    "codeqa": solve_codeqa,
}
QUESTIONS: dict[str, re.Pattern[str]] = {
    "niah": re.compile(
        r"What is the special magic number for \S+ mentioned in the text\? Reply with the number\."
    ),
    "oolong": re.compile(
        r"The context is a list of support tickets[^\n]*?its label \(one of: [^)]*\)\. [^\n]*?"
        r"(?:Reply with the number\.|Reply with the label\.|same frequency as\.)"
    ),
    "pairs": re.compile(
        r"The context is a list of support tickets[^\n]*?its label\. List every pair[^\n]*?smaller ID first\."
    ),
    "codeqa": re.compile(
        r"The context is Python source files.*?Reply with the letter of the right option\.", re.S
    ),
}
_BASE = re.compile(r"<context>\n(.*)\n</context>\n\nQuestion: (.*)\nAnswer:\s*$", re.S)


def prompt_text(prompt: Any) -> str:
    """Every message's text in a prompt (a string, a message or a message list)."""
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, dict):
        return str(prompt.get("content") or "")
    return "\n".join(prompt_text(m) for m in prompt)


def find_question(text: str) -> tuple[str, str] | None:
    """(family, question) of the generated question quoted in ``text``."""
    for family, pattern in QUESTIONS.items():
        found = pattern.search(text)
        if found:
            return family, found.group(0)
    return None


def _repl(answer_code: str, *sources: str) -> str:
    body = "\n\n".join(sources)
    return f"```repl\n{body}\n\nanswer['content'] = {answer_code}\nanswer['ready'] = True\n```"


def respond(prompt: Any) -> str:
    """The oracle's reply to ``prompt`` (see the module docstring)."""
    text = prompt_text(prompt)
    direct = _BASE.search(text)
    if direct is not None and "```repl" not in text:
        found = find_question(direct.group(2))
        if found is None:
            return "I do not know."
        with AST_LOCK:  # solvers use ast.parse: not thread-safe in CPython 3.11
            return SOLVERS[found[0]](direct.group(1), found[1])
    found = find_question(text)
    if found is None:
        return _repl("'I do not know.'")
    family, question = found
    solver = SOLVERS[family]
    source = inspect.getsource(solver)
    return _repl(f"str({solver.__name__}(context, {question!r}))", source)


def respond_wrong(prompt: Any) -> str:
    """A reply that never answers any task right."""
    if "```repl" in prompt_text(prompt):
        return _repl("'I do not know.'")
    return "I do not know."
