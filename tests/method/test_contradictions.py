"""Pairs of constraints no answer can meet (evol.method.contradictions): IFEval's conflicts and
kwargs that clash, a text one constraint requires against another's limit, and the texts a
lineage requires added up. Then the pairs found by attack on #26: each pair fails the checker
together, is a contradiction, and is never drawn."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("if_verifiable", reason="the verify extra")

from evol.method import contradictions  # noqa: E402
from evol.method.constraints import KWARGS_SCHEMA, Constraint, check  # noqa: E402
from evol.method.contradictions import contradicts  # noqa: E402
from evol.method.drawing import pick  # noqa: E402
from tests.support.constraint_cases import (  # noqa: E402
    AT_LEAST,
    LESS,
    c,
    letters,
    limits_on,
    minimal_answers,
)

pytestmark = pytest.mark.usefixtures("private_cache")


WORDS_UNDER_100 = c("length_constraints:number_words", num_words=100, relation=LESS)


@pytest.mark.parametrize(
    ("first", "second", "expected"),
    [
        (c("change_case:english_capital"), c("change_case:english_lowercase"), True),
        (WORDS_UNDER_100, c("length_constraints:number_words", num_words=300, relation=AT_LEAST), True),
        (c("keywords:existence", keywords=["river", "Coast"]), c("keywords:forbidden_words", forbidden_words=["coast", "lake"]), True),
        (c("keywords:existence", keywords=["river"]), c("keywords:forbidden_words", forbidden_words=["lake"]), False),
        (c("keywords:frequency", keyword="river", frequency=2, relation=AT_LEAST), c("keywords:forbidden_words", forbidden_words=["river"]), True),
        (c("keywords:frequency", keyword="river", frequency=2, relation=LESS), c("keywords:forbidden_words", forbidden_words=["river"]), False),
        (c("keywords:frequency", keyword="river", frequency=1, relation=LESS), c("keywords:existence", keywords=["river"]), True),
        (c("keywords:frequency", keyword="river", frequency=2, relation=LESS), c("keywords:existence", keywords=["river"]), False),
        (c("length_constraints:nth_paragraph_first_word", num_paragraphs=2, nth_paragraph=1, first_word="river"), c("keywords:forbidden_words", forbidden_words=["river"]), True),
        (c("language:response_language", language="fr"), c("length_constraints:nth_paragraph_first_word", num_paragraphs=2, nth_paragraph=1, first_word="river"), True),
        (c("language:response_language", language="en"), c("length_constraints:nth_paragraph_first_word", num_paragraphs=2, nth_paragraph=1, first_word="river"), False),
        (c("language:response_language", language="ru"), c("keywords:letter_frequency", letter="q", let_frequency=3, let_relation=AT_LEAST), True),
        (c("language:response_language", language="ru"), c("keywords:letter_frequency", letter="q", let_frequency=3, let_relation=LESS), False),
        (c("language:response_language", language="de"), c("keywords:letter_frequency", letter="q", let_frequency=3, let_relation=AT_LEAST), False),
        (c("detectable_format:multiple_sections", section_spliter="Section", num_sections=2), c("change_case:english_lowercase"), True),
        (c("detectable_format:multiple_sections", section_spliter="Section", num_sections=2), c("change_case:english_capital"), True),
        (c("detectable_format:multiple_sections", section_spliter="SECTION", num_sections=2), c("change_case:english_capital"), False),
        # The letter checker ignores case: a letter never clashes with a case constraint.
        (c("keywords:letter_frequency", letter="q", let_frequency=3, let_relation=AT_LEAST), c("change_case:english_capital"), False),
        (c("punctuation:no_comma"), c("detectable_format:title"), False),
    ],
)  # fmt: skip
def test_contradictions(first, second, expected):
    assert contradicts(first, second) is expected
    assert contradicts(second, first) is expected


def test_a_lowercase_answer_cannot_have_capitalised_sections():
    """Why multiple_sections with "Section" contradicts english_lowercase: the checker matches
    the word's case exactly."""
    sections = c("detectable_format:multiple_sections", section_spliter="Section", num_sections=2)
    lowered = "section 1\nfirst part\nsection 2\nsecond part"
    verdicts = check(lowered, [sections, c("change_case:english_lowercase")])
    assert [v.strict for v in verdicts] == [False, True]
    assert check(lowered.replace("section", "Section"), [sections])[0].strict


