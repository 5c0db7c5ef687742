"""What each rule says when it fires, to the character, and where each one's edge is.

A user reads `detail` to see why a record went; these pin it, and the edges the table tests in
test_elimination.py and test_cleaning.py leave between their cases.
"""

from __future__ import annotations

import pytest

from evol.errors import UsageError
from evol.method.cleaning import clean_reply, clean_rewrite
from evol.method.elimination import EliminationRules, Failure, Reason, check_answer, check_rewrite
from evol.method.leaks import PAPER_MARKERS, LeakDetector
from evol.method.operations import parse_weights
from evol.method.prompts import PromptSet
from evol.method.textstats import estimate_tokens, normalize, tokens
from evol.method.verdicts import Verdict, parse_verdict

ON = EliminationRules()
LEAKS = PromptSet.load().leak_detector()


@pytest.mark.parametrize(
    ("parent", "child", "detail"),
    [
        ("Explain X", "", "the rewrite is empty"),
        ("Explain X", "explain  X", "the rewrite is its parent, word for word"),
        (
            "Explain X",
            "Explain X, the given prompt.",
            "the rewrite copies the prompt's words 'given prompt'",
        ),
        (
            "Explain X",
            "Explain X. It must stay reasonable, something a person could understand.",
            "the rewrite copies the prompt's words 'reasonable something a person could understand'",
        ),
    ],
)
def test_rewrite_details(parent: str, child: str, detail: str) -> None:
    failure = check_rewrite(parent, child, ON, LEAKS)
    assert failure is not None and failure.detail == detail


@pytest.mark.parametrize(
    ("answer", "detail"),
    [
        ("it is what it is", "the answer is only stop words and punctuation: 'it is what it is'"),
        (
            "the " * 30,
            "the answer is only stop words and punctuation: '" + ("the " * 15)[:60] + "'",
        ),
        ("Sorry, no.", "the answer says sorry in 2 words"),
        (
            "Understood. What now?",
            "the answer starts with 'Understood' and ends with a question: nothing was asked",
        ),
        (
            "Sure, which one?",
            "the answer starts with 'Sure' and ends with a question: the task is under-specified",
        ),
        (
            "First please provide the table.\nThen please provide the key.",
            "the answer asks for what is missing: 'please provide the table.'",
        ),
        (
            "Please provide " + "x" * 100,
            "the answer asks for what is missing: '" + ("Please provide " + "x" * 100)[:80] + "'",
        ),
    ],
)
def test_answer_details(answer: str, detail: str) -> None:
    failure = check_answer("Describe the moon's phases", answer, ON)
    assert failure is not None and failure.detail == detail


def test_a_question_must_end_the_answer() -> None:
    # Only markdown, quotes and brackets may follow the question mark.
    assert check_answer("Explain", "Sure, which one?X", ON) is None
    assert check_answer("Explain", 'Sure, which one?**")', ON).reason == Reason.UNDERSPECIFIED


def test_an_empty_answer_with_the_stop_word_rule_off_is_no_signal() -> None:
    assert check_answer("Explain", "", EliminationRules(stopwords=False)) is None


def test_a_repeat_at_both_edges_fires() -> None:
    instruction = "one two three four five six seven eight nine ten"
    # 15 words (1.5 times the instruction) holding all 10 in order: ROUGE-L exactly 0.8.
    answer = instruction + " alpha beta gamma delta epsilon"
    failure = check_answer(instruction, answer, ON)
    assert failure and failure.detail == "the answer only repeats its instruction (ROUGE-L 0.80)"
    assert check_answer(instruction, answer + " zeta", ON) is None  # 16 words: longer


@pytest.mark.parametrize(
    "reply", ["They are not identical.", "Not equivalent: the second adds a case."]
)
def test_negated_sameness_is_a_difference(reply: str) -> None:
    assert parse_verdict(reply) == Verdict.DIFFERENT


def test_template_lines_become_phrases_at_their_edges() -> None:
    detector = LeakDetector.from_templates(
        [
            "two words\n"  # too short to be distinctive
            "exactly three words\n"
            "the five words line here\n"  # five: whole
            "a line of six words here\n"  # six: its one 6-gram
            "Keep $instruction as it stands\n"  # the placeholder is no word
            "<Context> and <INPUT>\n"
        ]
    )
    assert "two words" not in detector.phrases
    assert {"exactly three words", "the five words line here"} <= set(detector.phrases)
    assert "keep as it stands" in detector.phrases
    assert "a line of six words here" not in detector.phrases
    assert ("a", "line", "of", "six", "words", "here") in detector.ngrams
    assert {"<context>", "<input>"} <= set(detector.phrases)


