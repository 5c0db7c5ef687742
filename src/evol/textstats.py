"""Word counts and their summaries, shared by `evol stats`, `evol validate` and `--dry-run`."""

from __future__ import annotations

import re

from pydantic import BaseModel

_WORD = re.compile(r"\S+")
TOKENS_PER_WORD = 4 / 3  # the usual rule of thumb for English with BPE tokenizers


class Lengths(BaseModel):
    """Length in words: mean, median, 90th percentile and maximum."""

    mean: float
    p50: float
    p90: float
    max: int


def word_count(text: str) -> int:
    return len(_WORD.findall(text))


def estimate_tokens(text: str) -> int:
    """A tokenizer-free estimate, for planning before any call."""
    return round(word_count(text) * TOKENS_PER_WORD)


def summarize(values: list[int]) -> Lengths | None:
    """Mean, median, p90 (linear interpolation, as numpy's default) and max; None if empty."""
    if not values:
        return None
    ordered = sorted(values)
    return Lengths(
        mean=round(sum(ordered) / len(ordered), 1),
        p50=_percentile(ordered, 0.5),
        p90=_percentile(ordered, 0.9),
        max=ordered[-1],
    )


def _percentile(ordered: list[int], fraction: float) -> float:
    position = (len(ordered) - 1) * fraction
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return round(ordered[low] + (ordered[high] - ordered[low]) * (position - low), 1)
