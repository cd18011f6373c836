"""The viewer page never shows credentials, even from a log that was not written by
``RLMLogger`` (a hand-made or older log file): the metadata goes through the same
redaction as logs and errors, and so do sub-call and run errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from rlm.viewer import write_html

REPO = Path(__file__).resolve().parents[2]
SECRETS = ("hunter2", "COOKIE-SECRET", "AUTH-SECRET", "HF-SECRET", "sk-QUERY-SECRET")
CRED_URL = "https://alice:hunter2@llm.internal:8443/v1"


def write_log(path: Path) -> Path:
    metadata = {
        "type": "metadata",
        "root_model": "m",
        "max_depth": 1,
        "max_iterations": 3,
        "backend": "openai",
        "backend_kwargs": {
            "model_name": "m",
            "base_url": CRED_URL,
            "default_headers": {
                "Cookie": "sid=COOKIE-SECRET",
                "Authorization": "Bearer AUTH-SECRET",
                "Accept": "application/json",
            },
            "hf_key": "HF-SECRET",
            "fallback_url": "https://llm.internal/v1?api_key=sk-QUERY-SECRET",
        },
        "environment_type": "local",
        "environment_kwargs": {},
    }
    failed_call = {
        "root_model": "m",
        "prompt": "p",
        "response": "",
        "error": f"Could not reach {CRED_URL}: connection refused",
    }
    iteration = {
        "type": "iteration",
        "iteration": 1,
        "prompt": [{"role": "user", "content": "q"}],
        "response": "```repl\nx = llm_query('p')\n```",
        "code_blocks": [
            {
                "code": "x = llm_query('p')",
                "result": {"stdout": "", "stderr": "", "rlm_calls": [failed_call]},
            }
        ],
        "final_answer": None,
    }
    path.write_text(
        "\n".join(json.dumps(r) for r in (metadata, iteration)) + "\n", encoding="utf-8"
    )
    return path


def assert_no_secret(text: str) -> None:
    leaked = [s for s in SECRETS if s in text]
    assert not leaked, f"secrets in the page: {leaked}"


def test_page_from_a_hand_made_log_has_no_credentials(tmp_path: Path) -> None:
    log = write_log(tmp_path / "run.jsonl")
    page = write_html(log, tmp_path / "page.html").read_text(encoding="utf-8")
    assert_no_secret(page)
    assert "llm.internal:8443" in page  # the redacted URL still says where it went
    assert "application/json" in page


def test_rlm_view_command_redacts_too(tmp_path: Path) -> None:
    log = write_log(tmp_path / "run.jsonl")
    proc = subprocess.run(
        [sys.executable, "-m", "rlm", "view", str(log), "-o", str(tmp_path / "v.html"), "--no-open"],
        capture_output=True, text=True, timeout=60, env={"PYTHONPATH": str(REPO), "PATH": ""},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert_no_secret((tmp_path / "v.html").read_text(encoding="utf-8"))
