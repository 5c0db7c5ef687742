"""The elimination rules (evol.method.elimination), case by case, with every threshold tried on
both sides; what each rule says when it fires, to the character, and where each bound falls."""

from __future__ import annotations

from pathlib import Path

import pytest

from evol.method.elimination import (
    REPEAT_SIMILARITY,
    EliminationRules,
    Failure,
    Reason,
    check_answer,
    check_rewrite,
)
from evol.method.leaks import LeakDetector
from evol.method.prompts import RUN_PROMPT_NAMES, PromptSet
from evol.method.textstats import word_count

ON = EliminationRules()
OFF = EliminationRules(judge=False, sorry=False, stopwords=False, leak=False, signals=False)
LEAKS = PromptSet.load().leak_detector()


def reason_of(failure) -> Reason | None:
    return failure.reason if failure else None


@pytest.mark.parametrize(
    ("parent", "child", "rules", "expected"),
    [
        ("Explain X", "", ON, Reason.EMPTY),
        ("Explain X", "  \n ", OFF, Reason.EMPTY),
        ("Explain X", "  explain   x ", ON, Reason.UNCHANGED),
        ("Explain X", "Explain X", OFF, Reason.UNCHANGED),
        ("Explain X", "#Rewritten Prompt#: Explain X in depth", ON, Reason.PROMPT_LEAK),
        ("Explain X", "Given prompt: explain X with an example", ON, Reason.PROMPT_LEAK),
        ("Explain X", "Here is the created prompt: explain X", ON, Reason.PROMPT_LEAK),
        ("Explain X", "Explain X. <input> none </input>", ON, Reason.PROMPT_LEAK),
        ("Explain X", "Explain X.\nInput: (none)", ON, Reason.PROMPT_LEAK),
        ("Explain X", "Explain X. New instruction: add a table", ON, Reason.PROMPT_LEAK),
        ("Explain X", "The rewritten prompt asks to explain X", OFF, None),
        ("Summarize the given prompt", "Summarize the given prompt in 3 bullets", ON, None),
        ("Explain X", "Explain X with two examples from biology", ON, None),
        ("Explain X", "Explain X one step at a time, with a table", ON, None),
    ],
)
def test_check_rewrite(
    parent: str, child: str, rules: EliminationRules, expected: Reason | None
) -> None:
    assert reason_of(check_rewrite(parent, child, rules, LEAKS)) == expected


@pytest.mark.parametrize("phrase", LEAKS.phrases)
def test_every_leak_phrase_fires_unless_the_parent_had_it(phrase: str) -> None:
    child = f"Explain photosynthesis. {phrase} Use two examples."
    failure = check_rewrite("Explain photosynthesis.", child, ON, LEAKS)
    assert failure and failure.reason == Reason.PROMPT_LEAK and phrase in failure.detail
    assert check_rewrite(f"Explain {phrase}", f"Explain {phrase} twice.", ON, LEAKS) is None


@pytest.mark.parametrize("name", RUN_PROMPT_NAMES)  # evol score's prompts are no evolving prompt
def test_a_long_line_of_any_template_copied_in_part_is_a_leak(name: str) -> None:
    prompts = PromptSet.load()
    lines = [line for line in prompts[name].text.splitlines() if len(line.split()) >= 8]
    for line in lines:
        words = line.replace("$", "").split()
        copied = " ".join(words[1:7])  # six words from the middle of the line
        child = f"Describe the water cycle. {copied}."
        failure = check_rewrite("Describe the water cycle.", child, ON, LEAKS)
        assert failure and failure.reason == Reason.PROMPT_LEAK, (name, copied)


def test_the_leak_rule_follows_templates_given_with_prompts(tmp_path: Path) -> None:
    (tmp_path / "deepen.txt").write_text(
        "Make the instruction deeper, Captain Flint commands it today.\n$instruction\n"
    )
    leaks = PromptSet.load(tmp_path).leak_detector()
    child = "Explain tides deeper, Captain Flint commands it today."  # six words of the line
    assert reason_of(check_rewrite("Explain tides.", child, ON, leaks)) == Reason.PROMPT_LEAK
    assert reason_of(check_rewrite("Explain tides.", child, ON, LEAKS)) is None


