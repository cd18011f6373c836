"""Configuration: flags > RLM_* environment variables > rlm.toml, and secrets stay out."""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import pytest

from rlm.cli import build_parser
from rlm.cli.config import CLIUsageError
from rlm.cli.factory import SettingsFactory, model_setup
from rlm.cli.live import LiveDisplay
from rlm.cli.settings import resolve

TOML = """
backend = "openai_compatible"
base_url = "http://127.0.0.1:9/v1"
model = "from-file"
max_iterations = 7
max_depth = 2

[backend_kwargs]
timeout = 11

[serve]
port = 9001
max_concurrency = 3
"""


def args_for(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["serve", *argv])


def write(tmp_path: Path, text: str = TOML) -> Path:
    path = tmp_path / "rlm.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_file_then_env_then_flag(tmp_path: Path) -> None:
    write(tmp_path)
    home = tmp_path / "home"
    from_file = resolve(args_for(), environ={}, cwd=tmp_path, home=home)
    assert (from_file.model, from_file.max_iterations, from_file.port) == ("from-file", 7, 9001)
    assert from_file.backend_kwargs == {"timeout": 11}
    assert from_file.sources["model"] == "file" and from_file.config_path

    env = {"RLM_MODEL": "from-env", "RLM_MAX_ITERATIONS": "5", "RLM_PORT": "9002"}
    from_env = resolve(args_for(), environ=env, cwd=tmp_path, home=home)
    assert (from_env.model, from_env.max_iterations, from_env.port) == ("from-env", 5, 9002)
    assert from_env.max_depth == 2  # not overridden: still the file's
    assert from_env.sources["model"] == "env"

    flags = args_for("--model", "from-flag", "--port", "9003", "--backend-kwargs", '{"timeout": 3}')
    from_flag = resolve(flags, environ=env, cwd=tmp_path, home=home)
    assert (from_flag.model, from_flag.max_iterations, from_flag.port) == ("from-flag", 5, 9003)
    assert from_flag.backend_kwargs == {"timeout": 3}
    assert from_flag.sources["model"] == "flag"

    setup = model_setup(from_flag, environ={})
    assert setup.backend == "openai_compatible"
    assert setup.backend_kwargs == {
        "model_name": "from-flag", "base_url": "http://127.0.0.1:9/v1", "timeout": 3,
    }  # fmt: skip
    assert SettingsFactory(from_flag, setup).model_ids == ["rlm", "rlm:from-flag"]


def test_config_file_lookup_order(tmp_path: Path) -> None:
    home = tmp_path / "home"
    user = home / ".config" / "rlm" / "rlm.toml"
    user.parent.mkdir(parents=True)
    user.write_text('model = "user-wide"\n', encoding="utf-8")
    assert resolve(args_for(), environ={}, cwd=tmp_path, home=home).model == "user-wide"
    write(tmp_path, 'model = "project"\n')
    assert resolve(args_for(), environ={}, cwd=tmp_path, home=home).model == "project"
    other = tmp_path / "other.toml"
    other.write_text('model = "explicit"\n', encoding="utf-8")
    env = {"RLM_CONFIG": str(other)}
    assert resolve(args_for(), environ=env, cwd=tmp_path, home=home).model == "explicit"
    with pytest.raises(CLIUsageError, match="no such file"):
        resolve(args_for("--config", str(tmp_path / "nope.toml")), environ={}, cwd=tmp_path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('api_key = "sk-123"\n', "looks like a secret"),
        ('[backend_kwargs]\napi_key = "sk-123"\n', "looks like a secret"),
        ('[serve]\ntoken = "t"\n', "looks like a secret"),
        ('modle = "typo"\n', "unknown setting 'modle'"),
        ("port = 80\n", "unknown setting 'port'"),  # it belongs in [serve]
        ("max_iterations = 0\n", "invalid value"),
        ("max_iterations = [", "config file"),
    ],
)
def test_bad_files_are_usage_errors(tmp_path: Path, text: str, message: str) -> None:
    write(tmp_path, text)
    with pytest.raises(CLIUsageError, match=message) as info:
        resolve(args_for(), environ={}, cwd=tmp_path, home=tmp_path)
    assert "sk-123" not in str(info.value)  # never echoed


def test_bad_env_and_secret_flags(tmp_path: Path) -> None:
    with pytest.raises(CLIUsageError, match="RLM_MAX_DEPTH"):
        resolve(args_for(), environ={"RLM_MAX_DEPTH": "deep"}, cwd=tmp_path, home=tmp_path)
    flags = args_for("--backend-kwargs", '{"api_key": "sk-123"}')
    with pytest.raises(CLIUsageError, match="looks like a secret") as info:
        resolve(flags, environ={}, cwd=tmp_path, home=tmp_path)
    assert "sk-123" not in str(info.value)


def test_backend_kwargs_from_a_file(tmp_path: Path) -> None:
    kwargs = tmp_path / "kw.json"
    kwargs.write_text('{"responses": ["FINAL(x)"]}', encoding="utf-8")
    settings = resolve(
        args_for("--backend", "scripted", "--backend-kwargs", f"@{kwargs}"),
        environ={}, cwd=tmp_path, home=tmp_path,
    )  # fmt: skip
    assert settings.backend_kwargs == {"responses": ["FINAL(x)"]}
    rlm = SettingsFactory(settings, model_setup(settings, environ={}))()
    with rlm:
        assert rlm.completion("ctx").response == "x"


def test_live_display_status_line() -> None:
    pytest.importorskip("rich")
    from rich.console import Console

    from rlm.base.events import Event

    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, width=100)
    with LiveDisplay(buffer, console=console, max_iterations=5) as live:
        live.on_event(Event("run_started", "r1", None, None, 0, 0, {}))
        live.on_event(Event("iteration_started", "r1", None, None, 0, 0, {"iteration": 2}))
        live.on_event(Event("subcall_started", "r1", None, None, 0, 0, {"count": 3}))
        live.on_event(
            Event("budget_update", "r1", None, None, 0, 0, {"tokens": 1234, "spent_usd": 0.5})
        )
        line = live.status_line()
    assert line.startswith("iteration 2/5 · 3 sub-calls · 1,234 tokens · $0.500000 · ")
    live.say("after the display stops")  # plain line again
    assert "rlm: after the display stops" in buffer.getvalue()
