"""Record and replay (``RLM(record=...)``, ``RLM(replay=...)``, ``rlm.testing``).

Runs are recorded against a real HTTP server on loopback (``loopback_model``) through
the ``openai`` client; the server is closed before each replay, so a replay that sent
anything would fail. The llama.cpp end-to-end test is ``tests/clients/test_replay_llama.py``.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
from pathlib import Path

import pytest
from loopback_model import loopback_model
from replay_support import ROOT_Q, file_reply, record, tree_reply

from rlm import RLM
from rlm.base.errors import ConfigurationError
from rlm.logger import RLMLogger
from rlm.logger.replay_log import RecordingError, load_recording
from rlm.logger.trajectory import load_trajectory
from rlm.testing import ReplayDivergedError, assert_replays, replay_run

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("openai") is None, reason="needs the openai package"
)


def replayer(log: str, **kwargs: object) -> RLM:
    # A backend that could not be reached anyway: the replay must not need it.
    return RLM(
        backend="openai",
        backend_kwargs={"model_name": "m", "base_url": "http://127.0.0.1:9/v1", "api_key": "x"},
        replay=log,
        max_iterations=4,
        **kwargs,  # type: ignore[arg-type]
    )


def test_a_recorded_run_replays_offline_identically(tmp_path: Path) -> None:
    path = tmp_path / "data.txt"
    path.write_text("alpha")
    with loopback_model(file_reply(path, subcall=True)) as server:
        log, result = record(server, tmp_path / "logs")
        calls = server.calls
    assert result.response == "the answer is 42"
    # server closed: the replay has no model to reach
    with replayer(log) as rlm:
        again = rlm.completion("the context", root_prompt=ROOT_Q)
        report = rlm.replay_report()
    assert again.response == result.response
    assert report.identical, report.summary()
    assert report.calls_recorded == report.calls_answered == calls == 3
    assert report.answers == [("the answer is 42", "the answer is 42")]
    # the recorded usage is the replay's usage
    usage = again.usage_summary.model_usage_summaries["m"]
    assert (usage.total_calls, usage.total_input_tokens) == (3, 90)


def test_the_recording_keeps_old_readers_working_and_holds_no_secret(tmp_path: Path) -> None:
    path = tmp_path / "data.txt"
    path.write_text("alpha")
    with loopback_model(file_reply(path)) as server:
        log, _ = record(server, tmp_path / "logs", context="token=hunter2-very-secret")
    text = Path(log).read_text()
    assert "sk-test-secret-123" not in text  # the API key: nowhere in the log
    recorded = [line for line in text.splitlines() if '"type": "recorded_' in line]
    assert recorded and not any("hunter2-very-secret" in line for line in recorded)
    assert any("token=***" in line for line in recorded)  # the context, redacted
    kinds = {json.loads(line)["type"] for line in text.splitlines()}
    assert {"recorded_call", "recorded_cell", "recorded_input", "recorded_run"} <= kinds
    trajectory = load_trajectory(log)  # the reader of rlms-era tools
    assert trajectory["run_metadata"] is not None and len(trajectory["iterations"]) == 2
    from rlm.viewer import write_html

    page = write_html(Path(log), str(tmp_path / "page.html"))
    assert "the answer is 42" in Path(page).read_text()
    recording = load_recording(log)
    call = recording.calls[0]
    assert call["request"]["purpose"] == "iteration" and call["request"]["model"] == "m"
    assert call["response"]["usage"]["total_input_tokens"] == 30
    assert isinstance(call["duration"], float)
    cell = next(r for r in recording.runs.values()).cells[0]
    assert cell.stdout == "alpha\n" and cell.key == (1, 0)


def test_an_environment_change_is_reported_at_its_cell(tmp_path: Path) -> None:
    path = tmp_path / "data.txt"
    path.write_text("alpha")
    with loopback_model(file_reply(path)) as server:
        log, _ = record(server, tmp_path / "logs")
    path.write_text("beta")  # the same replies now meet another file
    with replayer(log) as rlm:
        result = rlm.completion("the context", root_prompt=ROOT_Q)
        report = rlm.replay_report()
    assert result.response == "the answer is 42"  # answered from the recording anyway
    assert not report.identical
    first = report.divergences[0]
    assert first.kind == "cell_output"
    assert first.where == "completion 1, iteration 1, cell 1"
    assert (first.recorded, first.new) == ("alpha\n", "beta\n")
    kinds = [d.kind for d in report.divergences]
    assert kinds == ["cell_output", "request_differs"]  # the next request shows "beta"
    assert "beta" in str(report.divergences[1].new)
    assert "alpha" in str(report.divergences[1].recorded)


def test_a_call_not_in_the_recording_is_reported_with_its_request(tmp_path: Path) -> None:
    path = tmp_path / "data.txt"
    path.write_text("alpha")
    with loopback_model(file_reply(path, subcall=True)) as server:
        log, _ = record(server, tmp_path / "logs")
    path.write_text("a prompt never recorded")
    report = replay_run(log)
    by_kind = {d.kind: d for d in report.divergences}
    missing = by_kind["unrecorded_call"]
    assert missing.new == "a prompt never recorded"
    assert "subcall call to 'm'" in missing.where
    assert by_kind["unused_call"].recorded == "alpha"  # the one it replaced
    assert by_kind["cell_output"].where == "completion 1, iteration 1, cell 1"
    assert "no recorded subcall call" in str(by_kind["cell_output"].new)
    with pytest.raises(ReplayDivergedError) as failed:
        assert_replays(log)
    assert "unrecorded_call" in str(failed.value)


def test_an_edited_reply_is_reported_as_other_code(tmp_path: Path) -> None:
    path = tmp_path / "data.txt"
    path.write_text("alpha")
    with loopback_model(file_reply(path)) as server:
        log, _ = record(server, tmp_path / "logs")
    assert_replays(log)  # untouched: identical
    lines = Path(log).read_text().splitlines()
    for n, line in enumerate(lines):
        entry = json.loads(line)
        if entry["type"] == "recorded_call":
            entry["response"]["text"] = entry["response"]["text"].replace("6 * 7", "6 * 8")
            lines[n] = json.dumps(entry)
            break
    Path(log).write_text("\n".join(lines) + "\n")
    report = replay_run(log)
    first = report.divergences[0]
    assert (first.kind, first.where) == ("cell_code", "completion 1, iteration 1, cell 1")
    assert "6 * 7" in first.recorded and "6 * 8" in first.new


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_depth_2_tree_with_a_batch_replays(tmp_path: Path, mode: str) -> None:
    with loopback_model(tree_reply) as server:
        log, result = record(server, tmp_path / "logs", max_depth=2)
        calls = server.calls
    assert result.response == "reply to p1 | reply to p2 | reply to p3"
    assert calls == 7  # root 2, child 2, batch 3
    recording = load_recording(log)
    assert sorted(r.depth for r in recording.runs.values()) == [0, 1]
    with replayer(log, max_depth=2) as rlm:
        if mode == "sync":
            again = rlm.completion("the context", root_prompt=ROOT_Q)
        else:
            again = asyncio.run(rlm.acompletion("the context", root_prompt=ROOT_Q))
        report = rlm.replay_report()
    assert again.response == result.response
    assert report.identical, report.summary()
    assert report.calls_answered == 7


def test_a_child_divergence_names_the_child(tmp_path: Path) -> None:
    with loopback_model(tree_reply) as server:
        log, _ = record(server, tmp_path / "logs", max_depth=2)
    lines = Path(log).read_text().splitlines()
    for n, line in enumerate(lines):  # one batched reply changes
        entry = json.loads(line)
        if entry["type"] == "recorded_call" and entry["request"].get("prompt") == "p2":
            entry["response"]["text"] = "something else"
            lines[n] = json.dumps(entry)
    Path(log).write_text("\n".join(lines) + "\n")
    report = replay_run(log)
    first = report.divergences[0]
    assert first.kind == "cell_output"
    assert first.where.startswith("completion 1 > rlm_query 'child: ask the parts'")
    assert first.where.endswith("(depth 1), iteration 1, cell 1")
    assert "something else" in first.new and "reply to p2" in first.recorded


def test_bad_arguments_and_a_malformed_log_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="record=True records into the run log"):
        RLM(backend="openai", record=True)
    with pytest.raises(ConfigurationError, match="cannot be combined"):
        RLM(backend="openai", record=str(tmp_path), replay=str(tmp_path / "x.jsonl"))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"type": "metadata"}\nnot json\n{"type": "iteration"}\n')
    with pytest.raises(ConfigurationError, match=r"bad.jsonl:2: not a JSON line"):
        RLM(backend="openai", replay=str(bad))
    plain = tmp_path / "plain.jsonl"
    plain.write_text('{"type": "metadata"}\n{"type": "iteration"}\n')
    with pytest.raises(RecordingError, match="not a recorded run"):
        replay_run(plain)
    with pytest.raises(ConfigurationError, match="no such file"):
        RLM(backend="openai", replay=str(tmp_path / "missing.jsonl"))
    with pytest.raises(ConfigurationError, match="needs an RLM made with replay"):
        RLM(backend="openai").replay_report()


def test_record_to_a_folder_makes_the_logger(tmp_path: Path) -> None:
    path = tmp_path / "data.txt"
    path.write_text("alpha")
    with loopback_model(file_reply(path)) as server:
        rlm = RLM(
            backend="openai",
            backend_kwargs={"model_name": "m", "base_url": server.url, "api_key": "k"},
            record=str(tmp_path / "rec"),
        )
        rlm.completion("ctx")
        rlm.close()
    assert isinstance(rlm.logger, RLMLogger) and rlm.logger.log_file_path
    assert assert_replays(rlm.logger.log_file_path).calls_answered == 2