def test_only_six_words_in_a_row_of_a_long_line_are_a_copy() -> None:
    detector = LeakDetector.from_templates(["one two three four five six seven\n"])
    assert detector.find("Do it.", "Do it: three four five six seven.") is None  # five words
    assert detector.find("Do it.", "Do it: two three four five six seven.") == (
        "two three four five six seven"
    )


def test_a_phrase_the_parent_held_in_other_punctuation_is_no_leak() -> None:
    parent = "Explain the given-prompt technique."
    child = "Explain the given-prompt technique with two examples."
    assert check_rewrite(parent, child, ON, LEAKS) is None


@pytest.mark.parametrize(
    ("reply", "text", "detail"),
    [
        ("<think>a</think>Explain X.", "Explain X.", "stripped a <think> block"),
        ("<think>only thinking</think>", "", "stripped a <think> block"),
        ("<THINK>shouting</THINK> Explain X.", "Explain X.", "stripped a <think> block"),
        ("<think>never done", "", "stripped a <think> block (never closed)"),
        (
            "Sure! Here is the new prompt: Explain X.",
            "Explain X.",
            "stripped preamble 'Sure! Here is the new prompt:'",
        ),
        ("Certainly!\nExplain X.", "Explain X.", "stripped preamble 'Certainly!'"),
        ("Prompt: Explain X.", "Explain X.", "stripped label 'Prompt:'"),
        ("```\nExplain X.\n```", "Explain X.", "stripped a code fence around the whole reply"),
        ('"Explain X."', "Explain X.", "stripped quotes around the whole reply"),
        ('""', "", "stripped quotes around the whole reply"),
        (
            "A\n\nThis version adds " + "a case " * 20,
            "A",
            "stripped an afterword " + repr(("This version adds " + "a case " * 20).strip()[:60]),
        ),
    ],
)
def test_cleaning_details(reply: str, text: str, detail: str) -> None:
    cleaned = clean_rewrite(reply)
    assert (cleaned.text, cleaned.detail) == (text, detail)


def test_a_wrapper_with_nothing_inside_is_left_for_the_rules() -> None:
    assert clean_rewrite("New instruction:").text == "New instruction:"


def test_curly_quotes_inside_keep_the_outer_ones() -> None:
    reply = "\u201cSay \u201d twice\u201d"
    assert clean_rewrite(reply).text == reply


@pytest.mark.parametrize(("length", "taken"), [(19, False), (20, True)])
def test_an_input_copied_into_the_rewrite_from_20_characters(length: int, taken: bool) -> None:
    data = "x" * length
    cleaned = clean_rewrite(f"Sort this: {data}", data)
    assert (cleaned.text == "Sort this:") is taken
    assert (cleaned.detail == "stripped a copy of the input") is taken


def test_an_answer_keeps_what_was_taken_off_it() -> None:
    assert clean_reply("<think>x</think>Yes.").stripped == ("a <think> block",)


def test_curly_apostrophes_are_straightened_in_tokens() -> None:
    assert tokens("Don\u2019t STOP") == ["don't", "stop"]


def test_the_token_estimate_is_four_thirds_of_the_words() -> None:
    assert estimate_tokens("one two three four five six") == 8


def test_weights_errors_name_the_operations() -> None:
    with pytest.raises(UsageError) as unknown:
        parse_weights("deepen,nope")
    assert str(unknown.value) == (
        "--operations: unknown operation 'nope'; known: add_constraints, deepen, concretize, "
        "increase_reasoning, complicate_input, breadth"
    )
    with pytest.raises(UsageError) as all_zero:
        parse_weights("deepen=0")
    assert str(all_zero.value) == "--operations: at least one operation needs a weight above 0"
    with pytest.raises(UsageError):
        parse_weights("deepen=inf")


def test_a_leaked_phrase_of_words_is_hidden_only_by_the_same_whole_words_in_the_parent() -> None:
    detector = LeakDetector(["given prompt"])
    assert detector.find("Praise the forgiven prompts", "Praise the given prompt") == "given prompt"
    assert detector.find("Praise the given prompt", "Praise the given prompt now") is None


# -- details found by mutation testing ---------------------------------------------------------


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


# -- found by the third mutation round ---------------------------------------------------------


# -- the judge's prose: what a clause decides -------------------------------------------------


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
