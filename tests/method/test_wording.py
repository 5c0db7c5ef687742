"""How evol.method.wording reads a negation: one that governs a count's bound turns it round, one
that governs a forbidden word forbids it, and one elsewhere in the text does neither
(attack26b findings 3 and 4). Tables of real phrasings, then properties over token soups:
any text gives a verdict (no crash), and a sentence's verdict does not depend on the
sentences before it.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

pytest.importorskip("if_verifiable", reason="the verify extra")

from evol.method.constraints import Constraint  # noqa: E402
from evol.method.wording import unstated  # noqa: E402

LESS, AT_LEAST = "less than", "at least"


def words(relation: str, count: int = 150) -> Constraint:
    return Constraint(
        id="length_constraints:number_words", kwargs={"num_words": count, "relation": relation}
    )


FORBIDDEN = Constraint(id="keywords:forbidden_words", kwargs={"forbidden_words": ["apple", "pear"]})


def verdict(rewrite: str, constraint: Constraint) -> str | None:
    found = unstated(rewrite, constraint)
    return found.split(":")[0] if found else None


@pytest.mark.parametrize(
    ("relation", "rewrite", "expected"),
    [
        # A negation before the bound turns it round (attack26b's four).
        (LESS, "Explain tides. Your answer should not be less than 150 words.", "garbled"),
        (LESS, "Explain tides. Do not write fewer than 150 words.", "garbled"),
        (AT_LEAST, "Explain tides. Do not write more than 150 words.", "garbled"),
        (AT_LEAST, "Explain tides. It must not be at least 150 words long.", "garbled"),
        # ... and so may state the constraint.
        (AT_LEAST, "Explain tides. Do not write fewer than 150 words.", None),
        (AT_LEAST, "You must not make your answer shorter than 150 words.", None),
        (LESS, "Explain tides. You mustn't write 150 words or more.", None),
        (AT_LEAST, "Explain tides without exceeding 150 words.", "garbled"),
        (AT_LEAST, "It should never be exactly 150 words.", "garbled"),
        (AT_LEAST, "It should not be 150 words long.", "garbled"),
        # A negation of something else, or in another clause or sentence, does not.
        (LESS, "Explain tides. Do not use commas. Answer with less than 150 words.", None),
        (LESS, "Explain tides, don't use commas, and answer in fewer than 150 words.", None),
        (LESS, "Write a poem with no title in fewer than 150 words.", None),
        (AT_LEAST, "Don't forget to write at least 150 words.", None),
        (AT_LEAST, "Do not stop: write at least 150 words.", None),
        (LESS, "Use the letter 't' and answer with less than 150 words.", None),
        (LESS, "Answer with no more than 149 words, and in fewer than 150 words.", None),
        # Phrases that hold their own negation are read as before.
        (AT_LEAST, "Write no fewer than 150 words.", None),
        (LESS, "Write no more than 150 words.", "garbled"),
    ],
)
def test_a_negation_governs_the_bound_it_comes_before(relation, rewrite, expected):
    assert verdict(rewrite, words(relation)) == expected


@pytest.mark.parametrize(
    ("rewrite", "expected"),
    [
        ("Describe fruit. Mention apple and pear, with no exceptions.", "garbled"),
        ("Describe fruit. Mention apple and pear with no exceptions.", "garbled"),
        ("Describe banana fruit, apple and pear.", "garbled"),  # "ban" is no negation
        ("Describe fruit. Do not use the words apple or pear.", None),
        ("Describe fruit without the words apple and pear.", None),
        ("Describe fruit; apple and pear must not appear.", None),
        ("Describe fruit. Apple and pear are forbidden.", None),
        ("Describe fruit. Avoid apple, pear.", None),
    ],
)
def test_a_negation_must_govern_the_forbidden_words(rewrite, expected):
    assert verdict(rewrite, FORBIDDEN) == expected


# Token soups: negations, bounds, counts, units, clause marks, the keywords.
VOCABULARY = [
    "not", "no", "never", "don't", "cannot", "without", "avoid", "forget", "and", "but", "only",
    "less", "fewer", "more", "than", "at", "least", "most", "under", "over", "exactly", "or",
    "exceeding", "be", "write", "a", "total", "of", "words", "word", "3", "7", "twenty", "t",
    "'t'", "apple", "pear", "mention", "must", "appear", "forbidden", ",", ".", ";", ":", "\n",
    "!", "?", "n't", "'", "’",
]  # fmt: skip
SOUP = st.lists(st.sampled_from(VOCABULARY), max_size=60).map(" ".join)
CONSTRAINTS = st.sampled_from([words(LESS), words(AT_LEAST), words(LESS, 7), FORBIDDEN])


@given(text=SOUP, constraint=CONSTRAINTS)
def test_any_soup_gets_a_verdict(text: str, constraint: Constraint) -> None:
    found = unstated(text, constraint)
    assert found is None or found.startswith(("lost", "garbled"))


@given(text=st.text(max_size=300), constraint=CONSTRAINTS)
def test_any_text_gets_a_verdict(text: str, constraint: Constraint) -> None:
    found = unstated(text, constraint)
    assert found is None or found.startswith(("lost", "garbled"))


@given(before=SOUP)
def test_a_stated_count_stays_stated_after_any_sentence_without_it(before: str) -> None:
    """No negation reaches across a sentence end; the soup names no 150, so the last
    sentence alone decides."""
    assert unstated(f"{before}. Answer with fewer than 150 words.", words(LESS)) is None
    assert unstated(f"{before}. Write at least 150 words.", words(AT_LEAST)) is None
    assert verdict(f"{before}. Do not write fewer than 150 words.", words(LESS)) == "garbled"
    assert verdict(f"{before}. Do not write more than 150 words.", words(AT_LEAST)) == "garbled"


@given(before=SOUP.filter(lambda text: "apple" not in text and "pear" not in text))
def test_forbidding_is_read_in_its_own_sentence(before: str) -> None:
    assert unstated(f"{before}. Do not use the words apple or pear.", FORBIDDEN) is None
    found = unstated(f"{before}. Mention apple and pear, with no exceptions.", FORBIDDEN)
    assert verdict(f"{before}. Mention apple and pear, with no exceptions.", FORBIDDEN) == (
        "garbled"
    ), found


def test_a_long_soup_is_read_whole() -> None:
    """Thousands of negations and bounds: a verdict (each mention looks back a fixed number
    of tokens, so the work grows with the text, not with its square)."""
    text = " ".join(["do not write fewer than 150 words, no apple"] * 3000)
    assert verdict(text, words(LESS)) == "garbled"
    assert verdict(text + ". Avoid pear.", FORBIDDEN) is None
