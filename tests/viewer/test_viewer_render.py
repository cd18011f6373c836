"""The viewer page as text: escaping, self-containment, the embedded data and its tree."""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
from pathlib import Path
from typing import Any

import pytest
from viewer_data import (
    LONG_TAIL,
    MODEL,
    XSS,
    page_data,
    read_lines,
    run_logged,
    write_big_log,
)

import rlm.viewer
from rlm.base.types import RLMChatCompletion
from rlm.viewer import default_output_path, render_html, write_html
from rlm.viewer.model import FULL_TEXT_CAP


def sub_call_usage(lines: list[dict[str, Any]]) -> tuple[int, int, int]:
    calls = inputs = outputs = 0
    for line in lines:
        for block in line.get("code_blocks") or []:
            for call in block["result"]["rlm_calls"]:
                for usage in call["usage_summary"]["model_usage_summaries"].values():
                    calls += usage["total_calls"]
                    inputs += usage["total_input_tokens"]
                    outputs += usage["total_output_tokens"]
    return calls, inputs, outputs


# -- safety and self-containment ---------------------------------------------------------


def test_model_text_is_escaped(real_log: Path) -> None:
    page = render_html(real_log)
    assert XSS not in page
    assert "<script>window.__pwned" not in page
    assert "\\u003cscript\\u003ewindow.__pwned = 1\\u003c/script\\u003e" in page
    # Exactly the two script elements of the template: the data and the viewer.
    assert len(re.findall(r"<script\b", page)) == 2
    assert page.count("</script>") == 2


def test_hostile_text_cannot_close_the_data_block() -> None:
    hostile = "</script><script>alert(1)</script>&amp;<!--\u2028"
    trajectory = {
        "run_metadata": {"root_model": hostile, "backend_kwargs": {"note": hostile}},
        "iterations": [{"response": hostile, "code_blocks": [], "prompt": hostile}],
    }
    page = render_html(trajectory, title=hostile)
    assert "alert(1)</script>" not in page
    assert "<title>&lt;/script&gt;&lt;script&gt;alert(1)" in page
    data = page_data(page)
    assert data["iters"][0]["response"] == hostile
    assert data["runs"][0]["metadata"]["root_model"] == hostile


def test_no_external_resources(real_log: Path) -> None:
    page = render_html(real_log)
    assert "http://" not in page and "https://" not in page
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", page, re.I)
    assert "<link" not in page and "@import" not in page and "url(" not in page
    assert "default-src 'none'" in page


def test_csp_pins_the_inline_script_by_hash(real_log: Path) -> None:
    page = render_html(real_log)
    scripts = re.findall(r"<script>(.*?)</script>", page, re.DOTALL)
    assert len(scripts) == 1
    digest = base64.b64encode(hashlib.sha256(scripts[0].encode()).digest()).decode()
    assert f"script-src 'sha256-{digest}'" in page


def test_page_markup_has_search_tree_and_timeline(real_log: Path) -> None:
    page = render_html(real_log)
    for marker in ('id="search"', 'id="match-count"', 'id="tree"', 'id="detail"', 'id="summary"'):
        assert marker in page
    assert page.startswith("<!doctype html>")
    assert f"<title>RLM trajectory · {real_log.name}</title>" in page


# -- the embedded data --------------------------------------------------------------------


def test_data_block_round_trips_the_real_run(real_log: Path) -> None:
    lines = read_lines(real_log)
    data = page_data(render_html(real_log))
    iterations = [line for line in lines if line["type"] == "iteration"]
    root = data["runs"][0]
    assert data["roots"] == [0]
    assert root["parent"] is None and root["model"] == MODEL
    assert [data["iters"][i]["response"] for i in root["iterations"]] == [
        i["response"] for i in iterations
    ]
    assert root["metadata"]["max_depth"] == 2
    assert data["summary"]["model"] == MODEL
    assert data["summary"]["iterations"] == len(iterations) == 4
    assert data["summary"]["answer"] == "done"

    first = data["iters"][root["iterations"][0]]
    assert first["blocks"][0]["code"].startswith("print('hello stdout'")
    assert first["blocks"][0]["stdout"] == "hello stdout 12\nplain:summarise\n"
    second = data["iters"][root["iterations"][1]]
    assert "ZeroDivisionError" in second["blocks"][0]["stderr"] and second["error"]
    third = data["iters"][root["iterations"][2]]
    assert third["blocks"][0]["stdout"].rstrip().endswith(LONG_TAIL)


def test_child_rlm_is_a_node_with_its_own_iterations(real_log: Path) -> None:
    data = page_data(render_html(real_log))
    root, child = data["runs"]
    assert root["children"] == [1]
    assert child["parent"] == 0 and child["depth"] == 1 and child["label"] == "child RLM"
    assert child["prompt"] == "child task" and child["response"] == "child:plain:leaf question"
    iteration_index, block, call = child["via"]
    spawning = data["iters"][iteration_index]["blocks"][block]["calls"][call]
    assert spawning["run"] == 1
    (child_iteration,) = (data["iters"][i] for i in child["iterations"])
    assert child_iteration["blocks"][0]["stdout"] == "child out plain:leaf question\n"
    assert child_iteration["blocks"][0]["calls"][0]["response"] == "plain:leaf question"


