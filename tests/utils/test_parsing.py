"""Pure text helpers: code blocks, answer markers and formatting REPL output."""

from __future__ import annotations

from typing import Any

from rlm.base.types import CodeBlock, REPLResult, RLMIteration
from rlm.core.parsing import (
    convert_context_for_repl,
    find_code_blocks,
    find_final_answer,
    find_final_marker,
    format_execution_result,
    format_iteration,
    truncate_middle,
)

FENCE = "```"


def repl(code: str, indent: str = "") -> str:
    body = "\n".join(indent + line for line in code.splitlines())
    return f"{indent}{FENCE}repl\n{body}\n{indent}{FENCE}"


class Vars:
    """Anything with ``lookup_variable`` serves FINAL_VAR."""

    def __init__(self, **values: Any) -> None:
        self.values = values
        self.asked: list[str] = []

    def lookup_variable(self, name: str) -> str | None:
        self.asked.append(name)
        return str(self.values[name]) if name in self.values else None


# -- find_code_blocks ------------------------------------------------------------------


def test_code_blocks_multiple_in_order() -> None:
    text = f"First:\n{repl('x = 1')}\nthen\n{repl('y = 2' + chr(10) + 'print(x + y)')}\ndone"
    assert find_code_blocks(text) == ["x = 1", "y = 2\nprint(x + y)"]


def test_code_block_indented_is_dedented() -> None:
    text = "1. Look:\n" + repl("for i in range(2):\n    print(i)", indent="   ")
    assert find_code_blocks(text) == ["for i in range(2):\n    print(i)"]


def test_no_code_block() -> None:
    assert find_code_blocks("") == []
    assert find_code_blocks("Just prose, FINAL(3) and `inline` code.") == []


def test_python_fence_is_ignored() -> None:
    text = f"{FENCE}python\nprint('no')\n{FENCE}\n{repl('print(1)')}"
    assert find_code_blocks(text) == ["print(1)"]
    assert find_code_blocks(f"{FENCE}python\nprint('no')\n{FENCE}") == []


def test_closing_fence_must_start_a_line() -> None:
    code = 's = "a```b"\nprint(s)'
    assert find_code_blocks(repl(code)) == [code]
    text = f"{FENCE}repl\nx = 1{FENCE}\ny = 2\n{FENCE}"
    assert find_code_blocks(text) == [f"x = 1{FENCE}\ny = 2"]


def test_empty_block_is_ignored() -> None:
    text = f"{FENCE}repl\n\n   \n{FENCE}\n{repl('z = 3')}"
    assert find_code_blocks(text) == ["z = 3"]


def test_code_blocks_with_crlf_line_endings() -> None:
    text = f"Look:\r\n{FENCE}repl\r\nx = 1\r\nprint(x)\r\n{FENCE}\r\nmore\r\n"
    blocks = find_code_blocks(text)
    assert len(blocks) == 1
    assert blocks[0].splitlines() == ["x = 1", "print(x)"]


# -- find_final_marker / find_final_answer ---------------------------------------------


def test_final_at_line_start() -> None:
    assert find_final_marker("I checked it.\nFINAL(42)") == ("FINAL", "42")
    assert find_final_answer("  FINAL( spaced out )\n") == "spaced out"


def test_final_balanced_nested_parens() -> None:
    assert find_final_marker("FINAL(f(x) = (a+b))") == ("FINAL", "f(x) = (a+b)")
    assert find_final_answer("FINAL(g(h(1), (2)))\ntrailing (text)") == "g(h(1), (2))"


def test_final_parens_inside_quotes() -> None:
    assert find_final_answer('FINAL("a)b")') == '"a)b"'
    assert find_final_answer("FINAL(say ':)' twice)") == "say ':)' twice"


def test_final_with_apostrophe_in_prose() -> None:
    # An apostrophe in a plain-text answer is not a string delimiter.
    assert find_final_answer("FINAL(The author's name is Bob)") == "The author's name is Bob"
    assert find_final_answer("FINAL(it's 42 (roughly))\nmore") == "it's 42 (roughly)"
    assert find_final_answer("FINAL(the students' grades)") == "the students' grades"


def test_final_inside_fence_is_ignored() -> None:
    assert find_final_marker(f"{FENCE}\nFINAL(no)\n{FENCE}") is None
    assert find_final_marker(repl("FINAL(no)")) is None
    text = f"{FENCE}text\nFINAL(no)\n{FENCE}\nFINAL(yes)"
    assert find_final_marker(text) == ("FINAL", "yes")


def test_final_inside_fence_with_crlf_is_ignored() -> None:
    text = f"{FENCE}\r\nFINAL(no)\r\n{FENCE}\r\nFINAL(yes)\r\n"
    assert find_final_marker(text) == ("FINAL", "yes")


def test_final_mid_line_is_ignored() -> None:
    assert find_final_marker("The answer is FINAL(7)") is None
    assert find_final_answer("call FINAL_VAR(x) later", Vars(x=1)) is None


def test_final_unbalanced_is_none() -> None:
    assert find_final_marker("FINAL(never closed") is None
    assert find_final_marker("no marker here") is None


