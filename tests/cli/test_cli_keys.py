"""Which key a ``--base-url`` server gets, the same from the CLI as from Python, and
what a 401, a missing key or a missing extra tells the user (real subprocesses
against a loopback OpenAI-compatible server)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from cli_support import GOOD_KEY, rlm, upstream

from rlm import RLM

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("openai") is None, reason="the openai backend needs openai"
)


@pytest.fixture
def story(tmp_path: Path) -> Path:
    (tmp_path / "story.txt").write_text("Alice followed the White Rabbit.", encoding="utf-8")
    return tmp_path


def test_cli_sends_openai_api_key_to_a_base_url_as_python_does(
    story: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with upstream() as server:
        proc = rlm("run", "-c", "story.txt", "--base-url", server.url, "--model", "m", "-q",
                   "Who?", cwd=story, env={"OPENAI_API_KEY": GOOD_KEY})  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout == "the White Rabbit\n"
        cli_keys = list(server.keys)

        monkeypatch.setenv("OPENAI_API_KEY", GOOD_KEY)
        monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
        python = RLM(backend="openai", backend_kwargs={"base_url": server.url, "model_name": "m"})
        with python:
            assert python.completion("Alice.", root_prompt="Who?").response == "the White Rabbit"
    assert cli_keys == [f"Bearer {GOOD_KEY}"]
    assert server.keys[-1] == cli_keys[0]  # the same header either way


def test_401_without_a_key_names_the_variable_and_the_flag(story: Path) -> None:
    with upstream() as server:
        proc = rlm("run", "-c", "story.txt", "--base-url", server.url, "--model", "m", "-q",
                   "Who?", cwd=story)  # fmt: skip
    assert proc.returncode == 4
    (line,) = proc.stderr.splitlines()
    assert line.startswith(f"rlm: error: {server.url} returned HTTP 401: Incorrect API key")
    assert "The CLI sent no key ($OPENAI_API_KEY is not set)" in line
    assert "pass --api-key-env VAR to send the key held in $VAR" in line


def test_401_with_the_wrong_key_says_which_was_sent(story: Path) -> None:
    with upstream() as server:
        wrong = rlm("run", "-c", "story.txt", "--base-url", server.url, "--model", "m", "-q",
                    "Who?", cwd=story, env={"OPENAI_API_KEY": "sk-wrong"})  # fmt: skip
        named = rlm("run", "-c", "story.txt", "--base-url", server.url, "--model", "m", "-q",
                    "--api-key-env", "MY_KEY", "Who?", cwd=story,
                    env={"MY_KEY": "sk-also-wrong"})  # fmt: skip
        good = rlm("run", "-c", "story.txt", "--base-url", server.url, "--model", "m", "-q",
                   "--api-key-env", "MY_KEY", "Who?", cwd=story,
                   env={"MY_KEY": GOOD_KEY, "OPENAI_API_KEY": "sk-wrong"})  # fmt: skip
    assert wrong.returncode == 4
    assert "The CLI sent $OPENAI_API_KEY; pass --api-key-env VAR" in wrong.stderr
    assert "sk-wrong" not in wrong.stderr
    assert named.returncode == 4
    assert "The CLI sent the key in $MY_KEY (--api-key-env)" in named.stderr
    assert good.returncode == 0 and good.stdout == "the White Rabbit\n"
    assert server.keys == ["Bearer sk-wrong", "Bearer sk-also-wrong", f"Bearer {GOOD_KEY}"]


def test_explicit_openai_compatible_sends_no_key_and_says_so(story: Path) -> None:
    with upstream() as server:
        proc = rlm("run", "-c", "story.txt", "--base-url", server.url, "--model", "m", "-q",
                   "--backend", "openai_compatible", "Who?", cwd=story,
                   env={"OPENAI_API_KEY": GOOD_KEY})  # fmt: skip
    assert proc.returncode == 4
    assert "The 'openai_compatible' backend sends no key by itself; pass --api-key-env" in (
        proc.stderr
    )
    assert server.keys == ["Bearer not-needed"]  # as RLM(backend="openai_compatible") does


def test_a_missing_api_key_is_exit_2_naming_the_flag(story: Path) -> None:
    proc = rlm("run", "-c", "story.txt", "--backend", "openai", "-q", "Who?", cwd=story)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        "rlm: error: the 'openai' backend needs an API key: set OPENAI_API_KEY, or pass "
        "--api-key-env VAR to send the key held in $VAR"
    ]


def blocked_openai(tmp_path: Path) -> dict[str, str]:
    """A PYTHONPATH on which ``import openai`` fails, as if the extra were missing."""
    blocker = tmp_path / "blocked" / "openai"
    blocker.mkdir(parents=True, exist_ok=True)
    (blocker / "__init__.py").write_text("raise ImportError('openai is not installed')\n")
    repo = Path(__file__).resolve().parents[2]
    return {"PYTHONPATH": f"{blocker.parent}:{repo}"}


def test_a_missing_extra_is_exit_2_with_the_install_line(story: Path) -> None:
    with upstream() as server:
        run = rlm("run", "-c", "story.txt", "--base-url", server.url, "--model", "m", "-q",
                  "Who?", cwd=story, env=blocked_openai(story))  # fmt: skip
        chat = rlm("chat", "--base-url", server.url, "--model", "m", "-q", cwd=story,
                   env=blocked_openai(story) | {"TERM": "dumb"})  # fmt: skip
    for proc in (run, chat):
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.splitlines()[-1] == (
            "rlm: error: The openai backend needs the optional dependency 'openai'. Install "
            "it with: pip install 'rlmx[openai]'"
        )
        assert "Traceback" not in proc.stderr
    assert server.keys == []
