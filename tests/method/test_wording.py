"""How evol.method.wording reads a negation: one that governs a count's bound turns it round, one
that governs a forbidden word forbids it, and one elsewhere in the text does neither
(attack26b findings 3 and 4). Tables of real phrasings, then properties over token soups:
any text gives a verdict (no crash), and a sentence's verdict does not depend on the
sentences before it. Then every constraint's own IFEval wording, a table of what a rewrite must
say for each, and which constraints are left to the judge (#26).
"""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

pytest.importorskip("if_verifiable", reason="the verify extra")

from evol.method.constraints import KWARGS_SCHEMA, Constraint  # noqa: E402
from evol.method.drawing import describe  # noqa: E402
from evol.method.wording import UNWORDED, judged, unstated  # noqa: E402

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
        # A negation before the bound turns it round (attack26b's four), even with a verb
        # between them ("not be less than"): the bound read alone would pass the rewrite as
        # stating the constraint.
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
        # They require the words: a negation word elsewhere in the sentence ("no exceptions")
        # does not pass them as forbidding them.
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


# -- every constraint's wording (#26) ----------------------------------------------------------


def c(cid: str, **kwargs: Any) -> Constraint:
    return Constraint(id=cid, kwargs=kwargs)


@pytest.mark.usefixtures("private_cache")  # describe() builds a checker, which needs punkt
@pytest.mark.parametrize("draw", range(12))
def test_ifevals_own_wording_states_every_constraint_and_a_bare_task_none(draw: int) -> None:
    rng = random.Random(draw)
    for cid, make in sorted(KWARGS_SCHEMA.items()):
        constraint = Constraint(id=cid, kwargs=make(rng))
        assert unstated(f"Write about the sea. {describe(constraint)}", constraint) is None
        assert unstated("Write about the sea.", constraint) is not None, cid


@pytest.mark.usefixtures("private_cache")  # describe() builds a checker, which needs punkt
@pytest.mark.parametrize("draw", range(12))
def test_a_count_said_the_other_way_round_is_garbled(draw: int) -> None:
    rng = random.Random(draw)
    turned = {"less than": "at least", "at least": "less than"}
    for cid, make in sorted(KWARGS_SCHEMA.items()):
        constraint = Constraint(id=cid, kwargs=make(rng))
        relation = next((v for k, v in constraint.kwargs.items() if k.endswith("relation")), None)
        if relation is None:
            continue
        reversed_ = describe(constraint).replace(relation, turned[relation])
        assert (unstated(f"Write. {reversed_}", constraint) or "").startswith("garbled"), cid


AT_LEAST_300 = c("length_constraints:number_words", num_words=300, relation="at least")
LESS_THAN_300 = c("length_constraints:number_words", num_words=300, relation="less than")