def test_final_var_resolved_through_lookup_variable() -> None:
    env = Vars(result="hello")
    assert find_final_marker("FINAL_VAR(result)") == ("FINAL_VAR", "result")
    assert find_final_answer("FINAL_VAR(result)", env) == "hello"
    assert env.asked == ["result"]


def test_final_var_unbound_or_no_environment_is_none() -> None:
    assert find_final_answer("FINAL_VAR(missing)", Vars()) is None
    assert find_final_answer("FINAL_VAR(result)") is None


def test_final_var_quoted_name() -> None:
    env = Vars(x="v")
    assert find_final_marker('FINAL_VAR("x")') == ("FINAL_VAR", "x")
    assert find_final_answer("FINAL_VAR('x')", env) == "v"


def test_final_var_not_an_identifier_is_skipped() -> None:
    assert find_final_marker("FINAL_VAR(1 + 2)") is None
    assert find_final_marker("FINAL_VAR(not valid)\nFINAL(ok)") == ("FINAL", "ok")


# -- truncate_middle -------------------------------------------------------------------


def test_truncate_middle_short_text_untouched() -> None:
    assert truncate_middle("abc", 10) == "abc"
    assert truncate_middle("x" * 10, 10) == "x" * 10


def test_truncate_middle_keeps_head_and_tail() -> None:
    text = "HEAD" + "m" * 5000 + "TAIL"
    out = truncate_middle(text, 300)
    assert out.startswith("HEAD")
    assert out.endswith("TAIL")
    assert "omitted" in out
    assert len(out) <= 300 + 100
    assert len(out) < len(text)


# -- format_execution_result / format_iteration ----------------------------------------


def result(stdout: str = "", stderr: str = "", **local: Any) -> REPLResult:
    return REPLResult(stdout=stdout, stderr=stderr, locals=local)


def test_format_execution_result_parts() -> None:
    text = format_execution_result(
        result("out\n", "Traceback...\nNameError: x\n", a=1, s="t", _hidden=2, answer={}, f=len)
    )
    assert text.startswith("out")
    assert "NameError: x" in text
    assert "REPL variables: ['a', 's']" in text
    assert "_hidden" not in text and "'answer'" not in text and "'f'" not in text


def test_format_execution_result_no_output() -> None:
    assert format_execution_result(result()) == "No output"


def test_format_execution_result_many_variables_are_capped() -> None:
    text = format_execution_result(result(**{f"v{i}": i for i in range(50)}))
    assert "(+10 more)" in text


def iteration(response: str, *results: REPLResult) -> RLMIteration:
    return RLMIteration(
        prompt=[], response=response, code_blocks=[CodeBlock("c", r) for r in results]
    )


def test_format_iteration_without_code_is_one_message() -> None:
    assert format_iteration(iteration("thinking")) == [{"role": "assistant", "content": "thinking"}]


def test_format_iteration_with_one_block() -> None:
    messages = format_iteration(iteration("r", result("hi\n")))
    assert messages == [
        {"role": "assistant", "content": "r"},
        {"role": "user", "content": "REPL output:\nhi"},
    ]


def test_format_iteration_block_headers_when_several() -> None:
    messages = format_iteration(iteration("r", result("one"), result("two")))
    assert len(messages) == 2
    body = messages[1]["content"]
    assert "REPL output (block 1):\none" in body
    assert "REPL output (block 2):\ntwo" in body
    assert body.index("block 1") < body.index("block 2")


def test_format_iteration_truncates_each_block() -> None:
    long = "A" + "z" * 10_000 + "B"
    messages = format_iteration(iteration("r", result(long)), max_character_length=500)
    body = messages[1]["content"]
    assert len(body) < 800
    assert "A" in body and body.endswith("B")


# -- convert_context_for_repl ----------------------------------------------------------


def test_convert_context_for_repl() -> None:
    assert convert_context_for_repl("text") == (None, "text")
    assert convert_context_for_repl({"a": 1}) == ({"a": 1}, None)
    assert convert_context_for_repl(["x", "y"]) == (["x", "y"], None)
    messages = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
    assert convert_context_for_repl(messages) == (["q", "a"], None)
    assert convert_context_for_repl([]) == ([], None)


def test_truncate_middle_with_a_zero_limit_keeps_nothing_but_the_marker() -> None:
    from rlm.core.parsing import truncate_middle

    out = truncate_middle("x" * 1000, 0)
    assert "x" not in out and "1,000 characters omitted" in out


def test_huge_stdout_and_stderr_share_the_budget_head_and_tail_kept() -> None:
    from rlm.base.types import REPLResult
    from rlm.core.parsing import format_execution_result

    stdout = "HEAD" + "o" * 5_000_000 + "TAIL"
    stderr = "EHEAD" + "e" * 100_000 + "ETAIL"
    text = format_execution_result(REPLResult(stdout, stderr, {}), 20_000)
    assert len(text) < 21_000
    for marker in ("HEAD", "TAIL", "EHEAD", "ETAIL"):
        assert marker in text
