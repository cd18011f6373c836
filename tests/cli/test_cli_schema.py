"""``rlm run --schema FILE.json`` end to end, in a real subprocess with the scripted
backend: the answer is JSON matching the schema, a refused answer is repaired, and one
that never matches exits 1 with the schema's errors."""

from __future__ import annotations

import json
from pathlib import Path

from cli_support import answer_code, rlm, scripted

SCHEMA = {
    "type": "object",
    "properties": {"total": {"type": "number"}, "currency": {"enum": ["EUR", "USD"]}},
    "required": ["total", "currency"],
    "additionalProperties": False,
}
LOOK = "```repl\nprint(context[:100])\n```"


def _files(tmp_path: Path) -> tuple[Path, Path]:
    context = tmp_path / "invoice.txt"
    context.write_text("Invoice 17: 3 items, total 42.50 EUR\n", "utf-8")
    schema = tmp_path / "invoice.schema.json"
    schema.write_text(json.dumps(SCHEMA), "utf-8")
    return context, schema


def test_run_with_a_schema_prints_the_json_answer_after_a_repair(tmp_path: Path) -> None:
    context, schema = _files(tmp_path)
    replies = scripted(
        LOOK,
        answer_code('{"total": "42.50", "currency": "euro"}'),
        answer_code('{"total": 42.5, "currency": "EUR"}'),
    )
    done = rlm("run", "-c", str(context), "--schema", str(schema), *replies,
               "What is the total?", cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"total": 42.5, "currency": "EUR"}
    assert "iteration 2: answer refused by the output schema: $.total: expected number" in (
        done.stderr
    )
    assert "repair 1 of 3" in done.stderr

    done = rlm("run", "-q", "--json", "-c", str(context), "--schema", str(schema), *replies,
               "What is the total?", cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    payload = json.loads(done.stdout)
    assert payload["parsed"] == {"total": 42.5, "currency": "EUR"}
    assert json.loads(payload["response"]) == payload["parsed"]


def test_an_answer_that_never_matches_exits_1_with_the_errors(tmp_path: Path) -> None:
    context, schema = _files(tmp_path)
    bad = answer_code('{"total": "a lot"}')
    replies = scripted(LOOK, bad, '{"total": "still a lot"}')
    done = rlm("run", "-q", "--json", "-c", str(context), "--schema", str(schema),
               "--max-iterations", "3", *replies, "What is the total?",
               cwd=tmp_path)  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert "SchemaValidationError" in done.stderr
    payload = json.loads(done.stdout)
    assert payload["error_type"] == "SchemaValidationError"
    assert payload["invalid_answer"] == '{"total": "still a lot"}'
    assert any(e.startswith("$.total: expected number") for e in payload["schema_errors"])
    assert "$.currency: required property is missing" in payload["schema_errors"]


def test_a_bad_schema_file_is_a_usage_error_before_any_call(tmp_path: Path) -> None:
    context, _ = _files(tmp_path)
    broken = tmp_path / "broken.json"
    broken.write_text("{not json", "utf-8")
    done = rlm("run", "-c", str(context), "--schema", str(broken), *scripted(LOOK), "Q",
               cwd=tmp_path)  # fmt: skip
    assert done.returncode == 2
    assert "--schema" in done.stderr and "not JSON" in done.stderr
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"type": "strnig"}), "utf-8")
    done = rlm("run", "-c", str(context), "--schema", str(wrong), *scripted(LOOK), "Q",
               cwd=tmp_path)  # fmt: skip
    assert done.returncode == 2
    assert "unknown type 'strnig'" in done.stderr
    done = rlm("run", "-c", str(context), "--schema", str(tmp_path / "missing.json"),
               *scripted(LOOK), "Q", cwd=tmp_path)  # fmt: skip
    assert done.returncode == 2 and "cannot read it" in done.stderr
