"""Reading a score from a reply: the number it gives (prose included), or the expected value
over the log-probabilities of the valid numbers at the score's position (Deita's way).
Every pattern reads a bounded start of the reply in linear time."""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass
from typing import Literal

from evol.llm import (
    Completion,
)

# A score has a few digits: a longer run of them is no score, and a bounded pattern keeps the
# search linear on a reply of digits.
_NUMBER = r"(\d{1,4}(?:\.\d{1,4})?)"
# Only the start of a reply is read: a score is near its beginning, and the search stays short
# whatever a server sends. The whitespace runs are possessive (`\s*+`): `[1` then 1,000 spaces
# took 15 s while a failed match tried every way of sharing the run between adjacent `\s*`.
_READ_CHARS = 2000
# "(1-10)", "1 to 10": the scale, which is no score; blanked out before the numbers are read.
_RANGE = re.compile(r"\b\d{1,4}\s*+(?:-|\u2013|to)\s*+\d{1,4}\b", re.IGNORECASE)
_BARE = re.compile(r"[^\w]*+" + _NUMBER + r"[^\w]*+")
_WORDED = re.compile(
    r"\b(?:score|scored|rating|rate|rated|grade|difficulty|quality|complexity)\b\D{0,20}?"
    + _NUMBER,
    re.IGNORECASE,
)
_ANY_NUMBER = re.compile(r"(?<![\w.])" + _NUMBER + r"(?![\w]|\.\d)")
_RANK = re.compile(
    r"(?:#|\[|\bversion\s*+#?)\s*+(\d{1,4})\s*+\]?\s*+(?:[:=\-\u2013]\s*+)?"
    r"(?:score\s*+[:=]?\s*+)?\**+\s*+" + _NUMBER,
    re.IGNORECASE,
)


# -- reading a score from a reply ------------------------------------------------------------


@dataclass(frozen=True)
class Reading:
    """A score read from a reply, and how: from log-probabilities or from the text."""

    value: float
    source: Literal["logprobs", "text"]


def read_number(text: str, maximum: int) -> tuple[float, int, int] | None:
    """The score a reply gives and its span in `text`; None when it gives none, several, or
    one outside 1..maximum (a negative one included)."""
    text = _RANGE.sub(lambda found: " " * len(found.group()), text[:_READ_CHARS])
    patterns = (
        _BARE.fullmatch(text),
        re.search(_NUMBER + rf"\s*+(?:/|out of)\s*+{maximum}\b", text, re.IGNORECASE),
        _WORDED.search(text),
    )
    match = next((found for found in patterns if found), None)
    if match is None:
        numbers = list(_ANY_NUMBER.finditer(text))
        if len({float(found.group(1)) for found in numbers}) != 1:
            return None
        match = numbers[0]
    value = float(match.group(1))
    if not 1 <= value <= maximum or text[: match.start(1)].endswith(("-", "\u2212")):
        return None
    return value, match.start(1), match.end(1)


def read_ranking(text: str, count: int) -> dict[int, tuple[float, int, int]]:
    """Version number -> (score, span) for each "#k: s" line of a ranking reply; the first
    line for a version wins, and versions or scores outside 1..count are ignored."""
    found: dict[int, tuple[float, int, int]] = {}
    for match in _RANK.finditer(text[:_READ_CHARS]):
        version, value = int(match.group(1)), float(match.group(2))
        if 1 <= version <= count and version not in found and 1 <= value <= count:
            found[version] = (value, match.start(2), match.end(2))
    return found


def expected_score(
    top_logprobs: list[dict[str, float]], text: str, start: int, end: int, maximum: int
) -> float | None:
    """Sum of n * p(n) over the valid numbers 1..maximum among the alternatives of the token
    that holds text[start:end], p normalised over those numbers (Deita's expected score).

    None when the tokens cannot be lined up with the text, or the number is not one token of
    its own (a "10" split into "1" and "0", a decimal): then the text's number stands.
    """
    offset = 0
    for alternatives in top_logprobs:
        token = _chosen_token(alternatives, text, offset)
        if token is None:
            return None
        if offset <= start < offset + len(token):
            if token.strip() != text[start:end]:
                return None
            return _expectation(alternatives, maximum, token)
        offset += len(token)
    return None


def _chosen_token(alternatives: dict[str, float], text: str, offset: int) -> str | None:
    """The alternative the text continues with at `offset`: the likeliest that fits."""
    fitting = [
        (logprob, len(token), token)
        for token, logprob in alternatives.items()
        if token and text.startswith(token, offset) and _valid_logprob(logprob)
    ]
    return max(fitting)[2] if fitting else None


def _expectation(alternatives: dict[str, float], maximum: int, chosen: str) -> float | None:
    # Tokenizers that split numbers into digits (Llama 2, Mistral, Qwen) write 10 as "1" then
    # "0": on a scale to 10 or more, another alternative "1" may be the start of 10. It reads
    # as 1 only where "10" is a token of its own among the alternatives, or was chosen (the
    # text then shows the number ends there).
    stripped = {token.strip() for token in alternatives}
    split_digits = maximum >= 10 and "10" not in stripped and chosen.strip() != "1"
    ambiguous = {"1"} if split_digits else set()
    weights: Counter[int] = Counter()
    for token, logprob in alternatives.items():
        number = token.strip()
        valid = (
            number.isascii()
            and number.isdigit()
            and len(number) <= 4
            and number not in ambiguous
            and 1 <= int(number) <= maximum
        )
        if valid and _valid_logprob(logprob):
            weights[int(number)] += math.exp(logprob)
    total = sum(weights.values())
    if total <= 0:
        return None
    return round(sum(n * w for n, w in weights.items()) / total, 4)


def _valid_logprob(value: object) -> bool:
    """A reply is untrusted: a log-probability is a finite number <= 0 (a hair above is noise)."""
    return isinstance(value, int | float) and math.isfinite(value) and value <= 1e-6


def single_reading(completion: Completion, maximum: int) -> Reading | None:
    """The score of a one-number reply: expected from log-probabilities where it can be."""
    found = read_number(completion.text, maximum)
    if found is None:
        return None
    value, start, end = found
    if completion.top_logprobs:
        expected = expected_score(completion.top_logprobs, completion.text, start, end, maximum)
        if expected is not None:
            return Reading(expected, "logprobs")
    return Reading(value, "text")


def ranking_readings(completion: Completion, count: int) -> dict[int, Reading]:
    """The score of each version a ranking reply gives."""
    readings = {}
    for version, (value, start, end) in read_ranking(completion.text, count).items():
        expected = (
            expected_score(completion.top_logprobs, completion.text, start, end, count)
            if completion.top_logprobs
            else None
        )
        readings[version] = (
            Reading(expected, "logprobs") if expected is not None else Reading(value, "text")
        )
    return readings
