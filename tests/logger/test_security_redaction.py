"""Secrets in configuration never reach error messages, JSONL logs or the viewer page.

One redaction (``rlm.base.redact.redact_secrets`` / ``redact_text``) covers URL
credentials (``scheme://user:pass@``), ``Authorization``/``Cookie`` headers and keys
that name a key, token, secret or password. Real ``rlm`` subprocesses throughout.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from rlm.base import redact as rlm_utils

REPO = Path(__file__).resolve().parents[2]
SECRETS = ("hunter2", "COOKIE-SECRET", "AUTH-SECRET", "sk-LEAK-123")
REPLY = "```repl\nanswer['content'] = 'ok'\nanswer['ready'] = True\n```"
CRED_URL = "http://alice:hunter2@127.0.0.1:9/v1"


def rlm_cli(
    tmp_path: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    base = {
        k: v for k, v in os.environ.items() if not k.startswith(("RLM_", "OPENAI_", "ANTHROPIC_"))
    }
    base.update(PYTHONPATH=str(REPO), HOME=str(tmp_path), **(env or {}))
    return subprocess.run(
        [sys.executable, "-m", "rlm", *args],
        capture_output=True, text=True, env=base, cwd=tmp_path, timeout=120,
    )  # fmt: skip


def assert_no_secret(text: str) -> None:
    leaked = [s for s in SECRETS if s in text]
    assert not leaked, f"secrets leaked: {leaked}"


@pytest.fixture
def context_file(tmp_path: Path) -> Path:
    path = tmp_path / "c.txt"
    path.write_text("some context", encoding="utf-8")
    return path


def test_a_typo_in_backend_kwargs_does_not_echo_it(tmp_path: Path, context_file: Path) -> None:
    typo = '{"base_url": "' + CRED_URL + '", "extra": "sk-LEAK-123",}'  # trailing comma
    proc = rlm_cli(tmp_path, "run", "-c", "c.txt", "q", env={"RLM_BACKEND_KWARGS": typo})
    assert proc.returncode == 2
    assert "RLM_BACKEND_KWARGS" in proc.stderr and "JSON" in proc.stderr
    assert_no_secret(proc.stderr)

    flag = rlm_cli(tmp_path, "run", "-c", "c.txt", "--backend-kwargs", typo, "q")
    assert flag.returncode == 2
    assert "--backend-kwargs" in flag.stderr
    assert_no_secret(flag.stderr)

    (tmp_path / "rlm.toml").write_text(f"backend_kwargs = '{typo}'\n", encoding="utf-8")
    toml = rlm_cli(tmp_path, "run", "-c", "c.txt", "q")
    assert toml.returncode == 2 and "rlm.toml" in toml.stderr
    assert_no_secret(toml.stderr)
    (tmp_path / "rlm.toml").unlink()

    other = rlm_cli(tmp_path, "run", "-c", "c.txt", "q", env={"RLM_MAX_ITERATIONS": CRED_URL})
    assert other.returncode == 2 and "RLM_MAX_ITERATIONS" in other.stderr
    assert_no_secret(other.stderr)


def test_logs_and_viewer_hold_no_credentials(tmp_path: Path, context_file: Path) -> None:
    kwargs = {
        "model_name": "scripted",
        "responses": [REPLY],
        "base_url": CRED_URL,
        "default_headers": {"Cookie": "sid=COOKIE-SECRET", "Authorization": "Bearer AUTH-SECRET"},
    }
    (tmp_path / "kw.json").write_text(json.dumps(kwargs), encoding="utf-8")
    run = rlm_cli(tmp_path, "run", "-c", "c.txt", "--backend", "scripted",
                  "--backend-kwargs", "@kw.json", "--log-dir", "logs", "q")  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert_no_secret(run.stdout + run.stderr)
    (log,) = (tmp_path / "logs").glob("*.jsonl")
    text = log.read_text(encoding="utf-8")
    assert_no_secret(text)
    meta = json.loads(text.splitlines()[0])["backend_kwargs"]
    assert meta["base_url"] == "http://***@127.0.0.1:9/v1"  # where it went is kept
    assert (
        "Cookie" not in meta["default_headers"] and "Authorization" not in meta["default_headers"]
    )

    view = rlm_cli(tmp_path, "view", str(log), "-o", "page.html", "--no-open")
    assert view.returncode == 0, view.stderr
    page = (tmp_path / "page.html").read_text(encoding="utf-8")
    assert_no_secret(page)
    assert "127.0.0.1:9" in page


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_provider_errors_do_not_show_url_credentials(tmp_path: Path, context_file: Path) -> None:
    pytest.importorskip("openai")
    url = f"http://alice:hunter2@127.0.0.1:{closed_port()}/v1"
    proc = rlm_cli(tmp_path, "run", "-c", "c.txt", "--base-url", url, "--model", "m", "-q", "q")
    assert proc.returncode == 4, proc.stderr
    assert "127.0.0.1" in proc.stderr
    assert_no_secret(proc.stderr)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("see http://alice:hunter2@host:8/v1 now", "see http://***@host:8/v1 now"),
        ("https://tok@host/x", "https://***@host/x"),
        ("Authorization: Bearer AUTH-SECRET", "Authorization: Bearer ***"),
        ("https://h/v1?api_key=sk-LEAK-123&model=m", "https://h/v1?api_key=***&model=m"),
        ("max_tokens=100 and mail alice@example.com", "max_tokens=100 and mail alice@example.com"),
    ],
)
def test_redact_text(text: str, expected: str) -> None:
    assert rlm_utils.redact_text(text) == expected


def test_redact_secrets_walks_nested_values() -> None:
    value = {
        "base_url": CRED_URL,
        "default_headers": {"Cookie": "c", "Authorization": "a", "Accept": "json"},
        "hf_key": "k",
        "private_key": "k",
        "keys": ["x"],
        "max_tokens": 5,
        "fallbacks": [{"api_base": CRED_URL, "password": "p"}],
    }
    assert rlm_utils.redact_secrets(value) == {
        "base_url": "http://***@127.0.0.1:9/v1",
        "default_headers": {"Accept": "json"},
        "keys": ["x"],
        "max_tokens": 5,
        "fallbacks": [{"api_base": "http://***@127.0.0.1:9/v1"}],
    }
    assert rlm_utils.filter_sensitive_keys(value) == rlm_utils.redact_secrets(value)  # one rule
