"""Shared by the session tests and their child processes: a scripted root model keyed
by root prompt, and helpers to build durable RLMs and run child scripts."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rlm import RLM

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]


def repl(code: str) -> str:
    return f"Working.\n```repl\n{code}\n```"


def submit(expr: str, before: str = "") -> str:
    return repl(f"{before}\nanswer['content'] = {expr}\nanswer['ready'] = True".strip())


class Program:
    """Replies by (root prompt, iteration): ``turns[root_prompt][i]`` answers iteration
    ``i + 1`` of that turn (the last reply repeats). The iteration is read from the
    messages (one assistant message per finished iteration), so a resumed turn gets the
    reply of the iteration it resumes at. ``calls`` records (root prompt, iteration)."""

    def __init__(self, turns: dict[str, list[str]]) -> None:
        self.turns = turns
        self.calls: list[tuple[str, int]] = []
        self.prompts: list[list[dict[str, Any]]] = []

    @staticmethod
    def key(messages: list[dict[str, Any]]) -> str:
        first = str(messages[1]["content"]).splitlines()[0]
        return first.removeprefix("Answer the following: ")

    def __call__(self, prompt: Any) -> str:
        if isinstance(prompt, str):
            return f"sub:{prompt}"
        key = self.key(prompt)
        iteration = sum(1 for m in prompt if m["role"] == "assistant") + 1
        self.calls.append((key, iteration))
        self.prompts.append([dict(m) for m in prompt])
        replies = self.turns[key]
        return replies[min(iteration, len(replies)) - 1]


def durable_rlm(program: Callable[[Any], str], store: Any, session_id: str, **kw: Any) -> RLM:
    kw.setdefault("persistent", True)
    return RLM(
        backend="scripted",
        backend_kwargs={"model_name": "root", "responder": program},
        session_id=session_id,
        session_store=store,
        **kw,
    )


def run_child(script: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run ``python -c script args`` with this folder importable; fail on a bad exit."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE), str(REPO)]))
    out = subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )
    assert out.returncode == 0, out.stderr
    return out


def child_env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE), str(REPO)]))


def raw(store: Any, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Run ``sql`` (``?`` placeholders) on the database behind ``store`` directly, on a
    connection of its own (committed), bypassing the store: for checks and damage."""
    if hasattr(store, "path"):
        import sqlite3

        db = sqlite3.connect(store.path)
        try:
            rows = db.execute(sql, params).fetchall()
            db.commit()
            return rows
        finally:
            db.close()
    import psycopg

    with psycopg.connect(store.url, autocommit=True) as conn:
        conn.execute(f'SET search_path TO "{store.schema}"')
        cursor = conn.execute(sql.replace("?", "%s"), params)
        return cursor.fetchall() if cursor.description else []
