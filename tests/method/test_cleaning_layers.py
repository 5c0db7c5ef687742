"""Cleaning replies, exactly: what each layer's note says (it goes into the record's detail),
how many layers come off, and the edges where a wrapper is left on.

tests/method/test_cleaning.py has the shapes real models reply in; these pin the words and the bounds.
"""

from __future__ import annotations

import pytest

from evol.method.cleaning import Cleaned, clean_reply, clean_rewrite

TASK = "Explain tides."
FENCE = "```"
AFTERWORD = "This version asks for the part of the moon and the part of the sun, with a diagram."


@pytest.mark.parametrize(
    ("reply", "text", "stripped"),
    [
        (f"<think>Plan.</think>\n{TASK}", TASK, ["a <think> block"]),
        (f"<THINKING>Plan.</THINKING>{TASK}", TASK, ["a <thinking> block"]),
        (f"<reasoning>Plan.</reasoning> {TASK}", TASK, ["a <reasoning> block"]),
        ("<think>Only thoughts.</think>", "", ["a <think> block"]),
        ("<think>Only thoughts.</THINK>  ", "", ["a <think> block"]),
        ("<think>Thoughts, cut off", "", ["a <think> block (never closed)"]),
        (f"I should add a case.</think>\n{TASK}", TASK, ["reasoning ending in </think>"]),
        (f"Sure! Here is the revised prompt:\n{TASK}", TASK, ["preamble 'Sure! Here is the revised prompt:'"]),
        (f"Okay!\n{TASK}", TASK, ["preamble 'Okay!'"]),
        (f"**New instruction:** {TASK}", TASK, ["label '**New instruction:**'"]),
        (f"{FENCE}markdown\n{TASK}\n{FENCE}", TASK, ["a code fence around the whole reply"]),
        (f"'{TASK}'", TASK, ["quotes around the whole reply"]),
        (f"«{TASK}»", TASK, ["quotes around the whole reply"]),
        ('""', "", ["quotes around the whole reply"]),
        (f"{TASK}\n\n{AFTERWORD}", TASK, [f"an afterword {AFTERWORD[:60]!r}"]),
    ],
)  # fmt: skip
def test_each_layer_and_its_note(reply: str, text: str, stripped: list[str]) -> None:
    cleaned = clean_rewrite(reply)
    assert cleaned == Cleaned(text, tuple(stripped))
    assert cleaned.detail == "stripped " + "; ".join(stripped)


def test_nothing_taken_off_says_nothing() -> None:
    assert clean_rewrite(TASK) == Cleaned(TASK, ())
    assert clean_rewrite(TASK).detail is None
    assert reply_of(f"  {TASK}\n") == (TASK, ())


def test_four_layers_come_off_and_five_do_too() -> None:
    four = (
        f'Sure! Here is the rewritten instruction:\n{FENCE}\n**New instruction:** "{TASK}"\n{FENCE}'
    )
    assert clean_rewrite(four).text == TASK
    assert clean_rewrite(four).stripped == (
        "preamble 'Sure! Here is the rewritten instruction:'",
        "a code fence around the whole reply",
        "label '**New instruction:**'",
        "quotes around the whole reply",
    )
    five = (
        f'Sure!\n{FENCE}\nHere is the rewritten instruction: **New instruction:** "{TASK}"\n{FENCE}'
    )
    assert clean_rewrite(five).text == TASK
    assert len(clean_rewrite(five).stripped) == 5


@pytest.mark.parametrize(
    "reply",
    [
        "Sure! Here is the rewritten instruction:",  # a wrapper with nothing inside is left
        "New instruction:",
        "“He said ” twice”",  # a closing quote inside: not one quoted reply
        '"He said" no "twice"',  # a quote that closes before one opened inside
        '"',
        "Explain tides.\n\nThe new instruction",  # an afterword needs a paragraph before it
    ],
)
def test_a_wrapper_around_nothing_or_not_around_the_whole_is_left(reply: str) -> None:
    cleaned = clean_rewrite(reply)
    if reply.startswith("Explain"):
        assert cleaned.text == "Explain tides." and "afterword" in cleaned.stripped[0]
        return
    assert cleaned == Cleaned(reply, ())


@pytest.mark.parametrize(
    ("data", "taken"),
    [
        ("0123456789012345678", False),  # 19 characters: could be a coincidence
        ("01234567890123456789", True),  # 20: a copy of the input
        ("  01234567890123456789  \n", True),
        ("   \n", False),
    ],
)
def test_a_copy_of_the_input_comes_out_from_20_characters(data: str, taken: bool) -> None:
    reply = f"Sort these numbers:\n{data.strip()}"
    cleaned = clean_rewrite(reply, data)
    if taken:
        assert cleaned == Cleaned("Sort these numbers:", ("a copy of the input",))
    else:
        assert cleaned == Cleaned(reply.strip(), ())
    inside = f"Sort these numbers: {data.strip()} please."  # quoted in the task: the task's words
    assert clean_rewrite(inside, data) == Cleaned(inside, ())


def test_an_answer_keeps_everything_but_its_think_block() -> None:
    answer = f'Sure! Here is the answer:\n{FENCE}\n"{TASK}"\n{FENCE}'
    assert reply_of(answer) == (answer, ())
    assert reply_of(f"<think>x</think>{answer}") == (answer, ("a <think> block",))
    assert reply_of("<think>never done") == ("", ("a <think> block (never closed)",))


def reply_of(reply: str) -> tuple[str, tuple[str, ...]]:
    cleaned = clean_reply(reply)
    return cleaned.text, tuple(cleaned.stripped)
