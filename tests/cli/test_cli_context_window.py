"""``--context-window`` (and ``RLM_CONTEXT_WINDOW``, ``context_window`` in rlm.toml)
reaches the client as its ``context_window`` override."""

from __future__ import annotations

from pathlib import Path

import pytest

from rlm.cli import build_parser
from rlm.cli.config import CLIUsageError
from rlm.cli.factory import model_setup
from rlm.cli.settings import resolve


def test_flag_env_and_file_set_the_window(tmp_path: Path) -> None:
    home = tmp_path / "home"
    script = '{"responses": ["FINAL(1)"]}'
    base = ["serve", "--backend", "scripted", "--backend-kwargs", script, "--model", "m"]
    args = build_parser().parse_args([*base, "--context-window", "32000"])
    settings = resolve(args, environ={}, cwd=tmp_path, home=home)
    assert settings.context_window == 32_000 and settings.sources["context_window"] == "flag"
    assert model_setup(settings, environ={}).backend_kwargs["context_window"] == 32_000

    plain = build_parser().parse_args(base)
    from_env = resolve(plain, environ={"RLM_CONTEXT_WINDOW": "9000"}, cwd=tmp_path, home=home)
    assert model_setup(from_env, environ={}).backend_kwargs["context_window"] == 9_000

    (tmp_path / "rlm.toml").write_text("context_window = 4096\n", encoding="utf-8")
    from_file = resolve(plain, environ={}, cwd=tmp_path, home=home)
    assert model_setup(from_file, environ={}).backend_kwargs["context_window"] == 4_096

    unset = resolve(plain, environ={}, cwd=tmp_path / "elsewhere", home=home)
    assert "context_window" not in model_setup(unset, environ={}).backend_kwargs


def test_a_bad_window_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--context-window", "0"])
    args = build_parser().parse_args(["serve"])
    with pytest.raises(CLIUsageError, match="RLM_CONTEXT_WINDOW"):
        resolve(args, environ={"RLM_CONTEXT_WINDOW": "lots"}, cwd=tmp_path, home=tmp_path)
