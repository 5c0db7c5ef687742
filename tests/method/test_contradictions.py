"""Pairs of constraints no answer can meet (evol.method.contradictions), found by attack on
#26: each pair fails the checker together, is a contradiction, and is never drawn."""

from __future__ import annotations

import random

import pytest

from evol.method.constraints import Constraint, check
from evol.method.contradictions import contradicts
from evol.method.drawing import pick

pytestmark = pytest.mark.usefixtures("private_cache")


def test_all_capital_section_word_contradicts_few_capital_words() -> None:
    """multiple_sections with "SECTION" needs `num_sections` all-capital words ("SECTION 1"),
    which capital_word_frequency "less than n" (n <= num_sections) forbids: pick draws it."""
    sections = Constraint(
        id="detectable_format:multiple_sections",
        kwargs={"section_spliter": "SECTION", "num_sections": 3},
    )
    drawn = [
        pick(random.Random(s), [sections], ["change_case:capital_word_frequency"])
        for s in range(200)
    ]
    impossible = [
        c
        for c in drawn
        if c and c.kwargs["capital_relation"] == "less than" and c.kwargs["capital_frequency"] <= 3
    ]
    # The natural answer fails it, strictly.
    answer = "SECTION 1\nOne part.\nSECTION 2\nAnother part.\nSECTION 3\nThe last part."
    capital = Constraint(
        id="change_case:capital_word_frequency",
        kwargs={"capital_frequency": 3, "capital_relation": "less than"},
    )
    assert [v.strict for v in check(answer, [sections, capital])] == [True, False]
    assert contradicts(sections, capital)
    assert impossible == []


def test_two_required_keywords_together_exceed_a_letter_limit() -> None:
    """keywords:existence ['constant', 'shift'] needs three t's (the words cannot overlap);
    letter_frequency t "less than 3" allows two. Each word alone fits, so the pair is drawn
    (pick, seed 169: the carried keywords and this letter limit both come from one stream)."""
    keywords = Constraint(id="keywords:existence", kwargs={"keywords": ["constant", "shift"]})
    letters = Constraint(
        id="keywords:letter_frequency",
        kwargs={"letter": "t", "let_frequency": 3, "let_relation": "less than"},
    )
    assert [v.strict for v in check("constant shift", [keywords, letters])] == [True, False]
    assert contradicts(keywords, letters)