@settings(max_examples=300, deadline=None)
@given(seed=st.integers(), data=st.data())
def test_a_required_text_the_limits_checker_rejects_is_a_contradiction(seed, data):
    """Each checker's own matching, run on the texts a drawn constraint needs: where the
    limit's checker rejects one, contradicts() says so, both ways."""
    rng = random.Random(seed)
    instruction_id = rng.choice(sorted(KWARGS_SCHEMA))
    drawn = c(instruction_id, **KWARGS_SCHEMA[instruction_id](rng))
    texts = minimal_answers(drawn)
    limit = data.draw(limits_on(texts))
    if any(not check(text, [limit])[0].strict for text in texts):
        assert contradicts(drawn, limit) and contradicts(limit, drawn)


@pytest.mark.parametrize(
    ("first", "second", "expected"),
    [
        (c("keywords:letter_frequency", letter="s", let_frequency=5, let_relation=LESS), c("detectable_format:multiple_sections", section_spliter="Section", num_sections=4), False),
        (c("keywords:letter_frequency", letter="s", let_frequency=4, let_relation=LESS), c("detectable_format:multiple_sections", section_spliter="Section", num_sections=4), True),
        (c("keywords:letter_frequency", letter="p", let_frequency=2, let_relation=LESS), c("detectable_content:postscript", postscript_marker="P.P.S"), True),
        (c("keywords:letter_frequency", letter="p", let_frequency=3, let_relation=LESS), c("detectable_content:postscript", postscript_marker="P.P.S"), False),
        (c("keywords:letter_frequency", letter="e", let_frequency=1, let_relation=AT_LEAST), c("keywords:existence", keywords=["ocean"]), False),
        (c("keywords:frequency", keyword="river", frequency=3, relation=LESS), c("keywords:frequency", keyword="river", frequency=3, relation=AT_LEAST), True),
        (c("keywords:letter_frequency", letter="r", let_frequency=4, let_relation=LESS), c("keywords:frequency", keyword="river", frequency=2, relation=AT_LEAST), True),
        (c("keywords:letter_frequency", letter="r", let_frequency=5, let_relation=LESS), c("keywords:frequency", keyword="river", frequency=2, relation=AT_LEAST), False),
        # The forbidden-words checker wants word boundaries: "help" is not in "helpful".
        (c("keywords:forbidden_words", forbidden_words=["help"]), c("keywords:existence", keywords=["helpful"]), False),
        (c("keywords:forbidden_words", forbidden_words=["questions"]), c("startend:end_checker", end_phrase="Any other questions?"), True),
        (c("keywords:forbidden_words", forbidden_words=["quest"]), c("startend:end_checker", end_phrase="Any other questions?"), False),
    ],
)  # fmt: skip
def test_contradictions_of_required_text(first, second, expected):
    assert contradicts(first, second) is expected
    assert contradicts(second, first) is expected


SECTIONS_CAPS = c("detectable_format:multiple_sections", section_spliter="SECTION", num_sections=3)


SECTIONS_TITLE = c("detectable_format:multiple_sections", section_spliter="Section", num_sections=3)


HELP_END = c("startend:end_checker", end_phrase="Is there anything else I can help with?")


def capitals(n: int, relation: str = LESS) -> Constraint:
    return c("change_case:capital_word_frequency", capital_frequency=n, capital_relation=relation)


