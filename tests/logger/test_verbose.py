"""VerbosePrinter: disabled silence, rich rendering, plain fallback, event wiring."""

from __future__ import annotations

import contextlib
import io
import sys

import pytest

from rlm.base.errors import RLMLimitError
from rlm.base.events import EventBus, RunScope
from rlm.base.types import (
    CodeBlock,
    ModelUsageSummary,
    REPLResult,
    RLMChatCompletion,
    RLMIteration,
    RLMMetadata,
    UsageSummary,
)
from rlm.logger import VerbosePrinter
from rlm.logger.verbose import format_duration, format_usage, one_line, truncate

rich_console = pytest.importorskip("rich.console")


def make_console() -> tuple[VerbosePrinter, io.StringIO]:
    buffer = io.StringIO()
    console = rich_console.Console(file=buffer, width=100)
    return VerbosePrinter(enabled=True, console=console), buffer


def metadata() -> RLMMetadata:
    return RLMMetadata("gpt-test", 1, 5, "openai", {"model_name": "gpt-test"}, "local", {})


def usage() -> UsageSummary:
    return UsageSummary({"gpt-test": ModelUsageSummary(2, 1200, 340, 0.0123)})


def code_block(code: str = "print(6 * 7)", stdout: str = "42\n", stderr: str = "") -> CodeBlock:
    call = RLMChatCompletion("sub-model", "sub prompt", "sub reply", usage(), 0.3)
    return CodeBlock(code, REPLResult(stdout, stderr, {}, 0.05, [call]))


def call_everything(printer: VerbosePrinter) -> None:
    iteration = RLMIteration("p", "reply text", [code_block()], None, 1.5)
    printer.print_metadata(metadata())
    printer.print_iteration_start(1)
    printer.print_completion("reply text", 1.2)
    printer.print_code_execution(code_block())
    printer.print_subcall("m", "prompt", "response", 0.4, {"iterations": [{}], "run_metadata": {}})
    printer.print_iteration(iteration, 2)
    printer.print_budget_exceeded(1.5, 1.0)
    printer.print_limit_exceeded("timeout", "took too long")
    printer.print_compaction_status(900, 1000, 4000)
    printer.print_compaction()
    printer.print_final_answer("the answer")
    printer.print_summary(2, 3.5, usage().to_dict())


def drive_events(bus: EventBus) -> None:
    root = RunScope(bus, run_id="root")
    child = RunScope(bus, run_id="child", parent_id="root", depth=1)
    root.emit(
        "run_started", prompt_preview="q", root_prompt=None, metadata=metadata(), context_count=1
    )
    root.emit("iteration_started", iteration=1)
    root.emit("model_reply", iteration=1, response="Let me compute.", usage=None, duration=0.8)
    block = code_block("answer = 6 * 7", "computed\n")
    root.emit("code_cell_started", iteration=1, index=0, code=block.code)
    root.emit(
        "subcall_started", kind="rlm", model="sub-model", prompt_preview="child task", count=1
    )
    child.emit("iteration_started", iteration=1)
    child.emit("model_reply", iteration=1, response="CHILD-REPLY", usage=None, duration=0.1)
    root.emit(
        "subcall_finished", kind="rlm", model="sub-model", duration=0.5, usage=usage(), error=None
    )
    root.emit(
        "code_cell_finished",
        iteration=1,
        index=0,
        code=block.code,
        result=block.result,
        duration=0.1,
    )
    root.emit("iteration_finished", iteration=1, iteration_obj=None, duration=1.0)
    root.emit("limit_exceeded", kind="tokens", message="token cap hit", partial_answer=None)
    root.emit("final_answer", answer="FORTY-TWO", iterations=1, source="FINAL")
    root.emit("run_finished", response="FORTY-TWO", usage=usage(), execution_time=2.0, error=None)


# -- helpers ----------------------------------------------------------------------------


def test_truncate_keeps_head_and_tail() -> None:
    text = "HEAD" + "x" * 5000 + "TAIL"
    short = truncate(text, 100)
    assert len(short) == 100
    assert short.startswith("HEAD") and short.endswith("TAIL") and "…" in short
    assert truncate("short", 100) == "short"
    assert truncate(12345, 3) == "1…5"
    assert one_line("a\n  b\tc", 50) == "a b c"