def words(count: int, *, first: str = "sorry") -> str:
    return " ".join([first] + ["word"] * (count - 1))


@pytest.mark.parametrize(
    ("answer", "rules", "expected"),
    [
        # The paper's 80, written out: a test built from the constant would move with it.
        (words(79), ON, Reason.SORRY),
        (words(80), ON, None),  # not under 80
        (words(81), ON, None),
        ("Sorry, I can't help with that.", ON, Reason.SORRY),
        ("I'm SORRY but no.", ON, Reason.SORRY),
        ("Sorry, I can't help with that.", OFF, None),
        (words(79, first="apologies"), ON, None),
        ("the and of it, is.", ON, Reason.STOPWORDS_ONLY),
        ("...!?", ON, Reason.STOPWORDS_ONLY),
        ("", ON, Reason.STOPWORDS_ONLY),
        ("It’s what it is.", ON, Reason.STOPWORDS_ONLY),  # a curly apostrophe is one word
        ("the and of it, is.", OFF, None),
        ("The answer is 42.", ON, None),
        ("Understood. What should I do with it?", ON, Reason.NOT_A_TASK),
        ("Thank you for sharing! Shall I summarise it?", ON, Reason.NOT_A_TASK),
        ("Understood. Here is the summary: cats sleep.", ON, None),  # no question: a real answer
        ("Sure! Which case do you mean?", ON, Reason.UNDERSPECIFIED),
        ("**Sure**, which one would you like?**", ON, Reason.UNDERSPECIFIED),
        ("Sure! Photosynthesis turns light into sugar.", ON, None),
        # Asks and says "Sure." and nothing else: it does no task.
        ("Could you tell me more? Sure.", ON, Reason.ASKS_FOR_INFORMATION),
        ("To do that, please provide the table.", ON, Reason.ASKS_FOR_INFORMATION),
        ("PLEASE PROVIDE more detail.", ON, Reason.ASKS_FOR_INFORMATION),
        ("Please, provide-free answers are fine here.", ON, None),
        ("Understood. What should I do with it?", OFF, None),
        ("To do that, please provide the table.", EliminationRules(signals=False), None),
    ],
)
def test_check_answer(answer: str, rules: EliminationRules, expected: Reason | None) -> None:
    assert reason_of(check_answer("Explain something about cells", answer, rules)) == expected


def test_an_answer_that_only_repeats_its_instruction_is_not_a_task() -> None:
    instruction = "You can't write a SQL query that returns the five most recent orders."
    failure = check_answer(instruction, instruction, ON)
    assert failure and failure.reason == Reason.NOT_A_TASK and "repeats" in failure.detail
    # A long answer that quotes the instruction and goes on is a real answer.
    long_answer = instruction + " " + "Here is how to do it step by step. " * 10
    assert check_answer(instruction, long_answer, ON) is None


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("a b c d e f g h i j", Reason.NOT_A_TASK),  # ROUGE-L 1.0
        ("a b c d e f g h x y", Reason.NOT_A_TASK),  # 8 of 10 words in order: 0.8, the threshold
        ("a b c d e f g x y z", None),  # 0.7
        ("a b c d e f g h i j k l m n o p", None),  # 1.6 times as long: more than a repeat
    ],
)
def test_the_repeat_threshold(answer: str, expected: Reason | None) -> None:
    assert REPEAT_SIMILARITY == 0.8
    assert reason_of(check_answer("a b c d e f g h i j", answer, ON)) == expected


def text(count: int) -> str:
    return " ".join(f"w{i}" for i in range(count))