@pytest.mark.parametrize(
    ("first", "second", "expected"),
    [
        # "SECTION 1" ... "SECTION 3" are three all-capital words (attack26b, finding 1).
        (SECTIONS_CAPS, capitals(3), True),
        (SECTIONS_CAPS, capitals(4), False),
        (SECTIONS_CAPS, capitals(3, AT_LEAST), False),
        (SECTIONS_TITLE, capitals(1), False),
        (SECTIONS_CAPS, c("change_case:english_lowercase"), True),
        (SECTIONS_CAPS, c("change_case:english_capital"), False),
        # The end and postscript checkers lowercase the answer: no capital is needed.
        (HELP_END, capitals(1), False),
        (c("detectable_content:postscript", postscript_marker="P.S."), capitals(1), False),
        # Words as IFEval counts them: the end phrase alone is eight.
        (HELP_END, c("length_constraints:number_words", num_words=8, relation=LESS), True),
        (HELP_END, c("length_constraints:number_words", num_words=9, relation=LESS), False),
        # Required texts add up (finding 2): "constant" and "shift" hold three t's ...
        (c("keywords:existence", keywords=["constant", "shift"]), letters("t", 3), True),
        (c("keywords:existence", keywords=["constant", "shift"]), letters("t", 4), False),
        # ... but a text inside another needs no copy of its own: "ant" is in "constant".
        (c("keywords:existence", keywords=["ant", "constant"]), letters("t", 3), False),
        (c("keywords:existence", keywords=["ant", "constant"]), letters("a", 2), False),
        (c("keywords:existence", keywords=["ant", "constant"]), letters("a", 1), True),
    ],
)  # fmt: skip
def test_contradictions_of_texts_required_together(first, second, expected):
    assert contradicts(first, second) is expected
    assert contradicts(second, first) is expected


def test_one_copy_serves_every_constraint_that_asks_for_a_text() -> None:
    """A keyword both required once and as the first word is one copy, not two."""
    carried = [
        c("keywords:existence", keywords=["river", "stone"]),
        c("length_constraints:nth_paragraph_first_word", num_paragraphs=1, nth_paragraph=1,
          first_word="river"),
    ]  # fmt: skip
    assert not contradictions.limits_clash([*carried, letters("r", 3)])  # "river": two r's
    assert contradictions.limits_clash([*carried, letters("r", 2)])


UNSATISFIABLE_PAIRS = [
    pytest.param(
        letters("e"),
        Constraint(id="keywords:existence", kwargs={"keywords": ["ocean", "river"]}),
        id="letter-e-absent-vs-keywords-with-e",
    ),
    pytest.param(
        letters("q"),
        Constraint(id="startend:end_checker", kwargs={"end_phrase": "Any other questions?"}),
        id="letter-q-absent-vs-end-phrase",
    ),
    pytest.param(
        letters("p"),
        Constraint(id="detectable_content:postscript", kwargs={"postscript_marker": "P.S."}),
        id="letter-p-absent-vs-postscript",
    ),
    pytest.param(
        letters("s", 3),
        Constraint(
            id="detectable_format:multiple_sections",
            kwargs={"section_spliter": "Section", "num_sections": 5},
        ),
        id="letter-s-under-3-vs-5-sections",
    ),
    pytest.param(
        Constraint(id="keywords:forbidden_words", kwargs={"forbidden_words": ["help", "ocean"]}),
        Constraint(
            id="startend:end_checker",
            kwargs={"end_phrase": "Is there anything else I can help with?"},
        ),
        id="forbidden-help-vs-end-phrase",
    ),
    pytest.param(
        Constraint(id="keywords:forbidden_words", kwargs={"forbidden_words": ["ocean", "section"]}),
        Constraint(
            id="detectable_format:multiple_sections",
            kwargs={"section_spliter": "Section", "num_sections": 2},
        ),
        id="forbidden-section-vs-sections",
    ),
    pytest.param(
        Constraint(
            id="keywords:frequency",
            kwargs={"keyword": "other", "frequency": 1, "relation": "less than"},
        ),
        Constraint(id="startend:end_checker", kwargs={"end_phrase": "Any other questions?"}),
        id="keyword-other-absent-vs-end-phrase",
    ),
    pytest.param(
        Constraint(
            id="keywords:frequency",
            kwargs={"keyword": "press", "frequency": 1, "relation": "less than"},
        ),
        Constraint(id="keywords:existence", kwargs={"keywords": ["expression", "ocean"]}),
        id="keyword-press-absent-vs-expression",  # IFEval counts substrings
    ),
]


@pytest.mark.parametrize(("a", "b"), UNSATISFIABLE_PAIRS)
def test_pairs_no_answer_can_meet_are_contradictions(a, b):
    assert contradicts(a, b) and contradicts(b, a)


# -- found by attack on #26 ---------------------------------------------------------------------


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
