"""Details of the cleaning layer and of word counts that mutation testing found unguarded.

Each case pins one exact behaviour that a planted bug changed without any other test failing:
what each layer's detail says, the edges of each layer (a reply that is only a label, an
afterword one character in, two quote characters, a quote inside), the 20-character input,
the layer count, the think block closed at the very end, and the curly apostrophe in a word.
"""

from __future__ import annotations

import pytest

from evol.method.cleaning import Cleaned, clean_reply, clean_rewrite
from evol.method.textstats import estimate_tokens, tokens

FENCED = '```\n"New instruction: Do X"\n```'


@pytest.mark.parametrize(
    ("reply", "cleaned"),
    [
        ("<think>x</think>Hi", Cleaned("Hi", ("a <think> block",))),
        ("<think>x</think>", Cleaned("", ("a <think> block",))),  # closed at the very end
        ("<THINKING>x</Thinking>", Cleaned("", ("a <thinking> block",))),
        ("<think>x", Cleaned("", ("a <think> block (never closed)",))),
        ("Hi", Cleaned("Hi", ())),
    ],
)
def test_a_reply_loses_its_think_block_and_says_so(reply: str, cleaned: Cleaned) -> None:
    assert clean_reply(reply) == cleaned


@pytest.mark.parametrize(
    ("reply", "cleaned"),
    [
        (
            "Sure! Here is the rewritten instruction: Do X",
            Cleaned("Do X", ("preamble 'Sure! Here is the rewritten instruction:'",)),
        ),
        ("Sure!\nDo X", Cleaned("Do X", ("preamble 'Sure!'",))),
        ("New instruction: Do X", Cleaned("Do X", ("label 'New instruction:'",))),
        # Nothing after the wrapper: the reply is left as it is (the leak rule reads it).
        ("New instruction:", Cleaned("New instruction:", ())),
        ("Here is the rewritten instruction:", Cleaned("Here is the rewritten instruction:", ())),
        # An afterword one character in still goes.
        ("X\n\nNote: this is harder", Cleaned("X", ("an afterword 'Note: this is harder'",))),
        (
            "Do X\n\nNote: I " + "n" * 80,
            Cleaned("Do X", (f"an afterword {'Note: I ' + 'n' * 52!r}",)),
        ),
        ("Do X\n\nNote: in French.", Cleaned("Do X\n\nNote: in French.", ())),  # the task's
        ("```\nDo X\n```", Cleaned("Do X", ("a code fence around the whole reply",))),
        ('"Do X"', Cleaned("Do X", ("quotes around the whole reply",))),
        ('""', Cleaned("", ("quotes around the whole reply",))),
        ('"', Cleaned('"', ())),
        # Quotes that also open (or close) inside are not one pair around the whole reply.
        ("\u201cSay \u201chi to them\u201d", Cleaned("\u201cSay \u201chi to them\u201d", ())),
        ("\u201cSay hi\u201d to them\u201d", Cleaned("\u201cSay hi\u201d to them\u201d", ())),
    ],
)
def test_each_layer_of_a_rewrite_comes_off_and_is_named(reply: str, cleaned: Cleaned) -> None:
    assert clean_rewrite(reply) == cleaned


def test_eight_layers_come_off_and_a_ninth_is_left() -> None:
    # The loop's bound (MAX_LAYERS): a ninth layer stays, for the rules to read.
    assert clean_rewrite("Okay!\n" * 9 + "Do X") == Cleaned(
        "Okay!\nDo X", ("preamble 'Okay!'",) * 8
    )


def test_every_layer_of_a_wrapped_rewrite_comes_off() -> None:
    inner = '```\n"*New instruction: Do X*"\n```'
    reply = f"Sure!\nHere is the rewritten instruction:\n---\n{inner}\n---\n\nNote: this is harder."
    assert clean_rewrite(reply + "\n\nHope this helps! Thanks!\nInput: N/A") == Cleaned(
        "Do X",
        (
            "preamble 'Sure!\\nHere is the rewritten instruction:'",
            "an afterword 'Note: this is harder.\\n\\nHope this helps! Thanks!\\nInput: N/A'",
            "rules around the whole reply",
            "a code fence around the whole reply",
            "quotes around the whole reply",
            "quotes around the whole reply",
            "label 'New instruction:'",
        ),
    )


@pytest.mark.parametrize(
    ("input_text", "cleaned"),
    [
        ("a" * 20, Cleaned("Sort these:", ("a copy of the input",))),
        ("a" * 19, Cleaned("Sort these: " + "a" * 20, ())),
    ],
)
def test_a_copy_of_an_input_of_20_characters_or_more_comes_off(
    input_text: str, cleaned: Cleaned
) -> None:
    assert clean_rewrite("Sort these: " + "a" * 20, input_text) == cleaned


def test_without_an_input_nothing_is_taken_for_a_copy_of_it() -> None:
    assert clean_rewrite("Sort XXXX") == Cleaned("Sort XXXX", ())


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Don\u2019t stop", ["don't", "stop"]),
        ("DON'T", ["don't"]),
    ],
)
def test_a_curly_apostrophe_is_a_straight_one_in_a_token(text: str, expected: list[str]) -> None:
    assert tokens(text) == expected


@pytest.mark.parametrize(("text", "estimate"), [("", 0), ("one two three", 4), ("a b", 3)])
def test_a_token_estimate_is_four_thirds_of_the_words(text: str, estimate: int) -> None:
    assert estimate_tokens(text) == estimate