@pytest.mark.parametrize(
    ("constraint", "rewrite", "expected"),
    [
        (AT_LEAST_300, "Write an essay of at least 300 words.", None),
        (AT_LEAST_300, "Write an essay of no fewer than 300 words.", None),
        (AT_LEAST_300, "Write an essay of 300 words or more.", None),
        (AT_LEAST_300, "Write an essay of more than 300 words.", None),  # implies at least
        (AT_LEAST_300, "Write a 300-word essay.", None),  # a bare count: about exactly
        (AT_LEAST_300, "Write an essay in fewer than 300 words.", "garbled"),
        (AT_LEAST_300, "Write an essay of at most 300 words.", "garbled"),
        (AT_LEAST_300, "Write an essay, 300 words at most.", "garbled"),
        # A bound after the unit is read with words after it too, in two words or one.
        (AT_LEAST_300, "Write an essay, 300 words at most, on tides.", "garbled"),
        (AT_LEAST_300, "Write an essay, 300 words maximum, on tides.", "garbled"),
        (AT_LEAST_300, "Write an essay of under 300 words.", "garbled"),
        (AT_LEAST_300, "Write a long essay.", "lost"),
        (AT_LEAST_300, "Write 300 essays.", "lost"),  # the count without its unit
        # A unit is read up to 4 words after its count ("4 short markdown bullet points"),
        # not further: the fifth word on is about something else.
        (AT_LEAST_300, "Use at least 300 words; quote under 300 of the Latin words.", "garbled"),
        (AT_LEAST_300, "Use at least 300 words; quote under 300 of the old Latin words.", None),
        (LESS_THAN_300, "Write an essay of under 300 words.", None),
        (LESS_THAN_300, "Keep the essay shorter than 300 words.", None),
        (LESS_THAN_300, "Use fewer than 300 words; quote 300 words of it.", None),
        (LESS_THAN_300, "Write a 300-word essay.", "garbled"),  # allows 300
        (LESS_THAN_300, "Write at most 300 words.", "garbled"),  # allows 300 too
        (LESS_THAN_300, "Write at least 300 words.", "garbled"),
        (c("keywords:frequency", keyword="tide", frequency=2, relation="at least"),
         "Describe the coast, using the word tide at least twice.", None),
        (c("keywords:frequency", keyword="tide", frequency=2, relation="at least"),
         "Describe the coast, using the word tide fewer than 2 times.", "garbled"),
        (c("keywords:frequency", keyword="tide", frequency=2, relation="at least"),
         "Describe the coast at least twice.", "lost"),  # the keyword is gone
        (c("detectable_format:number_bullet_lists", num_bullets=4),
         "List its parts in exactly four bullet points.", None),
        (c("detectable_format:number_bullet_lists", num_bullets=4),
         "List its parts in at least 4 bullet points.", "garbled"),
        (c("length_constraints:number_paragraphs", num_paragraphs=3),
         "Write 3 paragraphs.", "lost"),  # without the *** divider its checker counts one
        (c("length_constraints:number_paragraphs", num_paragraphs=3),
         "Write 3 paragraphs separated by ***.", None),
        (c("keywords:forbidden_words", forbidden_words=["boy", "elevator"]),
         "Describe a ride; the words boy and elevator must not appear.", None),
        (c("keywords:forbidden_words", forbidden_words=["boy", "elevator"]),
         "Describe a ride. Use the words boy and elevator.", "garbled"),
        (c("keywords:existence", keywords=["chip", "revenue"]),
         "Explain it. Mention chip and revenue.", None),
        (c("keywords:existence", keywords=["chip", "revenue"]),
         "Explain it. Do not include chip or revenue.", "garbled"),
        (c("keywords:existence", keywords=["chip", "revenue"]),
         "Explain microchips and revenues.", "lost"),  # whole words only
        (c("keywords:letter_frequency", letter="z", let_frequency=3, let_relation="at least"),
         "Use the letter 'z' at least 3 times.", None),
        (c("keywords:letter_frequency", letter="z", let_frequency=3, let_relation="at least"),
         "Use at least 3 zebras.", "lost"),
        (c("language:response_language", language="mr"), "Reply in Marathi only.", None),
        (c("language:response_language", language="mr"), "Reply in Hindi only.", "lost"),
        (c("detectable_format:multiple_sections", section_spliter="Section", num_sections=2),
         "Write 2 sections headed Section 1 and Section 2.", None),
        (c("detectable_format:multiple_sections", section_spliter="SECTION", num_sections=2),
         "Write 2 sections headed Section 1 and Section 2.", "lost"),  # its checker's case
        (c("length_constraints:nth_paragraph_first_word", num_paragraphs=3, nth_paragraph=2,
           first_word="strain"), "Write 3 paragraphs; the second one starts with strain.", None),
        (c("length_constraints:nth_paragraph_first_word", num_paragraphs=3, nth_paragraph=2,
           first_word="strain"), "Write 3 paragraphs; one starts with strain.", "lost"),
        (c("length_constraints:nth_paragraph_first_word", num_paragraphs=3, nth_paragraph=2,
           first_word="strain"), "Write 3 paragraphs; the 2nd starts with strain.", None),
        (c("length_constraints:nth_paragraph_first_word", num_paragraphs=2, nth_paragraph=2,
           first_word="strain"), "Write 2 paragraphs; one starts with strain.", "lost"),
        # A single paragraph: which one is not to be said.
        (c("length_constraints:nth_paragraph_first_word", num_paragraphs=1, nth_paragraph=1,
           first_word="strain"), "Write one paragraph that starts with strain.", None),
        (c("detectable_content:postscript", postscript_marker="P.P.S"),
         "End with a note after P.P.S.", None),
        (c("detectable_content:postscript", postscript_marker="P.P.S"),
         "End with a note after P.S.", "lost"),
        (c("startend:end_checker", end_phrase="Any other questions?"),
         'Close with "any other questions?" and nothing after it.', None),
        (c("detectable_format:constrained_response"), "Answer yes or no.", "lost"),
        (c("punctuation:no_comma"), "Write the story without a single comma.", None),
        (c("punctuation:no_comma"), "Write the story.", "lost"),
        (c("change_case:english_lowercase"), "Reply in lower case only.", None),
        (c("change_case:english_capital"), "Reply in ALL CAPS.", None),
        (c("detectable_format:json_format"), "Reply as a Json object.", None),
        (c("detectable_format:title"), "Give it a title like <<this>>.", None),
        (c("combination:two_responses"), "Give two answers split by ******.", None),
        (c("startend:quotation"), "Wrap it in double quotes.", None),
        (c("startend:quotation"), "Wrap it up.", "lost"),
    ],
)  # fmt: skip
def test_what_a_rewrite_must_say(constraint: Constraint, rewrite: str, expected: str | None):
    found = unstated(rewrite, constraint)
    assert (found.split(":")[0] if found else None) == (expected and expected.split(":")[0])
    if expected == "lost" and constraint.id in UNWORDED:
        assert found == "lost: no word of it is left"


