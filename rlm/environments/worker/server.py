"""The worker process: serves one host over stdin/stdout until the host goes away.

Threads: a reader thread reads the input side of the channel whenever no thread that
waits for its own sub-call reply does (``HostBridge``: such a thread reads for itself).
Whoever reads hands replies to the threads waiting for them, turns ``interrupt`` into a
SIGINT for the main thread, decodes streamed values, and queues every other request for
the main thread, which runs them one at a time (cells run on the main thread, so SIGINT
can interrupt them). When the channel closes, the reader thread ends the worker and its
process group (``lifeline``), even in the middle of a cell.

Standard library only, Python 3.9 compatible.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import sys
import threading
import time
from typing import Any

from rlm.environments.worker import lifeline
from rlm.environments.worker.host import HostBridge
from rlm.environments.worker.payloads import read_value
from rlm.environments.worker.protocol import Channel, ChannelClosed, FrameTooLarge, ProtocolError
from rlm.environments.worker.repl import WorkerRepl
from rlm.environments.worker.snapshot import Snapshotter
from rlm.environments.worker.spin import SpinReader

PROTOCOL_VERSION = 1
_INLINE_CHARS = 1 << 18  # longer looked-up values are streamed, not put in a message
_STREAMED_OPS = ("add_context", "add_history", "append_compaction", "set", "restore", "tools")


class Server:
    """Dispatches the host's requests to a ``WorkerRepl``."""

    def __init__(self, channel: Channel, settings: dict[str, Any]) -> None:
        self.channel = channel
        self.pid = os.getpid()
        self.bridge = HostBridge(
            channel, lambda: self.repl.cell_number, self._read_message, self._handle_message
        )
        self.repl = WorkerRepl(
            self.bridge.ask,
            output_limit=int(settings.get("output_limit", 1_000_000)),
            base_dir=os.getcwd(),
            compaction=bool(settings.get("compaction", False)),
            remaining=lambda: (self.bridge.request("budget") or {}).get("value"),
        )
        self.snapshots = Snapshotter(self.repl, int(settings.get("max_value_bytes", 1 << 30)))
        self.snapshot_cells = bool(settings.get("snapshots", True))
        # SimpleQueue: the reader's hand-off wakes the main thread with one C-level lock
        # release (queue.Queue's Condition costs a few thread switches' worth more).
        self.requests: queue.SimpleQueue[dict[str, Any] | None] = queue.SimpleQueue()
        self.main_thread = threading.main_thread().ident
        # Set where this is the worker process: when the channel closes, the host is
        # gone, and the worker ends at once with everything it started (``lifeline``).
        self.exit_with_host = False
        # Reads poll before they block only while a message is due soon: the host's
        # next request when the main thread is idle, a reply while a sub-call waits.
        # Never inside a stream: a bulk transfer is faster read in the larger pieces
        # that a sleeping reader is woken with.
        self.idle = False
        raw = getattr(channel.rfile, "raw", None)
        self._spin = raw if isinstance(raw, SpinReader) else None
        if self._spin is not None:
            self._spin.when = lambda: channel.receiving and (self.idle or self.bridge.expecting())
            self._spin.give_way = self.bridge.should_give_way

    # -- reader thread ----------------------------------------------------------------

    def read_loop(self) -> None:
        try:
            self.bridge.reader_loop()
        finally:
            if self.exit_with_host and os.getpid() == self.pid:
                lifeline.host_gone()  # never returns: a running cell must not outlive it
            self.bridge.close()
            self.requests.put(None)

    def _read_message(self) -> dict[str, Any]:
        """The next message, a streamed value decoded (with the read turn held)."""
        message = self.channel.recv()
        if "re" not in message and message.get("op") in _STREAMED_OPS and message.get("stream"):
            self._decode_stream(message)
        return message

    def _handle_message(self, message: dict[str, Any]) -> None:
        """A message that is not a reply, in channel order (with the read turn held)."""
        if message.get("op") == "interrupt":
            self._interrupt(message.get("cell"))
        else:
            self.idle = False  # busy from now: the next read need not poll
            self.requests.put(message)

    def _decode_stream(self, message: dict[str, Any]) -> None:
        try:
            if message["op"] == "restore":
                message["body"] = self.channel.read_stream()
            else:
                message["value"] = read_value(self.channel, message)
        except (ChannelClosed, ProtocolError):
            raise
        except BaseException as exc:  # e.g. MemoryError, or a class missing here
            message["decode_error"] = f"{type(exc).__name__}: {exc}"

    def _interrupt(self, cell: Any) -> None:
        if isinstance(cell, int):  # a cell queued but not started yet stops as it starts
            self.repl.stop_before = cell
        if self.repl.running and (cell is None or cell == self.repl.cell_number):
            signal.pthread_kill(self.main_thread, signal.SIGINT)  # type: ignore[arg-type]

    # -- main thread ----------------------------------------------------------------

    def serve(self) -> None:
        threading.Thread(target=self.read_loop, name="rlm-worker-reader", daemon=True).start()
        self.channel.send(
            {
                "op": "ready",
                "protocol": PROTOCOL_VERSION,
                "pid": self.pid,
                "python": sys.version.split()[0],
                "pickler": self.snapshots.extra_name or "pickle",
            }
        )
        while True:
            self.idle = True
            message = self._next_request()
            self.idle = False
            if message is None or os.getpid() != self.pid:
                return
            try:
                self.handle(message)
            except (ChannelClosed, OSError):
                return
            except KeyboardInterrupt:  # a late interrupt, after its cell ended
                continue
            if os.getpid() != self.pid:  # a forked child returning from a cell
                os._exit(0)
            if message.get("op") == "shutdown":
                return

    def _next_request(self) -> dict[str, Any] | None:
        """The next request, read by the main thread itself where it can (see
        ``HostBridge.read_while_idle``), else handed over by the reader thread."""
        with contextlib.suppress(queue.Empty):
            return self.requests.get_nowait()
        if self._spin is None:
            self.bridge.resume()  # idle now: requests must be read at once
        else:
            self.bridge.read_while_idle(lambda: not self.requests.empty(), self._spin.nudge)
        return self.requests.get()

    def reply(self, message: dict[str, Any], **fields: Any) -> None:
        reply = dict(fields, re=message.get("id"))
        try:
            self.channel.send(reply)
            return
        except FrameTooLarge as exc:  # over the host's max_frame_mb: shorten, not die
            why = str(exc)
        keep = (self.channel.max_send_bytes or 0) // 3
        while keep >= 1000:
            with contextlib.suppress(FrameTooLarge):
                self.channel.send(_shortened(reply, why, keep))
                return
            keep //= 4
        self.channel.send({"re": reply["re"], "error": f"the reply was too large: {why}"})

    def handle(self, message: dict[str, Any]) -> None:
        op = message.get("op")
        if "decode_error" in message:
            self.reply(message, error=f"could not load the value: {message['decode_error']}")
            return
        handler = getattr(self, f"op_{op}", None)
        if handler is None:
            self.reply(message, error=f"unknown request {op!r}")
            return
        try:
            handler(message)
        except (ChannelClosed, OSError):
            raise
        except BaseException as exc:
            self.reply(message, error=f"{type(exc).__name__}: {exc}")

    # -- operations -------------------------------------------------------------------

    def op_exec(self, message: dict[str, Any]) -> None:
        cell = int(message.get("cell", 0))
        result = self.repl.execute(str(message.get("code", "")), cell)
        _install_signals()  # the cell may have replaced our handlers
        # The host stops the cell's clock here; the snapshot is then sent before the
        # reply, so a host holding the reply also holds a snapshot including the cell.
        self.channel.send({"op": "cell_done", "cell": cell})
        with self.channel.corked():  # the snapshot and the reply: one write
            self.send_snapshot()
            self.reply(message, **result)

    def op_snapshot(self, message: dict[str, Any]) -> None:
        self.send_snapshot(full=True)
        self.reply(message)

    def send_snapshot(self, full: bool = False) -> None:
        """Send the snapshot delta (everything if ``full``), closed by a ``snapshot``
        message. Interruptible: a value whose pickling hangs is skipped, not fatal."""
        if not (self.snapshot_cells or full):
            return
        started = time.perf_counter()
        self.repl.running = True
        try:
            entries, deleted, unsaved = self.snapshots.collect(full=full)
        except KeyboardInterrupt:  # outside any one value: resend everything next time
            self.snapshots.reset()
            entries, deleted, unsaved = [], [], {}
        finally:
            self.repl.running = False
        tag = {"after_cell": self.repl.cell_number, "full": full}
        for meta, body in entries:
            out = dict(meta, op="entry", **tag)
            if body is None:
                self.channel.send(out)
            else:
                self.channel.send_chunks(out, [body])
        summary = dict(tag, deleted=deleted, unsaved=unsaved, time=time.perf_counter() - started)
        self.channel.send(dict(summary, op="snapshot"))

    def op_restore(self, message: dict[str, Any]) -> None:
        body = memoryview(message.get("body") or b"")
        entries: list[tuple[dict[str, Any], Any]] = []
        offset = 0
        for meta in message.get("entries", []):
            size = meta.get("size")
            if isinstance(size, int) and meta.get("kind") not in ("module", "source"):
                entries.append((meta, body[offset : offset + size]))
                offset += size
            else:
                entries.append((meta, None))
        failed = self.snapshots.restore(entries)
        self.reply(message, failed=failed)

    def op_add_context(self, message: dict[str, Any]) -> None:
        index = self.repl.inputs.add_context(message.get("value"), message.get("index"))
        self.repl.inputs.bind(self.repl.globals)
        self.reply(message, index=index)

    def op_add_history(self, message: dict[str, Any]) -> None:
        index = self.repl.inputs.add_history(message.get("value"), message.get("index"))
        self.repl.inputs.bind(self.repl.globals)
        self.reply(message, index=index)

    def op_append_compaction(self, message: dict[str, Any]) -> None:
        history = self.repl.inputs.compaction_history
        if history is not None:
            history.append(message.get("value"))
        self.reply(message)

    def op_counts(self, message: dict[str, Any]) -> None:
        inputs = self.repl.inputs
        self.reply(message, contexts=inputs.context_count, histories=inputs.history_count)

    def op_lookup(self, message: dict[str, Any]) -> None:
        value = self.repl.lookup_variable(str(message.get("name")))
        if value is not None and len(value) > _INLINE_CHARS:  # a big FINAL_VAR: streamed
            data = value.encode("utf-8", "surrogatepass")
            self.channel.send_chunks({"re": message.get("id"), "utf8": True}, [data])
            return
        self.reply(message, value=value)

    def op_set(self, message: dict[str, Any]) -> None:
        self.repl.set_variable(str(message.get("name")), message.get("value"))
        with self.channel.corked():
            self.send_snapshot()
            self.reply(message)

    def op_reset_answer(self, message: dict[str, Any]) -> None:
        self.repl.reset_answer()
        with self.channel.corked():
            self.send_snapshot()
            self.reply(message)

    def op_tools(self, message: dict[str, Any]) -> None:
        value = message.get("value") or {}
        errors = self.repl.define_tools(value.get("values", {}), value.get("sources", {}))
        self.reply(message, errors=errors)

    def op_ping(self, message: dict[str, Any]) -> None:
        self.reply(message, pid=self.pid)

    def op_shutdown(self, message: dict[str, Any]) -> None:
        self.reply(message)


def _cut(text: str, keep: int) -> str:
    if len(text) <= keep:
        return text
    head = keep * 2 // 3
    return (
        f"{text[:head]}\n... [{len(text) - keep} characters dropped] ...\n{text[-(keep - head) :]}"
    )


def _shortened(reply: dict[str, Any], why: str, keep: int) -> dict[str, Any]:
    """``reply`` with each text cut to ``keep`` characters (head and tail) and no
    variable previews, to fit the host's frame cap."""
    out: dict[str, Any] = {"re": reply.get("re")}
    for key in ("stdout", "stderr", "error", "final_answer"):
        if isinstance(reply.get(key), str):
            out[key] = _cut(reply[key], keep)
    note = f"Note: the reply was shortened to fit the channel ({why}).\n"
    out["stderr"] = note + str(out.get("stderr") or "")
    return out


def _on_sigint(signum: int, frame: Any) -> None:
    # Only a running cell is interrupted; anywhere else the worker keeps going.
    server = _current
    if server is not None and server.repl.running:
        raise KeyboardInterrupt


def _install_signals() -> None:
    signal.signal(signal.SIGINT, _on_sigint)
    if hasattr(signal, "SIGXFSZ"):  # over the file-size limit: EFBIG, not death
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


_current: Server | None = None
