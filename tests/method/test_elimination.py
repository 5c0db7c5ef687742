"""The elimination rules, case by case, with every threshold tried on both sides."""

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
from evol.method.leaks import PAPER_MARKERS, LeakDetector
from evol.method.prompts import RUN_PROMPT_NAMES, PromptSet
from evol.method.textstats import word_count
from evol.method.verdicts import Verdict, parse_verdict

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


@pytest.mark.parametrize("marker", PAPER_MARKERS)
def test_the_papers_markers_are_always_leaks(marker: str) -> None:
    assert marker in LeakDetector.from_templates([]).phrases


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
