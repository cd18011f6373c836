"""The state of one ``rlm chat`` and its slash commands, apart from any terminal.

Every message is one turn of a persistent RLM. Its root prompt is the message; its
context is the files queued with ``/add`` since the last message (one file's text, or
a list of texts in the order added), or the message itself when none are queued. Turn
``N``'s context is ``context_N`` in the REPL, next to ``history_N`` and
``final_answer_N``, so later messages can refer back to earlier material. With
``session=NAME`` the session is durable (``rlm.sessions``): an existing one is resumed,
and every message is saved as it ends.
"""

from __future__ import annotations

import io
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any

from rlm.base.errors import RLMError, RLMLimitError
from rlm.base.redact import redact_text
from rlm.base.types import UsageSummary
from rlm.cli.config import CLIUsageError, SkipLister, load_context
from rlm.cli.factory import SettingsFactory
from rlm.cli.failures import error_line, key_hint, provider_status
from rlm.cli.live import LiveDisplay
from rlm.cli.progress import RunTracker
from rlm.core.rlm import RLM
from rlm.logger.verbose import format_duration, format_usage, one_line, plural
from rlm.sessions import api as stored

HELP = """commands:
  /add PATH   queue a file, directory or glob as the next message's context
  /vars       list the REPL's variables (context_N, history_N, your model's own)
  /budget     tokens and spend so far, and the limits each message runs under
  /history    this session's messages and answers
  /reset      start a fresh session (drops variables and queued files; a --session
              is deleted from the store and started again under its name)
  /quit       leave (also /exit or Ctrl-D)
  /help       this text
A message's context is the queued files, or the message itself when none are queued."""


@dataclass(frozen=True)
class Turn:
    index: int  # context_{index}
    question: str
    context: str  # what the context was, for /history
    answer: str
    note: str = ""  # set when a limit or an error ended the turn


