"""A score read from a reply (evol.quality.readings): the number written, or the expectation over
its log-probabilities, against a plain reference; a reply is untrusted."""

from __future__ import annotations

import math
import re
from collections import defaultdict

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evol.quality.readings import expected_score


@settings(max_examples=60, deadline=None)
@given(
    honest=st.dictionaries(st.integers(1, 9).map(str), st.floats(-20, -0.01), max_size=9),
    forged=st.dictionaries(
        st.integers(1, 9).map(str),
        st.floats(1e-5, 5) | st.sampled_from([math.inf, -math.inf, math.nan]),
        min_size=1,
        max_size=9,
    ),
)
def test_log_probabilities_no_model_gives_never_move_a_score(
    honest: dict[str, float], forged: dict[str, float]
) -> None:
    """A reply is untrusted: a positive or non-finite log-probability counts for nothing."""
    honest = honest | {"5": 0.0}  # the number written
    forged = {token: value for token, value in forged.items() if token not in honest}
    clean = expected_score([honest], "5", 0, 1, 9)
    assert expected_score([honest | forged], "5", 0, 1, 9) == clean


def test_probabilities_that_all_round_to_zero_leave_the_number_written() -> None:
    assert expected_score([{"7": -800.0, "x": -900.0}], "7", 0, 1, 10) is None


def test_a_number_right_after_another_token_is_read_from_its_own_alternatives() -> None:
    tokens = [{"Score:": 0.0}, {"7": math.log(0.75), "3": math.log(0.25)}]
    assert expected_score(tokens, "Score:7", 6, 7, 10) == 6.0


@pytest.mark.parametrize(
    ("tokens", "text", "maximum", "expected"),
    [
        # " 7" and "7" are one number: their probabilities add up.
        ([{" 7": math.log(0.25), "7": math.log(0.25), " 8": math.log(0.5)}], " 7", 10, 7.5),
        # Past the scale and below it: no score, and no share of the normalisation.
        (
            [{"3": math.log(0.5), "4": math.log(0.2), "5": -0.5, "9": -0.5, "0": -1.0}],
            "3",
            4,
            3 + 2 / 7,
        ),
        # Two alternatives fit the text: the likeliest one is the token written.
        ([{" ": math.log(0.3), " 6": math.log(0.6), " 4": math.log(0.1)}], " 6", 10, 5.714285714),
        # The number after a run of other tokens is found at its offset.
        (
            [{"#": 0.0}, {"2": 0.0}, {":": 0.0}, {" 3": math.log(0.6), " 1": math.log(0.4)}],
            "#2: 3",
            3,
            2.2,
        ),
    ],
)
def test_expected_score_table(
    tokens: list[dict[str, float]], text: str, maximum: int, expected: float
) -> None:
    number = list(re.finditer(r"\d+", text))[-1]  # the score: the last number of the reply
    assert expected_score(tokens, text, number.start(), number.end(), maximum) == pytest.approx(
        expected, abs=1e-4
    )


@settings(max_examples=80, deadline=None)
@given(
    maximum=st.integers(2, 9),
    data=st.data(),
)
def test_expected_score_is_the_normalised_mean_over_the_scale(maximum: int, data) -> None:
    """On a scale below 10 (a chain of versions), any alternatives: the expectation over the
    numbers 1..maximum alone, and never outside the scale."""
    numbers = st.integers(0, 15).map(str) | st.sampled_from(["x", "\n", "-", "1.5"])
    spaced = st.tuples(st.booleans(), numbers).map(lambda t: (" " if t[0] else "") + t[1])
    alternatives = data.draw(
        st.dictionaries(spaced, st.floats(-20, -0.01), max_size=12), label="alternatives"
    )
    chosen = str(data.draw(st.integers(1, maximum), label="chosen"))
    alternatives[chosen] = 0.0  # the likeliest, and so the token written
    weights: dict[int, float] = defaultdict(float)
    for token, logprob in alternatives.items():
        if token.strip().isdigit() and 1 <= int(token.strip()) <= maximum:
            weights[int(token.strip())] += math.exp(logprob)
    reference = sum(n * w for n, w in weights.items()) / sum(weights.values())
    value = expected_score([alternatives], chosen, 0, len(chosen), maximum)
    assert value == pytest.approx(reference, abs=1e-4)
    assert 1 <= value <= maximum
