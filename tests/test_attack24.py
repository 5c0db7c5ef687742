"""Attacks on the judge in a schema (#24 items 1-3): replies the builder's tests did not try,
servers that refuse the schema in other ways, and the answer check across kills and batches."""

from __future__ import annotations

import json

import pytest

from evol.elimination import Reason, Verdict
from evol.judging import read_answer_check, read_judgement


def verdict_object(verdict: str = "different", second_is: str = "instruction", **more: str) -> str:
    return json.dumps({"reason": "r", "second_is": second_is, "verdict": verdict} | more)


# -- the JSON object among other text ------------------------------------------------------


@pytest.mark.parametrize(
    "reply",
    [
        # A note after the object that holds a brace of its own.
        verdict_object(second_is="answer") + "\nNote: I read {input} as a placeholder.",
        # Prose before the object that holds one.
        "The {x} slot is filled in. " + verdict_object(second_is="answer"),
        # A fence, and a closing remark with braces.
        "```json\n" + verdict_object(second_is="answer") + "\n```\n(see {above})",
        # The keys as a model that ignored the schema might capitalise them.
        json.dumps({"Reason": "r", "Second_Is": "answer", "Verdict": "Different"}),
    ],
)
def test_the_object_is_found_whatever_braces_or_key_case_surround_it(reply: str) -> None:
    judgement = read_judgement(reply)
    assert (judgement.form, judgement.verdict, judgement.second_is) == (
        "schema",
        Verdict.DIFFERENT,
        "answer",
    )
    failure = judgement.failure(reply)
    assert failure is not None and failure.reason == Reason.NOT_AN_INSTRUCTION


def test_an_answer_check_object_followed_by_a_brace_is_read_as_the_schema() -> None:
    reply = json.dumps({"reason": "wants the data", "answer": "asks_for_information"})
    check = read_answer_check(reply + " (it asked for {table})")
    assert (check.form, check.problem) == ("schema", "asks_for_information")


def test_the_first_object_the_schema_allows_is_the_verdict() -> None:
    # A first object off the schema (an echo of the example), then the real one.
    reply = '{"reason": "...", "second_is": "...", "verdict": "..."}\n' + verdict_object("equal")
    judgement = read_judgement(reply)
    assert (judgement.form, judgement.verdict) == ("schema", Verdict.EQUAL)


@pytest.mark.parametrize(
    "reply",
    [
        "{" * 100_000,  # deep nesting: no recursion error
        '{"reason": "' + "x" * 1_000_000 + '"',  # a 1 MB reason, never closed
        "{" * 5_000 + "}" * 5_000,
    ],
)
def test_hostile_objects_are_read_without_error(reply: str) -> None:
    assert read_judgement(reply).form == "prose"
    assert read_answer_check(reply).form == "unread"


# -- the answer check read from prose ------------------------------------------------------


@pytest.mark.parametrize(
    "reply",
    [
        "The reply neither asks for information nor says the task is unclear; it does the work.",
        "It never asks for information.",
        "It does not only acknowledge the task.",
        "No asks_for_information here.",
    ],
)
def test_a_choice_the_prose_denies_is_not_read_as_chosen(reply: str) -> None:
    check = read_answer_check(reply)
    assert check.failure() is None, check
