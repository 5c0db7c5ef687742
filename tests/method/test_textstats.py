"""Words and what is measured in them: the one tokenizer behind "80 words", the duplicate
rule's ROUGE-L, and the length summaries of `evol stats`, checked against plain definitions.
"""

from __future__ import annotations

import random
from functools import cache

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evol.method.textstats import (
    Lengths,
    estimate_tokens,
    normalize,
    rouge_l,
    rouge_l_bitparallel,
    summarize,
    tokens,
    word_count,
    words,
)

PROPERTY = settings(derandomize=True, deadline=None, max_examples=300, database=None)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Don't stop—now!", ["Don't", "stop", "now"]),
        ("It’s 3.14, isn't it?", ["It’s", "3", "14", "isn't", "it"]),
        ("snake_case and **bold** `code`", ["snake", "case", "and", "bold", "code"]),
        ("'quoted' rock'n'roll '", ["quoted", "rock'n'roll"]),
        ("Ünïcödé 東京 42", ["Ünïcödé", "東京", "42"]),
        ("", []),
        ("... --- !!!", []),
    ],
)
def test_words(text: str, expected: list[str]) -> None:
    assert words(text) == expected
    assert word_count(text) == len(expected)


def test_tokens_fold_case_width_and_curly_apostrophes() -> None:
    assert tokens("It’s ＡＢＣ Straße DON'T") == ["it's", "abc", "strasse", "don't"]


@pytest.mark.parametrize(("count", "expected"), [(0, 0), (1, 1), (2, 3), (3, 4), (30, 40)])
def test_estimate_tokens_is_four_thirds_a_word(count: int, expected: int) -> None:
    assert estimate_tokens(" ".join(["word"] * count)) == expected


@cache
def lcs(first: tuple[str, ...], second: tuple[str, ...]) -> int:
    """The longest common subsequence, by its definition."""
    if not first or not second:
        return 0
    if first[0] == second[0]:
        return 1 + lcs(first[1:], second[1:])
    return max(lcs(first[1:], second), lcs(first, second[1:]))


@pytest.mark.parametrize(
    ("first", "second", "expected"),
    [
        ("a b c d e", "a x c y e", 2 * 3 / 10),
        ("a b", "b a", 2 * 1 / 4),
        ("a b c", "a b c d e f g", 2 * 3 / 10),  # the longer one first or second: the same
        ("a b c d e f g", "a b c", 2 * 3 / 10),
        ("a a a", "a", 2 * 1 / 4),
        ("x", "", 0.0),
        ("", "", 0.0),
    ],
)
def test_rouge_l(first: str, second: str, expected: float) -> None:
    assert rouge_l(first.split(), second.split()) == expected


@PROPERTY
@given(
    first=st.lists(st.sampled_from("abcd"), max_size=8),
    second=st.lists(st.sampled_from("abcd"), max_size=8),
)
def test_rouge_l_is_twice_the_lcs_over_both_lengths(first: list[str], second: list[str]) -> None:
    expected = (
        2 * lcs(tuple(first), tuple(second)) / (len(first) + len(second))
        if first and second
        else 0.0
    )
    assert rouge_l(first, second) == expected == rouge_l(second, first)


@PROPERTY
@given(values=st.lists(st.integers(0, 500), min_size=1, max_size=30))
def test_summaries_are_numpys_percentiles_rounded(values: list[int]) -> None:
    summary = summarize(values)
    assert summary == Lengths(
        mean=round(float(np.mean(values)), 1),
        p50=round(float(np.percentile(values, 50)), 1),
        p90=round(float(np.percentile(values, 90)), 1),
        max=max(values),
    )


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([7], Lengths(mean=7, p50=7, p90=7, max=7)),
        ([1, 2], Lengths(mean=1.5, p50=1.5, p90=1.9, max=2)),
        ([3, 1, 2], Lengths(mean=2, p50=2, p90=2.8, max=3)),
        ([0, 0, 1], Lengths(mean=0.3, p50=0, p90=0.8, max=1)),
        ([10, 0, 0, 0], Lengths(mean=2.5, p50=0, p90=7, max=10)),
    ],
)
def test_summaries(values: list[int], expected: Lengths) -> None:
    assert summarize(values) == expected


def test_nothing_to_summarize() -> None:
    assert summarize([]) is None


# Words, apostrophes inside and around them, underscores and marks that are no word characters,
# long words that straddle the prefix `words(limit=...)` looks in first.
_WORDY = st.text(alphabet="ab9'\u2019_ \n.-\u00e9\u0301\u4e00", max_size=400) | st.builds(
    lambda parts: " ".join(parts),
    st.lists(st.text(alphabet="abc'\u2019", min_size=1, max_size=60), max_size=40),
)


@settings(max_examples=400, deadline=None)
@given(text=_WORDY, limit=st.integers(0, 60))
def test_the_first_words_are_the_words_cut_to_the_limit(text: str, limit: int) -> None:
    assert words(text, limit) == words(text)[:limit]


def _plain_words(text: str) -> list[str]:
    """The definition, a character at a time: a run of letters or digits (`str.isalnum`, what
    `re` calls a word character, less `_`), joined to the next run by one apostrophe."""
    found, at = [], 0
    while at < len(text):
        if not text[at].isalnum():
            at += 1
            continue
        start = at
        while True:
            while at < len(text) and text[at].isalnum():
                at += 1
            if at + 1 < len(text) and text[at] in "'\u2019" and text[at + 1].isalnum():
                at += 1
                continue
            break
        found.append(text[start:at])
    return found


# Letters, digits and marks of several scripts, the characters `\w` takes that `isalnum` does
# not (`_`), numbers that are no digits (`²`, `½`), apostrophes in runs, and separators.
_ANY_TEXT = st.text(
    alphabet="aZ9_'\u2019\u2019 \t\n.,-\u00e9\u0301\u00b2\u00bd\u0663\u4e00\u05d0\U0001d7d8!",
    max_size=300,
)


@given(text=_ANY_TEXT | _WORDY, limit=st.integers(0, 70))
def test_words_are_the_plain_definition_whole_and_cut_to_a_limit(text: str, limit: int) -> None:
    expected = _plain_words(text)
    assert words(text) == expected
    assert words(text, limit) == expected[:limit]
    assert word_count(text) == len(expected)


@pytest.mark.parametrize("size", [1, 5, 47, 48, 49, 95, 96, 97, 1000])
def test_a_word_across_the_first_windows_is_taken_whole(size: int) -> None:
    """`words(limit=3)` reads a window of 24 characters first, then 48 more, then 96: a word
    that reaches past each is still one word, and the words after it follow."""
    text = "a " + "b" * size + "'c d e f"
    assert words(text, 3) == ["a", "b" * size + "'c", "d"]
    assert words(text, 1) == ["a"] and words(text, 0) == []


# -- tokens and the token estimate (found by mutation testing) ---------------------------------


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


def test_curly_apostrophes_are_straightened_in_tokens() -> None:
    assert tokens("Don\u2019t STOP") == ["don't", "stop"]


def test_the_token_estimate_is_four_thirds_of_the_words() -> None:
    assert estimate_tokens("one two three four five six") == 8


def test_bit_parallel_rouge_l_equals_the_definition() -> None:
    rng = random.Random(11)
    for _ in range(3_000):
        vocabulary = [f"w{i}" for i in range(rng.randint(1, 8))]
        first = rng.choices(vocabulary, k=rng.randint(0, 70))
        second = rng.choices(vocabulary, k=rng.randint(0, 70))
        assert rouge_l_bitparallel(first, second) == pytest.approx(rouge_l(first, second))
