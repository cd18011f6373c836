"""Each scorer as its paper defines it, with the cases that make it fail."""

from __future__ import annotations

import pytest

from rlm.evals.scorers import (
    SCORERS,
    choice_letter,
    contains,
    exact,
    mrcr,
    multiple_choice,
    oolong,
    oolong_candidate,
    pairs_f1,
    parse_pairs,
    score,
    set_f1,
)


def test_exact_ignores_case_punctuation_and_prefixes() -> None:
    assert exact("Answer: **Paris**.", "paris") == 1.0
    assert exact("  the  Queen ", "The Queen") == 1.0
    assert exact("Paris, France", "Paris") == 0.0


def test_contains_needs_the_whole_token() -> None:
    assert contains("The magic number is 1234567.", "1234567") == 1.0
    assert contains("11234567", "1234567") == 0.0
    assert contains("", "1234567") == 0.0
    assert contains("anything", "") == 0.0


def test_oolong_numeric_partial_credit_is_0_75_to_the_distance() -> None:
    assert oolong("Answer: 19", 19) == 1.0
    assert oolong("21", 19) == pytest.approx(0.75**2)
    assert oolong("Label: 12", "[10]") == pytest.approx(0.75**2)  # a dataset's stored gold
    assert oolong("The count is 17", 19) == pytest.approx(0.75**2)
    assert oolong("no idea", 19) == 0.0


def test_oolong_labels_and_comparisons() -> None:
    assert oolong("entity", "['ENTITY']") == 1.0
    assert oolong("Answer: human being", "human being") == 1.0
    assert oolong("The first is less common than the second.", "less common than") == 1.0
    assert oolong("more common than, no wait: less common than", "less common than") == 1.0
    assert oolong("Answer: location", "human being") == 0.0
    # a long reply without a colon: only its last word counts, as upstream
    assert oolong_candidate("I think the most common label is billing") == "billing"
    assert oolong("I think the most common label is product feedback", "product feedback") == 0.0


def test_pairs_f1() -> None:
    gold = [["u1", "u2"], ["u1", "u3"], ["u2", "u3"]]
    assert pairs_f1("(u1, u2)\n(u1, u3)\n(u2, u3)", gold) == 1.0
    assert pairs_f1("(u2, u1)\n(u3, u1)\n(u3, u2)", gold) == 1.0  # unordered
    assert pairs_f1("[('u1', 'u2')]", gold) == pytest.approx(2 * 1 * (1 / 3) / (1 + 1 / 3))
    assert pairs_f1("(u1, u2)\n(u8, u9)", gold) == pytest.approx(0.4)
    assert pairs_f1("none", gold) == 0.0
    assert pairs_f1("", []) == 1.0
    assert parse_pairs("(u5, u5)") == set()


def test_set_f1() -> None:
    assert set_f1("Matt, Laura", ["Matt", "Laura"]) == 1.0
    assert set_f1("Answer: Matt and Sam", ["Matt", "Laura"]) == 0.5
    assert set_f1("nobody", ["Matt"]) == 0.0


def test_multiple_choice_extraction() -> None:
    for reply, letter in [
        ("B", "B"),
        ("(C) because", "C"),
        ("The correct answer is (D)", "D"),
        ("The correct answer is A.", "A"),
        ("Answer: B", "B"),
        ("**The correct answer is (C)**", "C"),
    ]:
        assert choice_letter(reply) == letter, reply
        assert multiple_choice(reply, letter) == 1.0
    assert choice_letter("The answer is a function") is None
    assert multiple_choice("I do not know.", "A") == 0.0
    assert multiple_choice("(A)", "B") == 0.0


def test_mrcr_needs_the_prefix_then_compares() -> None:
    gold = {"answer": "aBc12A tapir dreams of mud and rain.", "prefix": "aBc12"}
    assert mrcr("aBc12A tapir dreams of mud and rain.", gold) == 1.0
    assert mrcr("A tapir dreams of mud and rain.", gold) == 0.0
    assert 0.5 < mrcr("aBc12A tapir dreams of rain.", gold) < 1.0


def test_score_by_name() -> None:
    assert set(SCORERS) == {
        "exact",
        "contains",
        "oolong",
        "pairs_f1",
        "set_f1",
        "multiple_choice",
        "mrcr",
    }
    assert score("exact", "x", "x") == 1.0
    with pytest.raises(ValueError, match="unknown scorer 'f2'"):
        score("f2", "x", "x")
