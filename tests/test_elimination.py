"""The elimination rules, case by case."""

from __future__ import annotations

import pytest

from evol.elimination import (
    EliminationRules,
    Reason,
    Verdict,
    check_answer,
    check_rewrite,
    parse_verdict,
)

ON = EliminationRules()
OFF = EliminationRules(judge=False, sorry=False, stopwords=False, leak=False)


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
        (
            "Explain X",
            "Explain X. The rules for the rewrite include: 1. stay reasonable",
            ON,
            Reason.PROMPT_LEAK,
        ),
        ("Explain X", "The rewritten prompt asks to explain X", OFF, None),
        ("Summarize the given prompt", "Summarize the given prompt in 3 bullets", ON, None),
        ("Explain X", "Explain X with two examples from biology", ON, None),
    ],
)
def test_check_rewrite(
    parent: str, child: str, rules: EliminationRules, expected: Reason | None
) -> None:
    assert check_rewrite(parent, child, rules) == expected


LONG_SORRY = "Sorry for the wait. " + "Here is a detailed explanation of the topic. " * 12


@pytest.mark.parametrize(
    ("answer", "rules", "expected"),
    [
        ("Sorry, I can't help with that.", ON, Reason.SORRY),
        ("I'm SORRY but no.", ON, Reason.SORRY),
        (LONG_SORRY, ON, None),
        ("Sorry, I can't help with that.", OFF, None),
        ("the and of it, is.", ON, Reason.STOPWORDS_ONLY),
        ("...!?", ON, Reason.STOPWORDS_ONLY),
        ("", ON, Reason.STOPWORDS_ONLY),
        ("the and of it, is.", OFF, None),
        ("Photosynthesis turns light into sugar.", ON, None),
    ],
)
def test_check_answer(answer: str, rules: EliminationRules, expected: Reason | None) -> None:
    assert check_answer(answer, rules) == expected


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("Equal", Verdict.EQUAL),
        ("equal.", Verdict.EQUAL),
        ("Not Equal", Verdict.DIFFERENT),
        ("Different", Verdict.DIFFERENT),
        ("**Different** - the second adds a constraint", Verdict.DIFFERENT),
        ("They are equal in scope.", Verdict.EQUAL),
        ("They are not equal.", Verdict.DIFFERENT),
        ("I cannot tell", Verdict.UNCLEAR),
        ("", Verdict.UNCLEAR),
    ],
)
def test_parse_verdict(reply: str, expected: Verdict) -> None:
    assert parse_verdict(reply) == expected