@pytest.mark.parametrize(("nth", "name"), [(1, "first"), (2, "second"), (5, "fifth")])
def test_a_rewrite_that_loses_which_paragraph_is_told_its_position_in_words(
    nth: int, name: str
) -> None:
    """The reason an eliminated record carries names the paragraph as the constraint does."""
    constraint = c(
        "length_constraints:nth_paragraph_first_word",
        num_paragraphs=5,
        nth_paragraph=nth,
        first_word="strain",
    )
    found = unstated("Write 5 paragraphs; one starts with strain.", constraint)
    assert found == f"lost: it never says which paragraph (the {name})"


def test_the_judge_is_asked_about_the_unworded_constraints_only() -> None:
    constraints = [c("punctuation:no_comma"), AT_LEAST_300, c("detectable_format:title")]
    assert [x.id for x in judged(constraints)] == [
        "punctuation:no_comma",
        "detectable_format:title",
    ]
    assert set(UNWORDED) < set(KWARGS_SCHEMA)


@pytest.mark.parametrize(
    ("constraint", "rewrite", "expected"),
    [
        # Where the bound sits: at the very start of the rewrite (no word before it to read a
        # negation from), after "don't" split into two tokens, after fillers ("a total of").
        (words(LESS), "Fewer than 150 words: explain tides.", None),
        (words(AT_LEAST), "150 words at least: explain tides.", None),
        (words(AT_LEAST), "Never write fewer than 150 words on tides.", None),
        (words(AT_LEAST), "Don't make the text fewer than 150 words.", None),
        (words(LESS), "Explain tides in fewer than a total of 150 words.", None),
        # The count said first without its unit, then with it: the second mention counts.
        (words(LESS), "Give 150 examples of tides in fewer than 150 words.", None),
        # A count in one word ("twice") is read with the bound said after it.
        (
            c("keywords:frequency", keyword="moon", frequency=2, relation=LESS),
            "Use the word moon twice or fewer.",
            "garbled: it says at most 2 times, where the constraint is less than 2 times",
        ),
        # A number said in other units is no count of times.
        (
            c("keywords:frequency", keyword="moon", frequency=3, relation=AT_LEAST),
            "Use the word moon in 3 sentences.",
            "lost: it never says at least 3 times",
        ),
        # The reason names what is said and what the constraint wants, in its own words.
        (
            words(LESS),
            "Explain tides in 150 words.",
            "garbled: it says 150 words with no 'less than', where the constraint is less "
            "than 150 words",
        ),
        (
            words(AT_LEAST),
            "Explain tides in fewer than 150 words.",
            "garbled: it says fewer than 150 words, where the constraint is at least 150 words",
        ),
        (words(LESS), "Explain tides.", "lost: it never says less than 150 words"),
        (
            c("detectable_format:number_bullet_lists", num_bullets=3),
            "Explain tides.",
            "lost: it never says 3 bullets",
        ),
        # Every problem is named, one after the other.
        (
            c("keywords:letter_frequency", letter="q", let_frequency=3, let_relation=AT_LEAST),
            "Explain tides.",
            "lost: it never says at least 3 times; lost: it never names the letter 'q'",
        ),
        (
            c("keywords:letter_frequency", letter="q", let_frequency=3, let_relation=AT_LEAST),
            "Explain tides, using the letter 'q' at least 3 times.",
            None,
        ),
    ],
)  # fmt: skip
def test_the_reason_a_rewrite_loses_a_count_is_read_wherever_the_bound_sits(
    constraint: Constraint, rewrite: str, expected: str | None
) -> None:
    """What `constraint_lost` eliminates on, and the detail the eliminated record carries."""
    assert unstated(rewrite, constraint) == expected
