"""Details of the elimination rules that mutation testing found unguarded (`make mutate`).

Each test pins one exact behaviour that a planted bug changed without any other test failing:
the phrases a template yields, where a phrase may match in the parent, the n-grams of a text,
the details the rules write, the signals' exact edges, and ROUGE-L's 0.8 bound at 1.5 times.
"""

from __future__ import annotations

import pytest

from evol.method.elimination import EliminationRules, Failure, Reason, check_answer, check_rewrite
from evol.method.leaks import PAPER_MARKERS, LeakDetector
from evol.method.textstats import normalize
from evol.method.verdicts import Verdict, parse_verdict

RULES = EliminationRules()
TEMPLATE = """<Mixed_Tag>
Rewrite $instruction now please
Rewrite ${instruction} again please
One two three
one two three four five six
alpha bravo charlie delta echo foxtrot golf
</Mixed_Tag>"""


def test_a_template_yields_its_tags_its_short_lines_whole_and_the_6_grams_of_long_ones() -> None:
    detector = LeakDetector.from_templates([TEMPLATE])
    # Tags in any case; placeholders are not words; 3 to 5 words whole; 6 or more as 6-grams.
    assert detector.phrases == (
        *(normalize(marker) for marker in PAPER_MARKERS),
        "<mixed_tag>",
        "</mixed_tag>",
        "rewrite now please",
        "rewrite again please",
        "one two three",
    )
    assert detector.ngrams == {
        ("one", "two", "three", "four", "five", "six"),
        ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot"),
        ("bravo", "charlie", "delta", "echo", "foxtrot", "golf"),
    }


@pytest.mark.parametrize(
    "child",
    [
        "golf",  # the last word of a long template line
        "charlie delta echo foxtrot golf",  # its last five
        "Explain why the sky is blue",
    ],
)
def test_fewer_than_6_words_of_a_long_template_line_is_no_leak(child: str) -> None:
    assert LeakDetector.from_templates([TEMPLATE]).find("Name a colour", child) is None


def test_a_copied_6_gram_is_named_as_its_words() -> None:
    detector = LeakDetector.from_templates([TEMPLATE])
    found = detector.find("Name a colour", "Name a colour: alpha bravo charlie delta echo foxtrot")
    assert found == "alpha bravo charlie delta echo foxtrot"


def test_a_phrase_of_words_is_looked_for_in_the_parents_words_not_its_punctuation() -> None:
    # The parent said "given, prompt": as words it holds the phrase, so the child copies nothing.
    detector = LeakDetector(["given prompt"])
    assert detector.find("Praise the given, prompt", "Praise the given prompt twice") is None
    assert detector.find("Praise the prompt", "Praise the given prompt") == "given prompt"


def test_a_phrase_of_words_is_in_the_parent_only_as_whole_words() -> None:
    detector = LeakDetector(["given prompt"])
    assert detector.find("Praise the forgiven prompts", "Praise the given prompt") == (
        "given prompt"
    )


@pytest.mark.parametrize(
    ("child", "failure"),
    [
        (" \n ", Failure(Reason.EMPTY, "the rewrite is empty")),
        (
            "  name A  colour ",
            Failure(Reason.UNCHANGED, "the rewrite is its parent, word for word"),
        ),
    ],
)
def test_the_free_checks_say_exactly_why(child: str, failure: Failure) -> None:
    assert check_rewrite("Name a colour", child, RULES) == failure


def test_a_stop_word_answer_is_shown_folded_to_60_characters() -> None:
    answer = "the  a an\nand of the to of and a the the a an and of the to of and a the and"
    shown = "the a an and of the to of and a the the a an and of the to o"
    assert len(shown) == 60
    assert check_answer("x", answer, RULES) == Failure(
        Reason.STOPWORDS_ONLY, f"the answer is only stop words and punctuation: {shown!r}"
    )


@pytest.mark.parametrize("answer", ["", "?", "...?"])
def test_an_answer_without_words_passes_when_the_stop_word_rule_is_off(answer: str) -> None:
    assert check_answer("Name a colour", answer, EliminationRules(stopwords=False)) is None


@pytest.mark.parametrize(
    ("answer", "failure"),
    [
        (
            "Sure, which one?",
            Failure(
                Reason.UNDERSPECIFIED,
                "the answer starts with 'Sure' and ends with a question: the task is "
                "under-specified",
            ),
        ),
        ("Sure, which one? X", None),  # only space, markdown and quotes may follow the "?"
        ("Sure, which one?X", None),
        (
            "Please provide the text. Then please provide its language.",
            Failure(
                Reason.ASKS_FOR_INFORMATION,
                "the answer asks for what is missing: "
                "'Please provide the text. Then please provide its language.'",
            ),
        ),
        (
            "I can. Please provide the text\nand its language.",
            Failure(
                Reason.ASKS_FOR_INFORMATION,
                "the answer asks for what is missing: 'Please provide the text'",
            ),
        ),
        (
            "Please provide " + "x" * 64 + "ABCDEF",  # 80 characters from "Please", then more
            Failure(
                Reason.ASKS_FOR_INFORMATION,
                "the answer asks for what is missing: 'Please provide " + "x" * 64 + "A'",
            ),
        ),
    ],
)
def test_the_signals_read_exactly_this(answer: str, failure: Failure | None) -> None:
    assert check_answer("Name a colour", answer, RULES) == failure


@pytest.mark.parametrize(
    ("answer", "failure"),
    [
        # 4 words, then 6 (1.5 times) holding all 4 in order: ROUGE-L 2*4/10 = 0.8 exactly.
        (
            "Sort these four numbers for me",
            Failure(Reason.NOT_A_TASK, "the answer only repeats its instruction (ROUGE-L 0.80)"),
        ),
        ("Sort these four numbers for me now", None),  # 7 words: longer than 1.5 times
        ("Sort these four apples for me", None),  # 3 of 4 words: ROUGE-L 0.6
    ],
)
def test_an_answer_that_repeats_its_instruction_at_the_bounds(
    answer: str, failure: Failure | None
) -> None:
    assert check_answer("Sort these four numbers", answer, RULES) == failure


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
