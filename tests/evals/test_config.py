"""The TOML config, methods and suites: what they accept, and clear errors otherwise."""

from __future__ import annotations

from pathlib import Path

import pytest

from rlm.evals import (
    ConfigError,
    MethodError,
    MethodSpec,
    Suite,
    SuiteError,
    build_methods,
    load_config,
    preset,
)

PAPER = """
title = "paper"
[model]
backend = "openai"
backend_kwargs = { model_name = "gpt-5", api_key = "sk-secret-123" }
[rlm]
environment = "sandbox"
max_iterations = 20
[suite]
families = ["niah", "oolong"]
lengths = ["8k", 32768]
seeds = [0, 1, 2]
methods = ["base", "rlm-d1", "mini"]
[families.niah]
haystack = "book.txt"
[[datasets]]
name = "longbench-v2"
path = "data.json"
limit = 5
where = { domain = "Code Repository Understanding" }
[methods.mini]
kind = "rlm"
max_depth = 1
other_backends = ["openai"]
other_backend_kwargs = [{ model_name = "gpt-5-mini" }]
[methods.direct]
kind = "base"
context_window = 272000
[engine]
name = "ray"
max_inflight_llm_calls = 16
[rlms]
python = "/opt/rlms/bin/python"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "eval.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_full_config(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, PAPER))
    assert config.title == "paper" and config.backend == "openai"
    assert config.lengths == [8192, 32768] and config.seeds == [0, 1, 2]
    assert config.family_options == {"niah": {"haystack": "book.txt"}}
    (source,) = config.datasets
    assert source.options == {"limit": "5", "where.domain": "Code Repository Understanding"}
    assert config.engine == {"name": "ray", "max_inflight_llm_calls": 16}
    methods = build_methods(
        config.methods,
        config.backend or "",
        config.backend_kwargs,
        config.rlm,
        config.method_tables,
        config.rlms_python,
    )
    base, d1, mini = methods
    assert (base.kind, base.rlm_kwargs) == ("base", {})
    assert d1.rlm_kwargs == {"environment": "sandbox", "max_iterations": 20, "max_depth": 1}
    assert mini.rlm_kwargs["other_backend_kwargs"] == [{"model_name": "gpt-5-mini"}]
    assert mini.backend_kwargs["model_name"] == "gpt-5"
    # secrets never reach suite.json, and do not change what counts as the same method
    assert "sk-secret" not in str(d1.describe())
    other_key = preset(
        "rlm-d1", "openai", {"model_name": "gpt-5", "api_key": "sk-other"}, config.rlm
    )
    assert other_key.fingerprint == d1.fingerprint
    assert (
        preset("rlm-d1", "openai", {"model_name": "gpt-4o"}, config.rlm).fingerprint
        != d1.fingerprint
    )


def test_default_method_selection() -> None:
    names = [m.name for m in build_methods(None, "openai", {}, {})]
    assert names == ["base", "rlm-d1", "rlm-d2"]
    with_rlms = build_methods(
        None, "openai", {}, {"environment": "sandbox"}, rlms_python="/x/python"
    )
    assert with_rlms[-1].kind == "rlms" and with_rlms[-1].rlm_kwargs["environment"] == "local"
    tables = {"mine": {"kind": "rlm", "max_depth": 2}}
    assert [m.name for m in build_methods(None, "openai", {}, {}, tables)] == ["mine"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[model\nbackend=1", "not valid TOML"),
        ("[modle]\nbackend='x'", "unknown section.*modle"),
        ("[model]\nbackend='x'\nmodel_name='y'", r"\[model\] takes backend and backend_kwargs"),
        ("[suite]\nlengths=['8q']", "bad context length '8q'"),
        ("[suite]\nseeds=['a']", "seeds must be a list of integers"),
        ("[suite]\nfamilys=['niah']", "unknown key.*familys"),
        ("[[datasets]]\nname='mrcr'", r"datasets\[0\] needs name and path"),
        ("[engine]\nworkers=3", r"unknown \[engine\] key.*workers"),
    ],
)
def test_bad_config_is_a_clear_error(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, text))


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "none.toml")


def test_bad_methods_are_clear_errors() -> None:
    with pytest.raises(MethodError, match=r"unknown RLM argument.*max_dept"):
        build_methods(["m"], "openai", {}, {}, {"m": {"max_dept": 2}})
    with pytest.raises(MethodError, match="unknown kind 'agent'"):
        build_methods(["m"], "openai", {}, {}, {"m": {"kind": "agent"}})
    with pytest.raises(MethodError, match="base method takes no RLM arguments"):
        build_methods(["m"], "openai", {}, {}, {"m": {"kind": "base", "max_depth": 2}})
    with pytest.raises(MethodError, match="unknown method 'rlm-d3'"):
        build_methods(["rlm-d3"], "openai", {}, {})
    with pytest.raises(MethodError, match="needs --rlms-python"):
        build_methods(["rlms"], "openai", {}, {})
    with pytest.raises(MethodError, match=r"RLM argument.*logger"):
        MethodSpec("m", "rlm", "openai", {}, {"logger": "x"})


def test_suites_refuse_what_cannot_run(tmp_path: Path) -> None:
    methods = [preset("base", "scripted", {})]
    for suite, message in [
        (Suite([], ["niah"], [1024]), "no methods"),
        (Suite(methods, ["needle"], [1024]), "unknown task family needle"),
        (Suite(methods, ["niah"], []), "at least one context length"),
        (Suite(methods, [], []), "nothing to run"),
        (Suite(methods + methods, ["niah"], [1024]), "must be unique"),
        (
            Suite(
                methods,
                ["niah"],
                [1024],
                family_options={"niah": {"haystack": str(tmp_path / "x")}},
            ),
            "haystack text not found",
        ),
    ]:
        with pytest.raises(SuiteError, match=message):
            suite.plan()


def test_plan_is_fixed_and_keys_name_everything() -> None:
    methods = [preset("base", "scripted", {}), preset("rlm-d1", "scripted", {})]
    suite = Suite(methods, ["niah", "oolong"], [1024, 2048], [0, 1])
    keys = [i.key for i in suite.plan()]
    assert keys == [i.key for i in suite.plan()] and len(set(keys)) == 16
    assert keys[0] == "base|niah/1K/s0|r0" and keys[1] == "rlm-d1|niah/1K/s0|r0"
