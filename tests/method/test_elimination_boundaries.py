"""The elimination rules at their edges: what each detail says, where each bound falls, and the
leak rule's phrases read exactly off the templates.

tests/method/test_elimination.py has the cases; these pin what a plausible slip would move: a
threshold by one, a `<` for a `<=`, a phrase in a verdict, the text a detail quotes.
"""

from __future__ import annotations

import pytest

from evol.method.elimination import EliminationRules, Reason, check_answer, check_rewrite
from evol.method.leaks import PAPER_MARKERS, LeakDetector
from evol.method.textstats import normalize, word_count
from evol.method.verdicts import Verdict, parse_verdict

ON = EliminationRules()


def sentence(count: int, word: str = "light") -> str:
    return " ".join([word] * count)


# -- the leak rule: phrases read off the templates --------------------------------------------

TEMPLATE = (
    "You rewrite <Task> instructions.\n"  # 4 words with the tag: a phrase
    "$instruction\n"
    "Keep ${input} as it is\n"  # placeholders are not words: "keep as it is"
    "two words\n"  # too short to be a phrase
    "Answer in plain words with no title or label please\n"  # long: its 6-grams
    "</Task>\n"
)


def test_the_phrases_and_ngrams_of_a_template_are_exactly_these() -> None:
    leaks = LeakDetector.from_templates([TEMPLATE])
    assert leaks.phrases == tuple(
        dict.fromkeys(
            [
                *PAPER_MARKERS,
                "<task>",
                "</task>",
                "you rewrite task instructions",
                "keep as it is",
            ]
        )
    )
    words = ["answer", "in", "plain", "words", "with", "no", "title", "or", "label", "please"]
    assert leaks.ngrams == {tuple(words[i : i + 6]) for i in range(len(words) - 5)}


@pytest.mark.parametrize(
    ("line", "phrase"),
    [
        ("one two", None),  # 2 words
        ("one two three", "one two three"),  # 3: the shortest phrase
        ("one two three four five", "one two three four five"),  # 5: the longest
        ("one two three four five six", None),  # 6: only its 6-gram
        ("one two $instruction three", "one two three"),
        ("one two ${input} three", "one two three"),
    ],
)
def test_a_template_line_is_a_phrase_from_three_to_five_words(
    line: str, phrase: str | None
) -> None:
    leaks = LeakDetector.from_templates([line])
    assert leaks.phrases[len(PAPER_MARKERS) :] == ((phrase,) if phrase else ())
    six = line.split() == ["one", "two", "three", "four", "five", "six"]
    assert leaks.ngrams == ({tuple(line.split())} if six else set())


def test_blank_and_repeated_phrases_are_dropped() -> None:
    leaks = LeakDetector(["", "  ", "Given Prompt", "given   prompt", "<b>"])
    assert leaks.phrases == ("given prompt", "<b>")


@pytest.mark.parametrize(
    ("parent", "child", "fired"),
    [
        ("Explain X.", "Explain X, as the given prompt asks.", "given prompt"),
        ("Explain X.", "Explain X to a forgiven promptly person.", None),  # whole words only
        ("Explain X.", "Explain X. #Given Prompt#", "#given prompt#"),  # tags and marks first
        ("Explain X.", "Explain X in <task> form.", "<task>"),
        ("Explain the given prompt.", "Explain the given prompt twice.", None),  # its parent's
        ("Explain the given prompt.", "Explain the given prompt in <task> form.", "<task>"),
        ("Explain <task>.", "Explain <task>, as the given prompt asks.", "given prompt"),
        ("Explain X.", "Explain X: answer in plain words with no title.", "answer in plain words with no"),
        ("Answer in plain words with no title", "Answer in plain words with no title!", None),
        ("Explain X.", "In plain words with no title or label, explain X.", "in plain words with no title"),
    ],
)  # fmt: skip
def test_the_leak_named_is_the_first_new_one(parent: str, child: str, fired: str | None) -> None:
    leaks = LeakDetector.from_templates([TEMPLATE])
    failure = check_rewrite(parent, child, ON, leaks)
    if fired is None:
        assert failure is None
        return
    assert failure and failure.reason == Reason.PROMPT_LEAK
    assert failure.detail == f"the rewrite copies the prompt's words {fired!r}"