def test_usage_per_node_matches_the_log(real_run: tuple[Path, RLMChatCompletion]) -> None:
    real_log, result = real_run
    lines = read_lines(real_log)
    data = page_data(render_html(real_log))
    root, child = data["runs"]
    total = result.usage_summary
    # The closing record makes the root's total true: its own model calls included.
    assert root["usage_reported"] is True
    assert (root["usage"]["calls"], root["usage"]["input"], root["usage"]["output"]) == (
        total.total_calls,
        total.total_input_tokens,
        total.total_output_tokens,
    )
    assert root["usage"]["cost"] == pytest.approx(total.total_cost)
    child_call = next(
        c
        for line in lines
        for b in line.get("code_blocks") or []
        for c in b["result"]["rlm_calls"]
        if "metadata" in c
    )
    logged = child_call["usage_summary"]["model_usage_summaries"][MODEL]
    assert child["usage_reported"] is True
    assert child["usage"]["input"] == logged["total_input_tokens"]
    assert child["usage"]["cost"] == pytest.approx(logged["total_cost"])
    # Per iteration: the root model's own call plus its sub-calls; together, the total.
    per_iteration = sum(data["iters"][i]["usage"]["input"] for i in root["iterations"])
    assert per_iteration == total.total_input_tokens
    _, sub_inputs, _ = sub_call_usage(lines)
    own = sum(data["iters"][i]["tokens"]["model"] for i in root["iterations"])
    assert sub_inputs < per_iteration and own > 0


def test_prompts_are_embedded_once(real_log: Path) -> None:
    data = page_data(render_html(real_log))
    root = data["runs"][0]
    first, second = (data["iters"][i] for i in root["iterations"][:2])
    assert first["prompt_skipped"] == 0 and first["prompt"][0]["role"] == "system"
    assert second["prompt_skipped"] == len(first["prompt"])
    assert [m["role"] for m in second["prompt"]] == ["assistant", "user", "user"]


# -- accepted sources ---------------------------------------------------------------------


def test_completion_and_in_memory_trajectory(tmp_path: Path) -> None:
    _, result = run_logged(tmp_path)
    assert isinstance(result.metadata, dict)
    from_dict = page_data(render_html(result.metadata))
    assert len(from_dict["runs"]) == 2
    assert from_dict["runs"][0]["usage_reported"] is False  # no closing record in memory

    from_completion = page_data(render_html(result))
    root = from_completion["runs"][0]
    assert root["usage_reported"] is True
    assert root["usage"]["calls"] == result.usage_summary.total_calls
    assert root["usage"]["input"] == result.usage_summary.total_input_tokens
    assert root["usage"]["models"][MODEL]["output"] == result.usage_summary.total_output_tokens
    assert from_completion["summary"]["answer"] == result.response
    assert from_completion["summary"]["usage_reported"] is True
    assert page_data(render_html(result.to_dict()))["runs"][0]["usage"] == root["usage"]


def test_tolerates_unknown_keys_lines_and_a_cut_last_line(big_log: Path, tmp_path: Path) -> None:
    lines = big_log.read_text().splitlines()[:4]
    lines.insert(2, json.dumps({"type": "heartbeat", "whatever": [1, 2]}))
    lines.append('{"type": "iteration", "iteration": 4, "respo')  # killed mid-write
    path = tmp_path / "odd.jsonl"
    path.write_text("\n".join(lines) + "\n")
    data = page_data(render_html(path))
    assert [i["n"] for i in data["iters"]] == [1, 2, 3]
    assert data["summary"]["model"] == "big-model"


def test_rejects_what_is_not_a_run_log(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"type": "metadata"}\nnot json\n{"type": "iteration"}\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl:2"):
        render_html(bad)
    with pytest.raises(ValueError, match="not a trajectory"):
        render_html({"hello": "world"})


def test_whole_file_json_document(tmp_path: Path, real_log: Path) -> None:
    lines = read_lines(real_log)
    trajectory = {
        "run_metadata": lines[0],
        "iterations": [line for line in lines if line["type"] == "iteration"],
    }
    path = tmp_path / "trajectory.json"
    path.write_text(json.dumps(trajectory, indent=2))
    assert len(page_data(render_html(path))["runs"]) == 2


