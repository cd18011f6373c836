"""RLMLogger: JSONL format, in-memory trajectory, secrets, threads, event bus, reload."""

from __future__ import annotations

import gc
import hashlib
import json
import os
import re
import threading
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

import rlm.logger.rlm_logger as rlm_logger_module
from rlm.base.events import EventBus, RunScope
from rlm.base.redact import filter_sensitive_keys
from rlm.base.types import (
    CodeBlock,
    ModelUsageSummary,
    REPLResult,
    RLMChatCompletion,
    RLMIteration,
    RLMMetadata,
    UsageSummary,
)
from rlm.logger import RLMLogger, load_trajectory

META_KEYS = {
    "root_model",
    "max_depth",
    "max_iterations",
    "backend",
    "backend_kwargs",
    "environment_type",
    "environment_kwargs",
    "other_backends",
}
ITER_KEYS = {"prompt", "response", "code_blocks", "final_answer", "iteration_time"}


def make_metadata(**backend_kwargs: Any) -> RLMMetadata:
    return RLMMetadata(
        root_model="test-model",
        max_depth=2,
        max_iterations=10,
        backend="openai",
        backend_kwargs={"model_name": "test-model", **backend_kwargs},
        environment_type="local",
        environment_kwargs={},
        other_backends=["anthropic"],
    )


def make_iteration(n: int = 0, final: str | None = None) -> RLMIteration:
    usage = UsageSummary({"sub": ModelUsageSummary(1, 10, 5)})
    call = RLMChatCompletion("sub", "q", "a", usage, 0.1)
    result = REPLResult(f"out {n}\n", "", {"x": n, "f": len}, 0.01, [call])
    return RLMIteration(
        prompt=[{"role": "user", "content": f"turn {n}"}],
        response=f"reply {n}\n```repl\nx = {n}\n```",
        code_blocks=[CodeBlock(f"x = {n}", result)],
        final_answer=final,
        iteration_time=0.5,
    )


def sha(value: Any) -> str:
    return hashlib.sha256(json.dumps(value).encode()).hexdigest()


