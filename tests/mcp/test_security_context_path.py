"""``rlm mcp``'s ``context_path`` is confined: allowed roots, regular files, a size cap.

The server is a real ``rlm mcp`` subprocess driven by the SDK's own stdio client. It runs
under an address-space limit, so a regression that reads an endless file fails with a
MemoryError in the server instead of exhausting the machine.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("mcp")
from mcp import ClientSession, StdioServerParameters, stdio_client

REPO = Path(__file__).resolve().parents[2]
SECRET = "rlmx-fake-secret-4d1f"
# The scripted model answers with the context's length and its first 20,000 characters.
REPLY = (
    "```repl\nc = context if isinstance(context, str) else '|'.join(context)\n"
    "answer['content'] = f'{len(c)}:' + c[:20000]\nanswer['ready'] = True\n```"
)
# The server process runs under RLIMIT_AS so that reading /dev/zero cannot take the
# machine down if the confinement ever regresses.
LAUNCH = (
    "import resource, sys; resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30)); "
    "from rlm.cli import main; sys.exit(main(['mcp', *sys.argv[1:]]))"
)


def _get(result: Any, snake: str, camel: str) -> Any:
    return getattr(result, snake, None) if hasattr(result, snake) else getattr(result, camel)


def outcome(result: Any) -> tuple[bool, str]:
    """(is_error, the text: the answer, or the error message)."""
    text = " ".join(getattr(c, "text", "") for c in result.content)
    if _get(result, "is_error", "isError"):
        return True, text
    structured = _get(result, "structured_content", "structuredContent")
    data = structured if structured is not None else json.loads(text)
    return False, str(data["answer"])


async def ask_paths(
    workdir: Path, paths: list[str], extra_env: dict[str, str], args: list[str]
) -> list[tuple[bool, str]]:
    env = {
        "RLM_BACKEND": "scripted",
        "RLM_BACKEND_KWARGS": json.dumps({"model_name": "scripted", "responses": [REPLY]}),
        "PYTHONPATH": str(REPO),
        "HOME": str(workdir),
        "RLMX_FAKE_SECRET": SECRET,
        **extra_env,
    }
    params = StdioServerParameters(
        command=sys.executable, args=["-c", LAUNCH, *args], env=env, cwd=str(workdir)
    )
    seen: list[tuple[bool, str]] = []
    with open(workdir.parent / "server.stderr", "w", encoding="utf-8") as errlog:
        async with (
            stdio_client(params, errlog=errlog) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            for path in paths:
                call = session.call_tool("rlm_query", {"question": "q", "context_path": path})
                seen.append(outcome(await asyncio.wait_for(call, timeout=30)))
    return seen


def run(
    workdir: Path, paths: list[str], env: dict[str, str] | None = None, args: tuple[str, ...] = ()
) -> list[tuple[bool, str]]:
    return asyncio.run(asyncio.wait_for(ask_paths(workdir, paths, env or {}, list(args)), 90))


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    root = tmp_path / "work"
    (root / "docs").mkdir(parents=True)
    (root / "docs" / "a.txt").write_text("alpha", encoding="utf-8")
    (root / "notes.txt").write_text("the white rabbit", encoding="utf-8")
    (tmp_path / "outside.txt").write_text("outside the root", encoding="utf-8")
    os.symlink("/proc/self/environ", root / "env-link")
    os.symlink(tmp_path / "outside.txt", root / "docs" / "escape.txt")
    os.symlink(root / "notes.txt", root / "inside-link")  # stays inside: allowed
    return root


def test_paths_outside_the_root_are_refused(workdir: Path) -> None:
    results = run(
        workdir,
        [
            "/proc/self/environ",
            "env-link",
            "../outside.txt",
            str(workdir.parent / "outside.txt"),
            "/etc/*",
            "docs",  # holds a symlink that leads out of the root
            "notes.txt",
            "inside-link",
        ],
    )
    answers = "\n".join(text for _, text in results)
    assert SECRET not in answers  # the server's environment never reaches the client
    assert "outside the root" not in answers
    for is_error, text in results[:6]:
        assert is_error, text
        assert "outside the allowed roots" in text, text
    assert "RLM_MCP_CONTEXT_ROOTS" in results[0][1]  # the error says how to allow more
    assert results[6] == (False, "16:the white rabbit")
    assert results[7] == (False, "16:the white rabbit")


def test_devices_fifos_and_oversized_files_are_refused(workdir: Path) -> None:
    os.mkfifo(workdir / "pipe")  # opening it for reading would block the server
    (workdir / "big.txt").write_text("x" * (2 * 1024 * 1024), encoding="utf-8")
    os.symlink("/dev/zero", workdir / "zero-link")
    results = run(
        workdir,
        ["pipe", "big.txt", "/dev/zero", "zero-link", "notes.txt"],
        env={"RLM_MCP_MAX_CONTEXT_MB": "1"},
    )
    assert results[0][0] and "not a regular file" in results[0][1], results[0]
    assert results[1][0] and "1 MB" in results[1][1], results[1]
    assert "RLM_MCP_MAX_CONTEXT_MB" in results[1][1]
    assert results[2][0] and "outside the allowed roots" in results[2][1], results[2]
    assert results[3][0] and "outside the allowed roots" in results[3][1], results[3]
    assert results[4] == (False, "16:the white rabbit")  # the server is still fine


def test_context_root_flag_and_env_widen_the_roots(workdir: Path) -> None:
    extra = workdir.parent / "extra"
    extra.mkdir()
    (extra / "more.txt").write_text("more text", encoding="utf-8")
    by_flag = run(
        workdir, [str(extra / "more.txt"), "notes.txt"], args=("--context-root", str(extra))
    )
    # The flag replaces the default root (the working directory) instead of adding to it.
    assert by_flag[0] == (False, "9:more text")
    assert by_flag[1][0] and "outside the allowed roots" in by_flag[1][1]
    joined = os.pathsep.join([str(extra), str(workdir)])
    by_env = run(
        workdir, [str(extra / "more.txt"), "notes.txt"], env={"RLM_MCP_CONTEXT_ROOTS": joined}
    )
    assert by_env == [(False, "9:more text"), (False, "16:the white rabbit")]