def test_format_helpers() -> None:
    assert format_duration(1.234) == "1.23s"
    assert format_duration(125) == "2m 05s"
    assert format_duration(None) == ""
    assert format_usage(usage()) == "1,200 in / 340 out · $0.012300"
    assert format_usage(usage().to_dict()) == format_usage(usage())
    assert format_usage(None) == ""


# -- disabled ---------------------------------------------------------------------------


def test_disabled_prints_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    printer = VerbosePrinter(enabled=False)
    call_everything(printer)
    bus = EventBus()
    printer.attach(bus, include_children=True)
    drive_events(bus)
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_disabled_printer_ignores_given_console() -> None:
    buffer = io.StringIO()
    printer = VerbosePrinter(enabled=False, console=rich_console.Console(file=buffer))
    call_everything(printer)
    assert buffer.getvalue() == ""


# -- rich ---------------------------------------------------------------------------------


def test_rich_renders_answer_and_code() -> None:
    printer, buffer = make_console()
    assert printer.uses_rich
    printer.print_code_execution(code_block("total = sum([1, 2, 3])", "6\n", "Warning: [bold]x[/]"))
    printer.print_final_answer("The answer is 42")
    out = buffer.getvalue()
    assert "total = sum([1, 2, 3])" in out
    assert "Warning: [bold]x[/]" in out  # text is never parsed as rich markup
    assert "↳ 1 sub-call" in out and "(s)" not in out
    assert "The answer is 42" in out
    assert "Final Answer" in out and "Code Execution" in out
    assert "╭" in out  # drawn as panels


def test_rich_renders_every_method() -> None:
    printer, buffer = make_console()
    call_everything(printer)
    out = buffer.getvalue()
    for needle in [
        "gpt-test",
        "Iteration 1",
        "Iteration 2",
        "reply text",
        "RLM Sub-call: m",
        "LLM Sub-call: sub-model",
        "Budget Exceeded",
        "Timeout Exceeded",
        "90% of compaction threshold",
        "Compaction",
        "the answer",
        "1,200 in / 340 out",
    ]:
        assert needle in out, needle


def test_long_text_is_truncated() -> None:
    printer, buffer = make_console()
    printer.print_completion("START " + "word " * 5000 + " FINISH")
    out = buffer.getvalue()
    assert "START" in out and "FINISH" in out and "…" in out
    assert out.count("word") < 1000


@pytest.mark.filterwarnings("error")  # a raising subscriber would only warn otherwise
def test_attach_prints_root_events_only_by_default() -> None:
    printer, buffer = make_console()
    bus = EventBus()
    unsubscribe = printer.attach(bus)
    drive_events(bus)
    out = buffer.getvalue()
    for needle in [
        "gpt-test",
        "Iteration 1",
        "Let me compute.",
        "answer = 6 * 7",
        "computed",
        "rlm sub-call → sub-model",
        "child task",
        "Token Limit Exceeded",
        "FORTY-TWO",
        "Iterations: 1",
        "2.00s",
    ]:
        assert needle in out, needle
    assert "CHILD-REPLY" not in out

    unsubscribe()
    before = buffer.getvalue()
    RunScope(bus, run_id="root").emit("final_answer", answer="late", iterations=1, source="FINAL")
    assert buffer.getvalue() == before


@pytest.mark.filterwarnings("error")
def test_attach_include_children_marks_depth() -> None:
    printer, buffer = make_console()
    bus = EventBus()
    printer.attach(bus, include_children=True)
    drive_events(bus)
    out = buffer.getvalue()
    assert "CHILD-REPLY" in out
    assert "[depth 1]" in out


@pytest.mark.filterwarnings("error")
def test_run_error_is_shown() -> None:
    printer, buffer = make_console()
    bus = EventBus()
    printer.attach(bus)
    scope = RunScope(bus, run_id="r")
    scope.emit("subcall_finished", kind="llm", model="m", duration=0.1, usage=None, error="boom")
    scope.emit("run_finished", response="", usage=UsageSummary(), execution_time=1.0, error="kaput")
    out = buffer.getvalue()
    assert "error: boom" in out and "Run failed: kaput" in out


# -- plain fallback -------------------------------------------------------------------------


