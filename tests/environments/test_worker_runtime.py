"""The worker runtime's parts, tested directly: frames, payloads, output cap,
snapshots, the host-side store, tools, packaging and the stdlib-only promise."""

from __future__ import annotations

import glob
import io
import os
import pickle
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from rlm.environments.host.client import ChunkReader, WorkerClient, describe_status
from rlm.environments.host.state import WorkerState
from rlm.environments.host.tools import looks_like_source, split_tools
from rlm.environments.transports.process import SubprocessTransport
from rlm.environments.transports.zipapp import bootstrap_argv, build_zipapp
from rlm.environments.worker.capture import CappedText
from rlm.environments.worker.payloads import read_value, send_value
from rlm.environments.worker.protocol import HEADER, Channel, ChannelClosed, ProtocolError
from rlm.environments.worker.repl import WorkerRepl
from rlm.environments.worker.snapshot import RECHECK_BYTES, Snapshotter

# -- frames and payloads ---------------------------------------------------------------------


@pytest.fixture
def pipe() -> Iterator[tuple[Channel, Channel]]:
    """(sender, receiver) channels over one OS pipe."""
    r, w = os.pipe()
    reader, writer = os.fdopen(r, "rb"), os.fdopen(w, "wb", buffering=0)
    yield Channel(io.BytesIO(), writer), Channel(reader, io.BytesIO())
    reader.close()
    writer.close()


def roundtrip(pipe: tuple[Channel, Channel], value: Any) -> Any:
    sender, receiver = pipe
    out: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: out.update(v=read_value(receiver, receiver.recv())))
    thread.start()
    send_value(sender, {"op": "set"}, value)
    thread.join(30)
    return out["v"]


def test_messages_and_streams(pipe: tuple[Channel, Channel]) -> None:
    sender, receiver = pipe
    sender.send({"op": "x", "text": "caf\u00e9 \ud800"})  # a lone surrogate survives
    assert receiver.recv() == {"op": "x", "text": "caf\u00e9 \ud800"}
    sender.send_chunks({"op": "y"}, [b"ab", b"", b"cd" * 10])
    assert receiver.recv()["stream"] is True
    assert receiver.read_stream() == b"ab" + b"cd" * 10


@pytest.mark.parametrize(
    "value",
    [
        "x" * (3 << 20),  # large ASCII: built in place in the receiver
        "short ascii",
        "na\u00efve \U0001f600 " * 1000 + "\udcff",
        b"\x00\xff" * 100_000,
        {1: ("tuple", None), "nested": [{"a": 1.5}]},
    ],
    ids=["ascii-large", "ascii-small", "utf8", "bytes", "pickle"],
)
def test_payload_kinds_roundtrip(pipe: tuple[Channel, Channel], value: Any) -> None:
    got = roundtrip(pipe, value)
    assert got == value and type(got) is type(value)
    if isinstance(value, str):
        assert hash(got) == hash(value) and got[-5:] == value[-5:]


def test_unpicklable_payload_fails_before_sending(pipe: tuple[Channel, Channel]) -> None:
    with pytest.raises(TypeError, match="cannot send a lock"):
        send_value(pipe[0], {"op": "set"}, threading.Lock())


def test_garbage_and_oversized_frames_are_protocol_errors() -> None:
    with pytest.raises(ProtocolError, match="unknown frame type"):
        Channel(io.BytesIO(b"\xff" * 16), io.BytesIO()).recv()
    huge = HEADER.pack(b"J", 2**31)
    with pytest.raises(ProtocolError, match="exceeds"):
        Channel(io.BytesIO(huge), io.BytesIO()).recv()
    with pytest.raises(ChannelClosed):
        Channel(io.BytesIO(HEADER.pack(b"J", 10) + b"{}"), io.BytesIO()).recv()
    with pytest.raises(ProtocolError, match="JSON object"):
        Channel(io.BytesIO(HEADER.pack(b"J", 2) + b"[]"), io.BytesIO()).recv()


def test_capped_text_keeps_head_and_tail() -> None:
    text = CappedText(30)
    for i in range(100):
        text.write(f"{i:03d}\n")
    value = text.getvalue()
    assert value.startswith("000\n001\n002\n003\n004\n\n... [370 characters")
    assert value.endswith("...\n7\n098\n099\n")
    assert "characters of output truncated" in value
    assert text.tell() == 400
    small = CappedText(100)
    small.write("hello")
    assert small.getvalue() == "hello"
    single = CappedText(10)
    single.write("a" * 1000)
    assert single.getvalue().startswith("aaaaaa\n... [990 characters")