def test_no_detector_no_leak_rule() -> None:
    assert check_rewrite("Explain X.", "Explain X, as the given prompt asks.", ON, None) is None
    off = EliminationRules(leak=False)
    leaks = LeakDetector.from_templates([])
    assert check_rewrite("Explain X.", "Explain X, as the given prompt asks.", off, leaks) is None


# -- the rewrite's free checks ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("child", "reason", "detail"),
    [
        ("", Reason.EMPTY, "the rewrite is empty"),
        ("\n\t ", Reason.EMPTY, "the rewrite is empty"),
        ("EXPLAIN  tides", Reason.UNCHANGED, "the rewrite is its parent, word for word"),
        ("Ｅxplain tides", Reason.UNCHANGED, "the rewrite is its parent, word for word"),  # NFKC
        ("Explain tides!", None, None),  # punctuation is a change
    ],
)
def test_empty_and_unchanged_rewrites(child: str, reason: Reason | None, detail: str) -> None:
    failure = check_rewrite("Explain tides", child, ON)
    assert (failure.reason, failure.detail) == (reason, detail) if failure else reason is None


def test_growth_is_checked_only_for_a_known_operation() -> None:
    parent, child = "Explain tides", sentence(500)
    assert check_rewrite(parent, child, ON) is None  # no operation: no bound
    failure = check_rewrite(parent, child, ON, None, "deepen")
    assert failure and failure.detail == ("the rewrite grew from 2 to 500 words (deepen allows 62)")
    unknown = check_rewrite(parent, child, ON, None, "a-plugin-operation")  # in-depth bound
    assert unknown and unknown.detail.endswith("(a-plugin-operation allows 62)")


@pytest.mark.parametrize(
    ("operation", "parent_words", "bound"),
    [
        ("deepen", 59, 119),  # +60 while the parent has fewer than 60 words
        ("deepen", 60, 120),  # the two bounds meet
        ("deepen", 61, 122),  # then twice the parent
        ("concretize", 0, 60),
        ("breadth", 49, 149),  # +100 while the parent has fewer than 50 words
        ("breadth", 50, 150),
        ("breadth", 51, 153),  # then three times
        ("complicate_input", 0, 150),
        ("complicate_input", 300, 450),
    ],
)
def test_each_growth_bound_on_both_sides(operation: str, parent_words: int, bound: int) -> None:
    parent = sentence(parent_words, "tide")
    assert check_rewrite(parent, sentence(bound), ON, None, operation) is None
    failure = check_rewrite(parent, sentence(bound + 1), ON, None, operation)
    assert failure and failure.reason == Reason.OVERGROWN
    assert failure.detail == (
        f"the rewrite grew from {parent_words} to {bound + 1} words ({operation} allows {bound})"
    )


# -- the answer's rules -----------------------------------------------------------------------


@pytest.mark.parametrize("count", [79, 80, 81])
def test_a_sorry_answer_is_short_below_80_words_whatever_the_signals(count: int) -> None:
    answer = "I am sorry, " + sentence(count - 3)
    assert word_count(answer) == count
    for rules in (ON, EliminationRules(signals=False, stopwords=False)):
        failure = check_answer("Explain light", answer, rules)
        if count < 80:
            assert failure and failure.reason == Reason.SORRY
            assert failure.detail == f"the answer says sorry in {count} words"
        else:
            assert failure is None


def test_the_stopword_detail_shows_sixty_characters_of_the_answer_on_one_line() -> None:
    answer = "it is what it is,\nand that is all there is to it, and so it is, as it was before"
    failure = check_answer("Explain", answer, ON)
    shown = " ".join(answer.split())[:60]
    assert len(shown) == 60 and len(" ".join(answer.split())) > 60
    assert failure and failure.detail == (
        f"the answer is only stop words and punctuation: {shown!r}"
    )


