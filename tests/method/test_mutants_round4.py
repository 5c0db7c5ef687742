"""A promise of the judge's reading that the fourth round of mutation survivors (checks 4,741
on, #22) found unpinned: a verdict the judge labels as its own decides, whatever a later clause
says. The function is imported from where each tree keeps it, so that the test runs on 4f7dc9e's
tree, where the mutants were found, as on `main`.
"""

from __future__ import annotations

import pytest

try:
    from evol.method.verdicts import parse_verdict
except ImportError:  # 4f7dc9e, before the method package
    from evol.elimination import parse_verdict


@pytest.mark.parametrize(
    ("reply", "verdict"),
    [
        ("My answer is different. They are equal.", "DIFFERENT"),
        ("Verdict: not equal. I first thought they were equal.", "DIFFERENT"),
        ("Conclusion: the two are equal. They differ.", "EQUAL"),
        ("Final answer: they are different, yes they are equal", "DIFFERENT"),
    ],
)
def test_a_labelled_verdict_decides_whatever_a_later_clause_says(reply: str, verdict: str) -> None:
    """The judge decides whether an evolution is kept: a later clause read over the verdict it
    named as its answer would drop an evolution or keep a copy."""
    assert parse_verdict(reply).name == verdict