# -- snapshots (in this process) ------------------------------------------------------------


@pytest.fixture
def repl(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> WorkerRepl:
    """A WorkerRepl here; it takes over ``__main__`` and the std streams, so both are
    given back afterwards."""
    monkeypatch.setitem(sys.modules, "__main__", sys.modules["__main__"])
    monkeypatch.setattr(sys, "stdout", sys.stdout)
    monkeypatch.setattr(sys, "stderr", sys.stderr)
    return WorkerRepl(lambda op, prompts, model: ["r"] * len(prompts), 10_000, str(tmp_path), False)


def names(entries: Sequence[tuple[dict[str, Any], Any]]) -> dict[str, str]:
    return {meta["name"]: meta["kind"] for meta, _ in entries}


def test_snapshot_deltas(repl: WorkerRepl) -> None:
    snaps = Snapshotter(repl, 1 << 20)
    repl.inputs.add_context("ctx")
    repl.inputs.bind(repl.globals)
    code = "import json\nsmall = [1]\nbig = list(range(100_000))\ndef f():\n    return small\ng = lambda: 1\n"
    assert repl.execute(code, 1)["stderr"] == ""
    entries, deleted, unsaved = snaps.collect()
    assert (
        names(entries)
        == {
            "answer": "pickle",
            "json": "module",
            "small": "pickle",
            "big": "pickle",
            "f": "source",
            "g": "cloudpickle" if snaps.extra_name == "cloudpickle" else "dill",
        }
        or snaps.extra is None
    )
    assert deleted == [] and unsaved == {}
    assert snaps.collect() == ([], [], {})  # nothing changed
    repl.execute("small.append(2)\nbig[5] = -1\ndel g\nlock = __import__('threading').Lock()", 2)
    entries, deleted, unsaved = snaps.collect()
    # The small list is re-checked and resent; the large one kept its length and
    # identity, so its in-place edit is not seen (the documented trade-off).
    assert names(entries) == {"small": "pickle"}
    assert deleted == ["g"] and list(unsaved) == ["lock"]
    full, _, _ = snaps.collect(full=True)
    assert "big" in names(full) and len(pickle.dumps(list(range(100_000)))) > RECHECK_BYTES


def test_snapshot_restore_into_a_fresh_namespace(repl: WorkerRepl, tmp_path: Path) -> None:
    snaps = Snapshotter(repl, 1 << 20)
    code = (
        "import math\nscale = 3\n@staticmethod\ndef unused():\n    pass\n"
        "def area(r):\n    return math.pi * r * r * scale\n"
        "class Box:\n    def __init__(self, w):\n        self.w = w\n"
        "boxes = [Box(1), Box(2)]\nalso = area\n"
    )
    assert repl.execute(code, 4)["stderr"] == ""
    entries, _, _ = snaps.collect()
    fresh = WorkerRepl(lambda *a: [], 10_000, str(tmp_path), False)
    failed = Snapshotter(fresh, 1 << 20).restore(entries)
    assert failed == {}
    result = fresh.execute(
        "scale = 1\nprint(round(area(1), 3), [b.w for b in boxes], also is area)", 5
    )
    assert result["stdout"] == "3.142 [1, 2] True\n"  # area sees the namespace's scale
    error = fresh.execute("area(None)", 6)["stderr"]
    assert 'File "<repl-cell-4>", line 7, in area' in error  # original cell and line


def test_worker_state_commit_limit_and_blob() -> None:
    state = WorkerState(compaction=False, limit_bytes=100)
    state.inputs.add_context("c")
    for name, size in (("a", 10), ("b", 95)):
        state.stage({"op": "entry", "name": name, "kind": "pickle", "body": b"x" * size})
    state.commit({"after_cell": 3, "deleted": [], "unsaved": {"lock": "not picklable"}})
    assert set(state.entries) == {"a"} and "over the" in state.unsaved["b"]
    assert state.after_cell == 3
    state.stage({"op": "entry", "name": "c", "kind": "module", "module": "os"})
    state.commit({"after_cell": 4, "deleted": ["a"], "unsaved": {}})
    metas, bodies = state.restore_payload()
    assert [m["name"] for m in metas] == ["c"] and bodies == []
    copy = WorkerState.from_blob(state.to_blob(), compaction=False, limit_bytes=100)
    assert copy.entries == state.entries and copy.inputs.contexts == {0: "c"}
    assert copy.after_cell == 4 and set(copy.unsaved) == {"b", "lock"}
    with pytest.raises(ValueError):
        WorkerState.from_blob(pickle.dumps({"format": "other"}), False, 100)


# -- tools ---------------------------------------------------------------------------------


def shipped_tool(x: int) -> int:
    import math

    return math.isqrt(x)


def test_tools_split_into_values_and_sources() -> None:
    assert looks_like_source("def f(x):\n    return x")
    assert looks_like_source("lambda x: x + 1")
    assert not looks_like_source("just some text\nover two lines")
    factor = 3
    with pytest.warns(RuntimeWarning, match="closure"):
        values, sources = split_tools(
            {
                "N": 5,
                "text": "hello\nworld",
                "src": "lambda x: x * 2",
                "fn": shipped_tool,
                "closure": lambda x: x * factor,
            }
        )
    assert values == {"N": 5, "text": "hello\nworld"}
    assert set(sources) == {"src", "fn"} and sources["fn"].startswith("def shipped_tool")


def test_describe_status() -> None:
    assert describe_status(-11) == "killed by SIGSEGV"
    assert describe_status(139) == "exit status 139, killed by SIGSEGV"
    assert describe_status(1) == "exit status 1"
    assert describe_status(None) == "it stopped answering"


# -- packaging -----------------------------------------------------------------------------


class CommandTransport(SubprocessTransport):
    """Runs an explicit command (to start the worker in other ways)."""

    def __init__(self, argv: list[str]) -> None:
        super().__init__()
        self.argv = argv

    def command(self, worker_args: Sequence[str]) -> list[str]:
        return [*self.argv, *worker_args]


def smoke(argv: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
    transport = CommandTransport(argv)
    if env:
        transport.env.update(env)
    client = WorkerClient(transport, lambda message: None)
    try:
        info = client.start([], 30)
        reply = client.request("exec", code="print(sum(range(5)))", cell=1, timeout=30)
        assert reply["stdout"] == "10\n"
        return info
    finally:
        client.close()


def test_zipapp_runs_without_rlmx_on_the_oldest_supported_python(tmp_path: Path) -> None:
    app = build_zipapp(tmp_path / "worker.pyz")
    assert smoke([sys.executable, "-I", app])["python"] == sys.version.split()[0]
    # A real 3.9 binary (a pyenv shim needs the host environment the worker lacks).
    found = [shutil.which("python3.9") or "", "/usr/bin/python3.9"]
    found += glob.glob(os.path.expanduser("~/.pyenv/versions/3.9*/bin/python3.9"))
    pythons = [p for p in found if p and "shims" not in p and os.access(p, os.X_OK)]
    if not pythons:
        pytest.skip("no Python 3.9 here to check the worker's 3.9 compatibility")
    assert smoke([pythons[0], "-I", app])["python"].startswith("3.9")


def test_worker_runs_as_a_module_where_rlmx_is_installed() -> None:
    root = str(Path(__file__).resolve().parents[2])
    info = smoke([sys.executable, "-m", "rlm.environments.worker"], {"PYTHONPATH": root})
    assert info["protocol"] == 1


def test_worker_bootstraps_from_stdin() -> None:
    class Bootstrapped(CommandTransport):
        bootstrap = True

    transport = Bootstrapped(bootstrap_argv(sys.executable))
    client = WorkerClient(transport, lambda message: None)
    try:
        assert client.start(["--output-limit", "5000"], 30)["protocol"] == 1
        reply = client.request("exec", code="print('x' * 9000)", cell=1, timeout=30)
        assert "truncated" in reply["stdout"]
    finally:
        client.close()


def test_iterator_pipes_are_adapted() -> None:
    reader = ChunkReader(iter([b"ab", b"", b"cde"]))
    assert io.BufferedReader(reader).read() == b"abcde"


def test_worker_package_imports_only_the_stdlib() -> None:
    code = (
        "import sys\n"
        "import rlm.environments.worker.boot\n"
        "bad = [m for m in sys.modules if m.startswith('rlm') and not ("
        "m.startswith('rlm.environments.worker') or m in ('rlm', 'rlm.environments'))]\n"
        "print(bad)"
    )
    app_dir = Path(
        build_zipapp(Path(os.environ.get("TMPDIR", "/tmp")) / f"probe-{os.getpid()}.pyz")
    )
    try:
        out = subprocess.run(
            [
                sys.executable,
                "-I",
                "-c",
                f"import sys; sys.path.insert(0, {str(app_dir)!r})\n{code}",
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        assert out.stdout.strip() == "[]"
    finally:
        app_dir.unlink()
