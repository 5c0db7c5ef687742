"""The judge's reply read (evol.method.verdicts): every verdict phrase, a label that decides, and
prose read clause by clause."""

from __future__ import annotations

import pytest

from evol.method.verdicts import Verdict, parse_verdict


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("Equal", Verdict.EQUAL),
        ("Not Equal", Verdict.DIFFERENT),
        ("**Not Equal**", Verdict.DIFFERENT),
        ("Verdict: Equal.", Verdict.EQUAL),
        ("equal", Verdict.EQUAL),
        ("Different", Verdict.DIFFERENT),
        ("not equal because the second adds a word limit", Verdict.DIFFERENT),
        ("Both are essentially equal in what they ask.", Verdict.EQUAL),
        ("Same constraints, but different depth.", Verdict.DIFFERENT),
        ("Equal. The wording is different but the requirements are the same.", Verdict.EQUAL),
        ("Although the wording is different, they are equal.", Verdict.EQUAL),
        ("They are not the same: the second asks for code.", Verdict.DIFFERENT),
        ("The second is not different in any way.", Verdict.EQUAL),
        ("Equal? No. They differ in depth.", Verdict.DIFFERENT),
        ("The two are identical.", Verdict.EQUAL),
        ("Unequal.", Verdict.DIFFERENT),
        ("Hmm, hard to say.", Verdict.UNCLEAR),
        ("", Verdict.UNCLEAR),
        ("I would rather not judge.", Verdict.UNCLEAR),
    ],
)
def test_parse_verdict(reply: str, expected: Verdict) -> None:
    assert parse_verdict(reply) == expected


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("They are not identical.", Verdict.DIFFERENT),
        ("The two are not equivalent in scope.", Verdict.DIFFERENT),
        ("The second differs from the first.", Verdict.DIFFERENT),
        ("They differ.", Verdict.DIFFERENT),
        ("The second is no different.", Verdict.EQUAL),
        ("They are equivalent.", Verdict.EQUAL),
        ("The same.", Verdict.EQUAL),
        ("Same", Verdict.EQUAL),
        ("The same", Verdict.EQUAL),
        ("Not equal", Verdict.DIFFERENT),
        ("Answer: Not Equal", Verdict.DIFFERENT),
        ("Judgment - Equal", Verdict.EQUAL),
        ("Judgement: different", Verdict.DIFFERENT),
        ("Decision: Unequal!", Verdict.DIFFERENT),
        ("Result: the same\nbecause both ask for a list", Verdict.EQUAL),
        ("  **Different**  ", Verdict.DIFFERENT),
        ("Equally hard, but the second is different.", Verdict.DIFFERENT),
        ("equality", Verdict.UNCLEAR),
    ],
)
def test_every_verdict_phrase(reply: str, expected: Verdict) -> None:
    assert parse_verdict(reply) == expected


@pytest.mark.parametrize(
    "reply", ["They are not identical.", "Not equivalent: the second adds a case."]
)
def test_negated_sameness_is_a_difference(reply: str) -> None:
    assert parse_verdict(reply) == Verdict.DIFFERENT


@pytest.mark.parametrize(
    ("reply", "verdict"),
    [
        ("They are not identical.", Verdict.DIFFERENT),
        ("The two are not equivalent", Verdict.DIFFERENT),
        ("They are identical.", Verdict.EQUAL),
        ("The two are equivalent", Verdict.EQUAL),
    ],
)
def test_not_identical_and_not_equivalent_mean_different(reply: str, verdict: Verdict) -> None:
    assert parse_verdict(reply) is verdict


@pytest.mark.parametrize(
    ("reply", "verdict"),
    [
        ("My answer is different. They are equal.", "DIFFERENT"),
        ("Verdict: not equal. I first thought they were equal.", "DIFFERENT"),
        ("Conclusion: the two are equal. They differ.", "EQUAL"),
        ("Final answer: they are different, yes they are equal", "DIFFERENT"),
    ],
)
def test_a_labelled_verdict_decides_whatever_a_later_clause_says(reply: str, verdict: str) -> None:
    """The judge decides whether an evolution is kept: a later clause read over the verdict it
    named as its answer would drop an evolution or keep a copy."""
    assert parse_verdict(reply).name == verdict


@pytest.mark.parametrize(
    ("reply", "verdict"),
    [
        # A question decides nothing, even one that names a verdict.
        ("Are the two instructions the same?", "UNCLEAR"),
        # Negation by a contraction.
        ("They aren't equal.", "DIFFERENT"),
        ("The second isn't equivalent to the first.", "DIFFERENT"),
        # A likeness of one aspect, two words either side, is no verdict...
        ("Tone same.", "UNCLEAR"),
        ("Wording the same.", "UNCLEAR"),
        ("The words are identical.", "UNCLEAR"),
        ("The length is the same but the task is different.", "UNCLEAR"),
        ("they are the same tone and different", "UNCLEAR"),
        ("Different in topic wording but equal.", "UNCLEAR"),
        ("The first and second share topic but differ.", "UNCLEAR"),
        # ...and does not hide a verdict elsewhere in the clause, nor one further off.
        ("they differ in tone only and are equal", "EQUAL"),
        ("same subject matter entirely and equal", "EQUAL"),
        ("The rewrite is the same apart from style.", "EQUAL"),
        ("It is identical save for tone.", "EQUAL"),
    ],
)
def test_a_judges_prose_is_read_clause_by_clause(reply: str, verdict: str) -> None:
    """The judge decides whether an evolution is kept: a misread "equal" drops it, a misread
    "different" keeps a copy."""
    try:
        from evol.method.verdicts import parse_verdict
    except ImportError:  # 4f7dc9e, before the method package
        from evol.elimination import parse_verdict

    assert parse_verdict(reply).name == verdict
