"""``rlm replay LOG``: a real subprocess replays a run recorded against a loopback
server (closed by then); its output and exit code say whether the run diverged."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
from cli_support import rlm

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "core"))
from loopback_model import loopback_model
from replay_support import file_reply, record

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("openai") is None, reason="needs the openai package"
)


@pytest.fixture
def recorded(tmp_path: Path) -> tuple[Path, Path]:
    data = tmp_path / "data.txt"
    data.write_text("alpha")
    with loopback_model(file_reply(data)) as server:
        log, _ = record(server, tmp_path / "logs")
    return Path(log), data


def test_an_identical_replay_exits_0(recorded: tuple[Path, Path], tmp_path: Path) -> None:
    log, _ = recorded
    done = rlm("replay", str(log), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "completion 1: the answer is 42" in done.stdout
    assert "2 of 2 recorded model calls replayed; identical" in done.stdout
    folder = rlm("replay", str(log.parent), "--json", cwd=tmp_path)  # its newest log
    assert folder.returncode == 0, folder.stderr
    report = json.loads(folder.stdout)
    assert report["identical"] is True and report["calls_answered"] == 2


def test_a_divergence_exits_1_and_names_the_cell(
    recorded: tuple[Path, Path], tmp_path: Path
) -> None:
    log, data = recorded
    data.write_text("beta")
    done = rlm("replay", str(log), cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    assert "2 divergence(s)" in done.stdout
    assert "- cell_output at completion 1, iteration 1, cell 1" in done.stdout
    assert "recorded: 'alpha\\n'" in done.stdout and "new:      'beta\\n'" in done.stdout
    as_json = json.loads(rlm("replay", str(log), "--json", cwd=tmp_path).stdout)
    assert as_json["divergences"][0]["kind"] == "cell_output"


def test_a_log_that_is_not_a_recording_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{not json\n{}\n")
    done = rlm("replay", str(bad), cwd=tmp_path)
    assert done.returncode == 2
    assert "rlm: error:" in done.stderr and "bad.jsonl:1: not a JSON line" in done.stderr
    plain = tmp_path / "plain.jsonl"
    plain.write_text('{"type": "metadata"}\n')
    done = rlm("replay", str(plain), cwd=tmp_path)
    assert done.returncode == 2 and "not a recorded run" in done.stderr
    assert "Traceback" not in done.stderr
    assert rlm("replay", str(tmp_path / "none.jsonl"), cwd=tmp_path).returncode == 2


def test_the_report_reads_line_by_line_and_says_where_the_code_runs(
    recorded: tuple[Path, Path], tmp_path: Path
) -> None:
    log, data = recorded
    data.write_text("beta")
    done = rlm("replay", str(log), cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    assert "\\x0a" not in done.stdout  # line breaks are line breaks, not escapes
    assert "\n- cell_output at completion 1, iteration 1, cell 1" in done.stdout
    assert "the recorded code runs again in the 'local' environment" in done.stderr
    data.write_text("alpha")
    elsewhere = rlm("replay", str(log), "--env", "ipython", cwd=tmp_path)
    assert "runs again in the 'ipython' environment" in elsewhere.stderr
    assert elsewhere.returncode == 0, elsewhere.stderr