class ChatSession:
    def __init__(
        self,
        factory: SettingsFactory,
        out: IO[str],
        err: IO[str],
        *,
        quiet: bool = False,
        live: bool = False,
        session: str | None = None,
    ) -> None:
        self.factory = factory
        self.out, self.err = out, err
        self.quiet, self.live = quiet, live
        self.session_name = session  # a durable session's name
        self.rlm: RLM = self._new_rlm()
        self.queued: list[tuple[str, Any]] = []  # (path as typed, text or list of texts)
        self.turns: list[Turn] = []
        self.usage = UsageSummary()
        self._started = 0  # turns started, including failed ones: the next context_N
        self.durable_note = self._load_stored_turns() if session else None
        self.commands: dict[str, Callable[[str], bool]] = {
            "add": self.cmd_add,
            "vars": self.cmd_vars,
            "budget": self.cmd_budget,
            "history": self.cmd_history,
            "reset": self.cmd_reset,
            "quit": lambda _: False,
            "exit": lambda _: False,
            "help": self.cmd_help,
        }

    def _new_rlm(self) -> RLM:
        import uuid

        return self.factory(session_id=self.session_name or f"chat-{uuid.uuid4().hex[:12]}")

    def _load_stored_turns(self) -> str:
        """A resumed durable session's earlier messages, for /history; the notice."""
        name, store = self.session_name, self.factory.session_store
        assert name is not None
        for t in stored.show(name, store).turns:
            note = "" if t.status == "completed" else f"{t.status}: {t.error}"
            meta = t.context_meta
            described = (
                f"{meta.get('context_type', '?')}, {meta.get('context_total_length', 0):,} chars"
            )
            self.turns.append(Turn(t.index, t.root_prompt or "", described, t.answer or "", note))
            self._started = t.index + 1
        if not self.turns:
            return f"new durable session {name!r} (saved in {store})"
        return (f"resumed session {name!r}: {len(self.turns)} earlier message(s); their "
                "contexts and your model's variables are back (/history, /vars)")  # fmt: skip

    def say(self, text: str) -> None:
        print(text, file=self.err, flush=True)

    def close(self) -> None:
        self.rlm.close()

    # -- input -------------------------------------------------------------------------

    def handle(self, line: str) -> bool:
        """Act on one input line; False means the chat should end."""
        line = line.strip()
        if not line:
            return True
        if not line.startswith("/"):
            self.ask(line)
            return True
        name, _, rest = line[1:].partition(" ")
        command = self.commands.get(name.lower())
        if command is None:
            self.say(f"unknown command /{name}; /help lists the commands")
            return True
        return command(rest.strip())

    def _take_context(self, message: str) -> tuple[Any, str]:
        queued, self.queued = self.queued, []
        if not queued:
            return message, "the message"
        names = ", ".join(path for path, _ in queued)
        if len(queued) == 1:
            return queued[0][1], names
        return [content for _, content in queued], names

    def ask(self, message: str) -> None:
        context, described = self._take_context(message)
        index = self._started
        self._started += 1
        tracker = (
            LiveDisplay(self.err, max_iterations=self.factory.setup.max_iterations)
            if self.live
            else RunTracker(self.err, self.quiet)
        )
        unsubscribe = tracker.attach(self.rlm.events)
        answer, note = "", ""
        try:
            with tracker:  # started first: the run emits as soon as the stream exists
                stream = self.rlm.stream(context, root_prompt=message)
                for _ in stream:
                    pass
            result = stream.result
            assert result is not None
            answer = result.response
            self.usage.merge(result.usage_summary)
        except KeyboardInterrupt:
            note = "cancelled"
        except RLMLimitError as exc:
            answer, note = exc.partial_answer or "", f"{type(exc).__name__}: {exc}"
            if tracker.usage is not None:
                self.usage.merge(tracker.usage)
        except RLMError as exc:
            note = error_line(exc, self.factory.settings.env)
            if provider_status(exc) == 401:
                setup = self.factory.setup
                hint = key_hint(self.factory.settings, setup.backend, setup.backend_kwargs)
                note = f"{note.rstrip('. ')}. {hint[:1].upper()}{hint[1:]}"
        finally:
            unsubscribe()
        if note:
            note = redact_text(note)
            self.say(f"rlm: {note}" + (" (partial answer below)" if answer else ""))
        if answer:
            print(answer, file=self.out, flush=True)
        self.turns.append(Turn(index, message, described, answer, note))

    # -- commands ----------------------------------------------------------------------

    def cmd_add(self, rest: str) -> bool:
        if not rest:
            queued = ", ".join(path for path, _ in self.queued) or "nothing"
            self.say(f"usage: /add PATH  (queued for the next message: {queued})")
            return True
        for path in shlex.split(rest):
            skipped = SkipLister(self.err)
            try:
                content = load_context(path, io.StringIO(), label="/add", on_skip=skipped)
            except CLIUsageError as exc:
                self.say(f"rlm: {exc}")
                continue
            skipped.finish()
            self.queued.append((path, content))
            size = len(content) if isinstance(content, str) else sum(map(len, content))
            files = "" if isinstance(content, str) else f", {len(content)} files"
            self.say(f"queued {path} ({size:,} chars{files}) as the next message's context")
        return True

    def cmd_vars(self, rest: str) -> bool:
        env = self.rlm.environment
        if env is None:
            self.say("no variables yet: send a message first")
            return True
        result = env.execute_code("print(SHOW_VARS())")
        print((result.stdout or result.stderr).strip(), file=self.out, flush=True)
        return True

    def cmd_budget(self, rest: str) -> bool:
        s = self.factory.settings
        spent = format_usage(self.usage) or "nothing yet"
        calls = sum(m.total_calls for m in self.usage.model_usage_summaries.values())
        self.say(f"{plural(len(self.turns), 'message')}, {plural(calls, 'model call')}: {spent}")
        limits = [f"max_iterations {self.factory.setup.max_iterations}"]
        if s.max_budget is not None:
            limits.append(f"max_budget ${s.max_budget}")
        if s.max_tokens is not None:
            limits.append(f"max_tokens {s.max_tokens:,}")
        if s.max_timeout is not None:
            limits.append(f"max_timeout {format_duration(s.max_timeout)}")
        self.say("limits per message: " + ", ".join(limits))
        return True

    def cmd_history(self, rest: str) -> bool:
        if not self.turns:
            self.say("no messages yet")
        for turn in self.turns:
            shown = one_line(turn.answer, 80) if turn.answer else f"({one_line(turn.note)})"
            self.say(f"[{turn.index}] {one_line(turn.question, 60)}")
            self.say(f"    context_{turn.index}: {one_line(turn.context, 60)}  →  {shown}")
        return True

    def cmd_reset(self, rest: str) -> bool:
        self.rlm.close()
        if self.session_name is not None:  # its lock is released: the store can drop it
            stored.delete(self.session_name, self.factory.session_store)
        self.rlm = self._new_rlm()
        self.queued, self.turns, self.usage, self._started = [], [], UsageSummary(), 0
        self.say("new session: variables, history and queued files cleared")
        return True

    def cmd_help(self, rest: str) -> bool:
        self.say(HELP)
        return True