def test_plain_fallback_without_rich(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in [m for m in sys.modules if m == "rich" or m.startswith("rich.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "rich", None)

    printer = VerbosePrinter(enabled=True)
    assert not printer.uses_rich
    printer.print_iteration_start(3)
    printer.print_code_execution(code_block("y = 2 ** 10", "1024\n"))
    printer.print_final_answer("plain answer")
    printer.print_summary(3, 1.0, usage())
    bus = EventBus()
    printer.attach(bus)
    drive_events(bus)

    captured = capsys.readouterr()
    assert captured.err == ""
    out = captured.out
    assert "--- Iteration 3 ---" in out
    assert "y = 2 ** 10" in out and "1024" in out
    assert "[★ Final Answer]" in out and "plain answer" in out
    assert "FORTY-TWO" in out and "answer = 6 * 7" in out
    assert "╭" not in out


# -- the final-answer request is titled by what its reply is ----------------------------


def run_printed(replies: list[str], max_iterations: int = 2, **limits: object) -> str:
    """A real RLM (scripted backend) with a printer attached to its events."""
    from rlm import RLM

    printer, buffer = make_console()
    kwargs = {"responses": replies, "model_name": "scripted"}
    with RLM(backend="scripted", backend_kwargs=kwargs, max_iterations=max_iterations,
             **limits) as rlm:  # type: ignore[arg-type]  # fmt: skip
        printer.attach(rlm.events)
        with contextlib.suppress(RLMLimitError):  # what was printed is the point
            rlm.completion("ctx", root_prompt="q?")
    return buffer.getvalue()


@pytest.mark.filterwarnings("error")
def test_a_code_reply_to_the_final_answer_request_is_not_titled_an_answer() -> None:
    out = run_printed(["```repl\nx = 1\n```"])  # every reply, the last one too, is code
    assert "No Answer: the final-answer request got code, not an answer" in out
    assert "Final Answer" not in out
    assert "Final-answer request (iterations used up)" in out
    assert "Iteration 3" not in out  # the request is not an iteration
    assert "Iterations: 2" in out


@pytest.mark.filterwarnings("error")
def test_an_empty_reply_to_the_final_answer_request_says_so() -> None:
    out = run_printed(["```repl\nx = 1\n```", "```repl\nx = 2\n```", "   "])
    assert "No Answer: the final-answer request got an empty reply" in out
    assert "★ Final Answer" not in out


@pytest.mark.filterwarnings("error")
def test_real_answers_keep_the_final_answer_title() -> None:
    # A text reply to the final-answer request is the answer.
    out = run_printed(["```repl\nx = 1\n```", "```repl\nx = 2\n```", "The White Rabbit."])
    assert "★ Final Answer" in out and "The White Rabbit." in out and "No Answer" not in out
    # A submitted answer is the answer even when it is code.
    submitted = "```repl\nanswer['content'] = '```py\\nprint(1)\\n```'\nanswer['ready'] = True\n```"
    out = run_printed([submitted])
    assert "★ Final Answer" in out and "No Answer" not in out and "Iterations: 1" in out


@pytest.mark.filterwarnings("error")
def test_a_limit_before_the_first_iteration_counts_none() -> None:
    out = run_printed(["```repl\nx = 1\n```"], max_tokens=10)
    assert "⚠ Token Limit Exceeded" in out  # titled in words, not by the error's class
    assert "Iterations: 0" in out and "Iterations: 1" not in out


def test_reply_kind_and_answer_title() -> None:
    from rlm.logger.verbose import answer_title, plural, reply_kind

    assert reply_kind("") == reply_kind(" \n ") == "empty"
    assert reply_kind("```repl\nx = 1\n```") == "code"
    assert reply_kind("```repl\nx = 1") == "code"  # a prefilled fence never closed
    assert reply_kind("```repl\nx = 1\n```\nSo it is 1.") == "text"
    assert answer_title("```repl\nx\n```", "default")[0].startswith("✗ No Answer")
    assert answer_title("```repl\nx\n```", "FINAL")[0] == "★ Final Answer"
    assert answer_title("", "answer")[0] == "★ Final Answer (empty)"
    assert (plural(0, "iteration"), plural(1, "iteration"), plural(2, "call")) == (
        "0 iterations",
        "1 iteration",
        "2 calls",
    )