def test_runs_linked_by_parent_id_and_not_duplicated() -> None:
    child_line = {
        "type": "iteration",
        "iteration": 1,
        "run_id": "run7",
        "parent_id": "run6",
        "depth": 1,
        "response": "child reply",
        "code_blocks": [],
    }
    grandchild = {**child_line, "run_id": "run8", "parent_id": "run7", "depth": 2}
    nested = {"run_metadata": {"root_model": "m"}, "iterations": [child_line]}
    call = {
        "root_model": "m",
        "prompt": "p",
        "response": "r",
        "usage_summary": {"model_usage_summaries": {"m": {"total_calls": 2}}},
        "metadata": nested,
    }
    root_line = {
        "type": "iteration",
        "iteration": 1,
        "run_id": "run6",
        "depth": 0,
        "response": "root reply",
        "code_blocks": [{"code": "rlm_query('p')", "result": {"rlm_calls": [call]}}],
    }
    # Children finish first, so their lines come before their parent's.
    trajectory = {
        "run_metadata": {"root_model": "m"},
        "iterations": [grandchild, child_line, root_line],
    }
    data = page_data(render_html(trajectory))
    by_key = {r["key"]: r for r in data["runs"]}
    assert set(by_key) == {"run6", "run7", "run8"}
    assert data["roots"] == [by_key["run6"]["id"]]
    assert by_key["run7"]["parent"] == by_key["run6"]["id"]
    assert by_key["run8"]["parent"] == by_key["run7"]["id"] and by_key["run8"]["depth"] == 2
    assert by_key["run7"]["via"] is not None and by_key["run7"]["usage"]["calls"] == 2
    assert by_key["run6"]["children"] == [by_key["run7"]["id"]]


def test_persistent_session_turns_become_top_level_runs(tmp_path: Path) -> None:
    from unittest import mock

    import rlm.core.rlm
    from rlm import RLM
    from rlm.clients.scripted import ScriptedLM
    from rlm.logger import RLMLogger

    reply = "```repl\nanswer['content'] = str(len(context))\nanswer['ready'] = True\n```"
    client = ScriptedLM("turns", responses=[reply])
    logger = RLMLogger(log_dir=str(tmp_path))
    with (
        mock.patch.object(rlm.core.rlm, "get_client", lambda b, k: client),
        RLM(
            backend="openai", backend_kwargs={"model_name": "turns"}, persistent=True, logger=logger
        ) as r,
    ):
        r.completion("first context")
        r.completion("second context")
    logger.close()
    assert logger.log_file_path is not None
    data = page_data(render_html(logger.log_file_path))
    assert [data["runs"][i]["label"] for i in data["roots"]] == ["turn 1", "turn 2"]
    assert all(len(data["runs"][i]["iterations"]) == 1 for i in data["roots"])


def test_secrets_nan_and_giant_text(tmp_path: Path) -> None:
    giant = "a" * (FULL_TEXT_CAP + 10) + "TAIL"
    trajectory = {
        "run_metadata": {"root_model": "m", "backend_kwargs": {"api_key": "sk-secret-123"}},
        "iterations": [
            {
                "response": "r",
                "iteration_time": math.nan,
                "code_blocks": [{"code": "", "result": {"stdout": giant}}],
            }
        ],
    }
    page = render_html(trajectory)
    assert "sk-secret-123" not in page
    data = page_data(page)  # strict JSON: NaN never reaches the page
    stdout = data["iters"][0]["blocks"][0]["stdout"]
    assert data["iters"][0]["time"] is None
    assert stdout.endswith("TAIL") and "characters not included in this page" in stdout
    assert len(stdout) < FULL_TEXT_CAP + 100


def test_big_log_renders_compactly(tmp_path: Path) -> None:
    path = write_big_log(tmp_path / "big.jsonl")  # speed: benchmarks/, not asserts
    page = render_html(path)
    data = page_data(page)
    assert len(data["iters"]) == 2000 and data["summary"]["errors"] == 2000 // 7
    assert len(page) < 2 * path.stat().st_size


# -- writing --------------------------------------------------------------------------------


def test_write_html_paths(tmp_path: Path, real_log: Path) -> None:
    out = write_html(real_log, tmp_path / "nested" / "view.html")
    assert out == tmp_path / "nested" / "view.html" and out.read_text().startswith("<!doctype")
    assert default_output_path(real_log) == real_log.with_name(real_log.name + ".html")
    copy = tmp_path / "run.jsonl"
    copy.write_text(real_log.read_text())
    assert write_html(copy) == tmp_path / "run.jsonl.html"
    with pytest.raises(ValueError, match="out_path"):
        write_html({"run_metadata": {}, "iterations": []})


def test_empty_trajectory_still_renders() -> None:
    data = page_data(render_html({"run_metadata": None, "iterations": []}))
    assert data["runs"] == [] and data["roots"] == []
    completion = RLMChatCompletion.from_dict({"root_model": "m", "response": "hi"})
    assert page_data(render_html(completion))["summary"]["answer"] == "hi"


def test_public_names() -> None:
    assert rlm.viewer.__all__ == ["default_output_path", "render_html", "write_html"]