@pytest.mark.parametrize(
    ("operation", "parent_words", "child_words", "expected"),
    [
        ("deepen", 10, 70, None),  # +60: the in-depth bound for a short parent
        ("deepen", 10, 71, Reason.OVERGROWN),
        ("add_constraints", 100, 200, None),  # twice as long: the bound for a long parent
        ("add_constraints", 100, 201, Reason.OVERGROWN),
        ("complicate_input", 10, 160, None),  # material may come along
        ("complicate_input", 10, 161, Reason.OVERGROWN),
        ("breadth", 10, 110, None),
        ("breadth", 10, 111, Reason.OVERGROWN),
        ("breadth", 100, 300, None),
        ("breadth", 100, 301, Reason.OVERGROWN),
    ],
)
def test_a_rewrite_may_grow_only_so_far(
    operation: str, parent_words: int, child_words: int, expected: Reason | None
) -> None:
    failure = check_rewrite(text(parent_words), text(child_words), ON, LEAKS, operation)
    assert reason_of(failure) == expected
    if failure:
        assert f"from {parent_words} to {child_words} words" in failure.detail
    off = EliminationRules(growth=False)
    assert check_rewrite(text(parent_words), text(child_words), off, LEAKS, operation) is None


@pytest.mark.parametrize(
    ("count", "expected"),
    [(79, Reason.UNDERSPECIFIED), (80, None), (200, None)],
)
def test_signals_read_short_answers_only(count: int, expected: Reason | None) -> None:
    """A long answer that opens "Sure!" and ends by offering more is a real answer."""
    answer = "Sure! " + "light " * (count - 3) + "more please?"
    assert word_count(answer) == count
    assert reason_of(check_answer("Explain photosynthesis", answer, ON)) == expected


@pytest.mark.parametrize(
    "answer",
    ["Sorry -- I can't: e.g. no, not today.", "sorry!!! ... ok — fine", "SORRY, 3.14 is π."],
)
def test_the_sorry_rule_counts_words_as_evol_stats_does(answer: str) -> None:
    failure = check_answer("Explain", answer, ON)
    assert failure and failure.detail == f"the answer says sorry in {word_count(answer)} words"


def test_a_refusal_without_sorry_is_the_sorry_rules_to_eliminate() -> None:
    """--no-sorry-check keeps refusals, whichever words they use; the answer signals do not
    take them over (a short "I can't" is the sorry rule's case, not a signal)."""
    answer = "I can't help with that request. I am unable to write it."
    assert check_answer("Write a poem.", answer, EliminationRules()) == Failure(
        Reason.SORRY, 'the answer only refuses: "i can\'t help with that request."'
    )
    assert check_answer("Write a poem.", answer, EliminationRules(sorry=False)) is None


def sentence(count: int, word: str = "light") -> str:
    return " ".join([word] * count)


def test_no_detector_no_leak_rule() -> None:
    assert check_rewrite("Explain X.", "Explain X, as the given prompt asks.", ON, None) is None
    off = EliminationRules(leak=False)
    leaks = LeakDetector.from_templates([])
    assert check_rewrite("Explain X.", "Explain X, as the given prompt asks.", off, leaks) is None


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


def test_a_phrase_the_parent_held_in_other_punctuation_is_no_leak() -> None:
    parent = "Explain the given-prompt technique."
    child = "Explain the given-prompt technique with two examples."
    assert check_rewrite(parent, child, ON, LEAKS) is None


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
    assert check_rewrite("Name a colour", child, ON) == failure


def test_a_stop_word_answer_is_shown_folded_to_60_characters() -> None:
    answer = "the  a an\nand of the to of and a the the a an and of the to of and a the and"
    shown = "the a an and of the to of and a the the a an and of the to o"
    assert len(shown) == 60
    assert check_answer("x", answer, ON) == Failure(
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
    assert check_answer("Name a colour", answer, ON) == failure


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
    assert check_answer("Sort these four numbers", answer, ON) == failure


def test_an_answer_that_repeats_a_long_instruction_is_caught_by_its_first_words() -> None:
    """ROUGE-L is quadratic in words: past REPEAT_MAX_WORDS the repeat rule compares the first
    words of each, bit-parallel (word by word, 30,000 words each took minutes)."""
    instruction = " ".join(f"w{i % 997}" for i in range(30_000))
    failure = check_answer(instruction, f"{instruction} done", ON)
    assert failure is not None and failure.reason == Reason.NOT_A_TASK
    assert "ROUGE-L 1.00" in failure.detail