def read_lines(path: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


# -- file format ------------------------------------------------------------------


def test_file_name_and_directory_created(tmp_path: Path) -> None:
    log_dir = tmp_path / "nested" / "logs"
    logger = RLMLogger(log_dir=str(log_dir), file_name="myrun")
    assert logger.log_dir == str(log_dir)
    assert log_dir.is_dir()
    assert logger.log_file_path is not None
    name = os.path.basename(logger.log_file_path)
    assert re.fullmatch(r"myrun_\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d_[0-9a-f]{8}\.jsonl", name)
    assert os.path.dirname(logger.log_file_path) == str(log_dir)


def test_jsonl_format_matches_reference_layout(tmp_path: Path) -> None:
    logger = RLMLogger(log_dir=str(tmp_path))
    metadata = make_metadata()
    logger.log_metadata(metadata)
    iterations = [make_iteration(i) for i in range(3)]
    for it in iterations:
        logger.log(it)
    logger.close()

    assert logger.log_file_path is not None
    lines = read_lines(logger.log_file_path)
    assert len(lines) == 4

    first = lines[0]
    assert first["type"] == "metadata"
    assert list(first)[:2] == ["type", "timestamp"]
    datetime.fromisoformat(first["timestamp"])
    assert set(first) == {"type", "timestamp", "log_version"} | META_KEYS
    assert {k: first[k] for k in META_KEYS} == metadata.to_dict()
    assert first["log_version"] == 2

    for n, (line, it) in enumerate(zip(lines[1:], iterations, strict=True), start=1):
        assert list(line)[:3] == ["type", "iteration", "timestamp"]
        assert line["type"] == "iteration"
        assert line["iteration"] == n
        datetime.fromisoformat(line["timestamp"])
        # no tree keys unless they are known
        assert set(line) == {"type", "iteration", "timestamp"} | ITER_KEYS
        # The reference layout, except that each variable is a summary, not its value.
        expected = json.loads(json.dumps(it.to_dict()))
        for block in expected["code_blocks"]:
            block["result"]["locals"] = {
                "x": {"type": "int", "preview": str(n - 1), "sha256": sha(n - 1)},
                "f": {"type": "builtin_function_or_method", "preview": "<built-in function len>",
                      "sha256": sha("<builtin_function_or_method 'len'>")},
            }  # fmt: skip
        assert {k: line[k] for k in ITER_KEYS} == expected


def test_tree_keys_are_added_when_known(tmp_path: Path) -> None:
    logger = RLMLogger(log_dir=str(tmp_path))
    logger.log(make_iteration(), depth=1, run_id="child", parent_id="root")
    logger.log(make_iteration(), depth=0, run_id="root")
    assert logger.log_file_path is not None
    child, root = read_lines(logger.log_file_path)
    assert (child["depth"], child["run_id"], child["parent_id"]) == (1, "child", "root")
    assert root["depth"] == 0 and root["run_id"] == "root" and "parent_id" not in root


def test_no_log_dir_means_memory_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    logger = RLMLogger()
    assert logger.log_dir is None and logger.log_file_path is None
    logger.log_metadata(make_metadata())
    logger.log(make_iteration())
    assert list(tmp_path.iterdir()) == []
    assert logger.iteration_count == 1


# -- in-memory trajectory ---------------------------------------------------------------


def test_trajectory_in_memory() -> None:
    logger = RLMLogger()
    assert logger.get_trajectory() is None
    logger.log(make_iteration(0))
    assert logger.get_trajectory() is None  # still no metadata

    metadata = make_metadata()
    logger.log_metadata(metadata)
    logger.log(make_iteration(1, final="done"))
    traj = logger.get_trajectory()
    assert traj is not None
    assert set(traj) == {"run_metadata", "iterations"}
    assert traj["run_metadata"] == metadata.to_dict()
    assert [e["iteration"] for e in traj["iterations"]] == [1, 2]
    assert traj["iterations"][1]["final_answer"] == "done"
    assert traj["iterations"][1]["type"] == "iteration"

    traj["iterations"].clear()  # a copy: the logger is unaffected
    trajectory = logger.get_trajectory()
    assert trajectory is not None and len(trajectory["iterations"]) == 2


def test_only_first_metadata_counts(tmp_path: Path) -> None:
    logger = RLMLogger(log_dir=str(tmp_path))
    logger.log_metadata(make_metadata())
    other = make_metadata()
    other.root_model = "other-model"
    logger.log_metadata(other)
    traj = logger.get_trajectory()
    assert traj is not None and traj["run_metadata"]["root_model"] == "test-model"
    assert logger.log_file_path is not None
    assert [line["type"] for line in read_lines(logger.log_file_path)] == ["metadata"]


def test_clear_iterations_restarts_numbering(tmp_path: Path) -> None:
    logger = RLMLogger(log_dir=str(tmp_path))
    logger.log_metadata(make_metadata())
    logger.log(make_iteration(0))
    logger.log(make_iteration(1))
    assert logger.iteration_count == 2

    logger.clear_iterations()
    assert logger.iteration_count == 0
    traj = logger.get_trajectory()
    assert traj is not None and traj["iterations"] == []
    assert traj["run_metadata"]["root_model"] == "test-model"  # metadata survives

    logger.log(make_iteration(2))
    traj = logger.get_trajectory()
    assert traj is not None and [e["iteration"] for e in traj["iterations"]] == [1]
    assert logger.log_file_path is not None
    numbers = [line.get("iteration") for line in read_lines(logger.log_file_path)]
    assert numbers == [None, 1, 2, 1]  # the file keeps every completion


# -- secrets ------------------------------------------------------------------------------


def test_secrets_never_reach_the_file(tmp_path: Path) -> None:
    secrets = ["sk-SECRET-1", "Bearer SECRET-2", "hf_SECRET-3", "SECRET-4", "SECRET-5", "SECRET-6"]
    metadata = make_metadata(
        api_key=secrets[0],
        default_headers={"Authorization": secrets[1], "X-Trace": "keep-me"},
        max_tokens=256,
        tokenizer="bpe",
    )
    metadata.environment_kwargs = {
        "HF_TOKEN": secrets[2],
        "db_password": secrets[3],
        "clientSecret": secrets[4],
        "OpenAIApiKey": secrets[5],
        "setup_code": "x = 1",
    }
    logger = RLMLogger(log_dir=str(tmp_path))
    logger.log_metadata(metadata)
    logger.close()

    assert logger.log_file_path is not None
    text = Path(logger.log_file_path).read_text()
    for secret in secrets:
        assert secret not in text
    assert "SECRET" not in text

    first = read_lines(logger.log_file_path)[0]
    assert first["backend_kwargs"] == {
        "model_name": "test-model",
        "default_headers": {"X-Trace": "keep-me"},
        "max_tokens": 256,
        "tokenizer": "bpe",
    }
    assert first["environment_kwargs"] == {"setup_code": "x = 1"}
    traj = logger.get_trajectory()
    assert traj is not None and "SECRET" not in json.dumps(traj)
    # the caller's metadata object is left untouched
    assert metadata.backend_kwargs["api_key"] == secrets[0]


@pytest.mark.parametrize(
    "key",
    [
        "api_key",
        "API_KEY",
        "openai_api_key",
        "apiKey",
        "x-api-key",
        "access_token",
        "token",
        "authToken",
        "hftoken",
        "client_secret",
        "password",
        "Authorization",
    ],
)
def test_filter_sensitive_keys_drops(key: str) -> None:
    assert filter_sensitive_keys({key: "v", "model_name": "m"}) == {"model_name": "m"}


@pytest.mark.parametrize("key", ["model_name", "max_tokens", "tokenizer", "base_url", "keys"])
def test_filter_sensitive_keys_keeps(key: str) -> None:
    assert filter_sensitive_keys({key: "v"}) == {key: "v"}


# -- file handle and threads ----------------------------------------------------------


def test_file_is_opened_once_and_closed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[Any] = []

    def counting_open(*args: Any, **kwargs: Any) -> Any:
        handle = open(*args, **kwargs)  # noqa: SIM115
        opened.append(handle)
        return handle

    monkeypatch.setattr(rlm_logger_module, "open", counting_open, raising=False)
    logger = RLMLogger(log_dir=str(tmp_path))
    logger.log_metadata(make_metadata())
    for i in range(5):
        logger.log(make_iteration(i))
    assert len(opened) == 1
    assert opened[0].mode == "a"
    assert not opened[0].closed

    logger.close()
    assert opened[0].closed
    logger.log(make_iteration(9))  # reopens in append mode
    assert len(opened) == 2
    assert logger.log_file_path is not None
    assert len(read_lines(logger.log_file_path)) == 7

    handle = opened[1]
    del logger
    gc.collect()
    assert handle.closed


def test_lines_are_flushed_without_close(tmp_path: Path) -> None:
    logger = RLMLogger(log_dir=str(tmp_path))
    logger.log_metadata(make_metadata())
    logger.log(make_iteration())
    assert logger.log_file_path is not None
    assert len(read_lines(logger.log_file_path)) == 2
    logger.close()


def test_concurrent_logging_is_well_formed(tmp_path: Path) -> None:
    logger = RLMLogger(log_dir=str(tmp_path))
    logger.log_metadata(make_metadata())
    barrier = threading.Barrier(8)

    def worker(t: int) -> None:
        barrier.wait()
        for i in range(50):
            logger.log(make_iteration(t * 100 + i), depth=1, run_id=f"t{t}")

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    logger.close()

    assert logger.log_file_path is not None
    lines = read_lines(logger.log_file_path)  # json.loads fails on any torn line
    assert lines[0]["type"] == "metadata"
    body = lines[1:]
    assert len(body) == 400
    assert [e["iteration"] for e in body] == list(range(1, 401))  # file order = numbering
    assert all(set(e) >= ITER_KEYS for e in body)
    per_thread = {f"t{t}": 0 for t in range(8)}
    for e in body:
        per_thread[e["run_id"]] += 1
    assert set(per_thread.values()) == {50}
    assert logger.iteration_count == 400
    traj = logger.get_trajectory()
    assert traj is not None and len(traj["iterations"]) == 400


# -- event bus ---------------------------------------------------------------------------


def drive_run(scope: RunScope, metadata: RLMMetadata, n: int) -> list[RLMIteration]:
    scope.emit(
        "run_started", prompt_preview="p", root_prompt=None, metadata=metadata, context_count=1
    )
    made = []
    for i in range(1, n + 1):
        it = make_iteration(i)
        made.append(it)
        scope.emit("iteration_started", iteration=i)
        scope.emit("iteration_finished", iteration=i, iteration_obj=it, duration=0.1)
    return made


@pytest.mark.filterwarnings("error")  # a raising subscriber would only warn otherwise
def test_attach_logs_from_real_events(tmp_path: Path) -> None:
    bus = EventBus()
    logger = RLMLogger(log_dir=str(tmp_path))
    unsubscribe = logger.attach(bus)
    root = RunScope(bus, run_id="run-root", session_id="s1", turn=1)
    child = RunScope(bus, run_id="run-child", parent_id="run-root", depth=1)

    metadata = make_metadata(api_key="sk-HIDDEN")
    drive_run(root, metadata, 2)
    root.emit("subcall_started", kind="rlm", model="m", prompt_preview="q", count=1)
    drive_run(child, make_metadata(), 1)  # second run_started: ignored (first counts)
    root.emit("subcall_finished", kind="rlm", model="m", duration=0.2, usage=None, error=None)
    root.emit("final_answer", answer="42", iterations=2, source="FINAL")

    traj = logger.get_trajectory()
    assert traj is not None
    assert "api_key" not in traj["run_metadata"]["backend_kwargs"]
    got = [
        (e["iteration"], e["run_id"], e["depth"], e.get("parent_id")) for e in traj["iterations"]
    ]
    assert got == [
        (1, "run-root", 0, None),
        (2, "run-root", 0, None),
        (3, "run-child", 1, "run-root"),
    ]

    unsubscribe()
    root.emit("iteration_finished", iteration=3, iteration_obj=make_iteration(), duration=0.1)
    assert logger.iteration_count == 3
    assert logger.log_file_path is not None
    assert "sk-HIDDEN" not in Path(logger.log_file_path).read_text()
    kinds = [line["type"] for line in read_lines(logger.log_file_path)]
    assert kinds == [
        "metadata",
        "run_started",
        "iteration",
        "iteration",
        "run_started",
        "iteration",
    ]


@pytest.mark.filterwarnings("error")
def test_attach_with_run_id_filter_gives_children_their_own_logger() -> None:
    bus = EventBus()
    root_logger, child_logger = RLMLogger(), RLMLogger()
    root_logger.attach(bus, run_id_filter="root")
    child_logger.attach(bus, run_id_filter="child")
    root = RunScope(bus, run_id="root")
    child = RunScope(bus, run_id="child", parent_id="root", depth=1)

    root_meta = make_metadata()
    child_meta = make_metadata()
    child_meta.root_model = "child-model"
    drive_run(root, root_meta, 1)
    drive_run(child, child_meta, 3)
    root.emit("iteration_finished", iteration=2, iteration_obj=make_iteration(), duration=0.1)

    root_traj, child_traj = root_logger.get_trajectory(), child_logger.get_trajectory()
    assert root_traj is not None and child_traj is not None
    assert root_traj["run_metadata"]["root_model"] == "test-model"
    assert child_traj["run_metadata"]["root_model"] == "child-model"
    assert [e["run_id"] for e in root_traj["iterations"]] == ["root", "root"]
    assert [e["iteration"] for e in child_traj["iterations"]] == [1, 2, 3]
    assert {e["parent_id"] for e in child_traj["iterations"]} == {"root"}


# -- load_trajectory -----------------------------------------------------------------------


def test_load_trajectory_roundtrip(tmp_path: Path) -> None:
    logger = RLMLogger(log_dir=str(tmp_path))
    logger.log_metadata(make_metadata(api_key="sk-x"))
    logger.log(make_iteration(1))
    logger.log(make_iteration(2, final="ok"), depth=0, run_id="r")
    logger.close()

    assert logger.log_file_path is not None
    loaded = load_trajectory(logger.log_file_path)
    expected = json.loads(json.dumps(logger.get_trajectory()))
    assert loaded == expected
    assert load_trajectory(Path(logger.log_file_path)) == expected  # PathLike works too
    restored = RLMIteration.from_dict(loaded["iterations"][1])
    assert restored.final_answer == "ok"
    assert restored.code_blocks[0].result.stdout == "out 2\n"


def test_load_trajectory_tolerates_truncated_last_line(tmp_path: Path) -> None:
    logger = RLMLogger(log_dir=str(tmp_path))
    logger.log_metadata(make_metadata())
    logger.log(make_iteration(1))
    logger.log(make_iteration(2))
    logger.close()
    assert logger.log_file_path is not None
    path = Path(logger.log_file_path)
    full = path.read_text()
    last_start = full.rstrip("\n").rfind("\n") + 1
    path.write_text(full[: last_start + 40])  # the process died mid-write

    loaded = load_trajectory(path)
    assert loaded["run_metadata"]["root_model"] == "test-model"
    assert [e["iteration"] for e in loaded["iterations"]] == [1]


def test_load_trajectory_rejects_corruption_mid_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"type": "metadata", "root_model": "m"}\n{not json\n{"type": "iteration"}\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl:2"):
        load_trajectory(path)


def test_load_trajectory_without_metadata(tmp_path: Path) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_text("")
    assert load_trajectory(path) == {"run_metadata": None, "iterations": []}
