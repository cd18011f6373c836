"""The report's honesty notes speak proper English: one method, several methods."""

from __future__ import annotations

from rlm.evals.report import honesty_notes


def _embedded(name: str) -> dict[str, object]:
    return {"name": name, "backend": "llama_cpp", "backend_kwargs": {}}


def test_one_method_is_singular() -> None:
    (note,) = honesty_notes([_embedded("base")])
    assert note.startswith("Method base uses the embedded SmolLM2-135M model")
    assert "Its scores show" in note and "(s)" not in note


def test_several_methods_are_plural() -> None:
    (note,) = honesty_notes([_embedded("base"), _embedded("rlm-d1"), _embedded("rlm-d2")])
    assert note.startswith("Methods base, rlm-d1 and rlm-d2 use the embedded")
    assert "Their scores show" in note and "(s)" not in note


def test_scripted_notes_agree_too() -> None:
    (one,) = honesty_notes([{"name": "s", "backend": "scripted"}])
    assert one == (
        "Method s uses the scripted backend: its replies come from a script, so its "
        "scores measure the script (and the harness), not a model."
    )
    (two,) = honesty_notes(
        [{"name": "a", "backend": "scripted"}, {"name": "b", "backend": "scripted"}]
    )
    assert two.startswith("Methods a and b use the scripted backend: their replies")