@pytest.mark.parametrize(
    ("answer", "reason", "detail"),
    [
        (
            "Understood! Shall I go on?",
            Reason.NOT_A_TASK,
            "the answer starts with 'Understood' and ends with a question: nothing was asked",
        ),
        (
            "Thank you! Shall I go on?",
            Reason.NOT_A_TASK,
            "the answer starts with 'Thank' and ends with a question: nothing was asked",
        ),
        ("Thank goodness. Shall I go on?", None, None),
        ("Thanks you. Shall I go on?", None, None),
        ("Understood the task, sure? ", Reason.NOT_A_TASK, None),  # trailing space
        ("Sure. Which one?**", Reason.UNDERSPECIFIED, None),  # markdown after the question
        ('Sure. Which one?"', Reason.UNDERSPECIFIED, None),
        ("Sure. Which one?`)", Reason.UNDERSPECIFIED, None),
        ("Sure. Which one?_\n", Reason.UNDERSPECIFIED, None),
        ("Sure. Which one?'", Reason.UNDERSPECIFIED, None),
        ("Sure. Which one? X", None, None),  # a question inside, then more
        ("Sure. Which one?.", None, None),
        ("Surely. Which one?", None, None),
        (
            "Sure! Which one do you mean?",
            Reason.UNDERSPECIFIED,
            "the answer starts with 'Sure' and ends with a question: the task is under-specified",
        ),
    ],
)
def test_the_signals_read_the_first_words_and_the_last_mark(
    answer: str, reason: Reason | None, detail: str | None
) -> None:
    failure = check_answer("Explain the moon", answer, ON)
    assert (failure.reason if failure else None) == reason
    if detail:
        assert failure.detail == detail


def test_the_asks_for_information_detail_quotes_its_sentence() -> None:
    answer = "I can do that. Please provide the two tables, the units, and the year\nThanks."
    failure = check_answer("Explain", answer, ON)
    assert failure and failure.reason == Reason.ASKS_FOR_INFORMATION
    assert failure.detail == (
        "the answer asks for what is missing: "
        "'Please provide the two tables, the units, and the year'"
    )
    long = "Please provide " + sentence(40, "data")
    failure = check_answer("Explain", long, ON)
    assert failure and failure.detail == f"the answer asks for what is missing: {long[:80]!r}"


@pytest.mark.parametrize("count", [79, 80])
def test_please_provide_counts_only_in_a_short_answer(count: int) -> None:
    answer = sentence(count - 2, "data") + " please provide"
    failure = check_answer("Explain", answer, ON)
    assert (failure.reason if failure else None) == (
        Reason.ASKS_FOR_INFORMATION if count < 80 else None
    )


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (5, Reason.NOT_A_TASK),  # 15 words for 10: ROUGE-L exactly 0.8, exactly 1.5 times
        (6, None),
    ],
)
def test_an_answer_repeats_up_to_one_and_a_half_times_its_instruction(
    extra: int, expected: Reason | None
) -> None:
    instruction = "a b c d e f g h i j"
    answer = instruction + " " + " ".join(f"x{i}" for i in range(extra))
    failure = check_answer(instruction, answer, ON)
    assert (failure.reason if failure else None) == expected
    if failure:
        assert failure.detail == "the answer only repeats its instruction (ROUGE-L 0.80)"


def test_a_repeat_in_another_order_is_not_a_repeat() -> None:
    # Every word shared, so only the ROUGE-L itself (order) can tell: 2 * 5 / 20 = 0.5.
    assert check_answer("a b c d e f g h i j", "j i h g f e d c b a", ON) is None


def test_a_repeat_is_read_with_the_signals_off_never() -> None:
    rules = EliminationRules(signals=False)
    assert check_answer("a b c d e f g h i j", "a b c d e f g h i j", rules) is None


# -- the judge --------------------------------------------------------------------------------


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
    ("text", "expected"),
    [
        ("  Hello\u3000WORLD \n", "hello world"),  # NFKC folds the ideographic space
        ("Straße", "strasse"),  # casefold, not lower
        ("ﬁne", "fine"),  # NFKC
    ],
)
def test_normalize(text: str, expected: str) -> None:
    assert normalize(text) == expected
