"""Custom tools for out-of-process REPLs: what can cross the process boundary.

A host callable cannot run in a worker. A tool reaches the worker as one of:

* a value (anything picklable: numbers, strings, lists, dicts...), bound as a variable
  exactly as LocalREPL binds non-callable tools;
* Python source code given as the tool's string value (``"def f(x): ..."``, a class,
  or a ``lambda`` expression): built in the worker and restored after every cell like
  LocalREPL's callable tools. A string is taken as source only if it parses and
  defines a function or class (or is a lambda), so ordinary text stays a value;
* a plain host function, shipped by its source (``inspect.getsource``). It must be
  self-contained: imports inside the function, no closures. Anything else is skipped
  with a warning.
"""

from __future__ import annotations

import ast
import inspect
import textwrap
import types
import warnings
from typing import Any

from rlm.environments.base_env import extract_tool_value

_DEFS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


def looks_like_source(text: str) -> bool:
    """Whether ``text`` is Python that defines a function/class or is a lambda."""
    try:
        tree = ast.parse(textwrap.dedent(text))
    except (SyntaxError, ValueError):
        return False
    if any(isinstance(node, _DEFS) for node in tree.body):
        return True
    return (
        len(tree.body) == 1
        and isinstance(tree.body[0], ast.Expr)
        and isinstance(tree.body[0].value, ast.Lambda)
    )


def function_source(fn: Any) -> str | None:
    """The source of a self-contained host function, or None if it cannot be shipped."""
    if not isinstance(fn, types.FunctionType) or fn.__name__ == "<lambda>":
        return None
    if fn.__code__.co_freevars:
        return None  # a closure: its captured values would not exist in the worker
    try:
        return textwrap.dedent(inspect.getsource(fn))
    except (OSError, TypeError):
        return None


def split_tools(custom_tools: dict[str, Any] | None) -> tuple[dict[str, Any], dict[str, str]]:
    """``(values, sources)`` for the worker; warns about tools that cannot go."""
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for name, entry in (custom_tools or {}).items():
        value = extract_tool_value(entry)
        if isinstance(value, str) and looks_like_source(value):
            sources[name] = textwrap.dedent(value)
        elif callable(value):
            source = function_source(value)
            if source is None:
                warnings.warn(
                    f"custom tool {name!r} is a host callable that cannot be shipped to the "
                    "worker (lambda, closure, builtin or no source); pass it as source code",
                    RuntimeWarning,
                    stacklevel=3,
                )
            else:
                sources[name] = source
        else:
            values[name] = value
    return values, sources
