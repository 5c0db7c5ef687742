"""Verifiable runs against the fake answerer: the constraints it meets or fails on purpose
(POOL), seeds to evolve, a record's constraints, the ones an answer fails, and how many answers
the run draws by the answerer's own rule."""

from __future__ import annotations

from typing import Any

from evol.method.constraints import Constraint, check
from tests.support.fake_server import meets

# The constraints the fake answerer can meet (or fail) on purpose.
POOL = (
    "punctuation:no_comma,change_case:english_lowercase,startend:end_checker,"
    "detectable_content:postscript,keywords:existence,length_constraints:number_words"
)
SEEDS = [
    {"instruction": "Explain why the sky is blue."},
    {"instruction": "Describe a walk in the park.", "input": "It rained in the morning."},
    {"instruction": "Summarise the plot of a heist film."},
    {"instruction": "Compare two ways to brew coffee."},
    {"instruction": "Give advice to a new gardener."},
    {"instruction": "Write a short note to a neighbour."},
    {"instruction": "Explain how a lock and key work."},
    {"instruction": "Describe the life of a honeybee."},
]


def constraints_of(record: dict[str, Any]) -> list[Constraint]:
    """The constraints a written record carries (none for a plain rewrite)."""
    return [Constraint.model_validate(c) for c in record.get("constraints") or []]


def fails(answer: str, constraints: list[Constraint]) -> list[str]:
    """The ids of the constraints that `answer` does not strictly meet."""
    return [v.constraint.id for v in check(answer, constraints) if not v.strict]


def expected_attempts(text: str, pass_rate: float, extra: int) -> int | None:
    """The answers the run draws for an instruction, by the fake answerer's own rule; None when
    none of 1 + extra meets the constraints."""
    return next((k for k in range(1, extra + 2) if meets(text, k, pass_rate)), None)
