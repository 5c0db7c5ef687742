"""Operation weights and the reproducible choice of one operation per evolution."""

from __future__ import annotations

from collections import Counter

import pytest

from evol.errors import UsageError
from evol.method.operations import OPERATIONS, VERIFIABLE, choose_operation, parse_weights


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (None, dict.fromkeys(OPERATIONS, 1.0)),
        ("", dict.fromkeys(OPERATIONS, 1.0)),
        ("add_constraints=2,breadth=1", {"add_constraints": 2.0, "breadth": 1.0}),
        ("deepen, concretize", {"deepen": 1.0, "concretize": 1.0}),
        ("deepen=0,breadth=0.5", {"breadth": 0.5}),
    ],
)
def test_parse_weights(spec: str | None, expected: dict[str, float]) -> None:
    assert parse_weights(spec) == expected


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("deep=1", "unknown operation 'deep'"),
        ("deepen=lots", "must be a number"),
        ("deepen=-1", ">= 0"),
        ("deepen=0", "at least one"),
        ("deepen=inf", "finite"),
    ],
)
def test_bad_weights(spec: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse_weights(spec)


def test_choice_is_a_pure_function_of_seed_item_and_round() -> None:
    weights = parse_weights(None)
    first = [choose_operation(weights, 7, f"s{i}", r) for i in range(50) for r in range(1, 5)]
    again = [choose_operation(weights, 7, f"s{i}", r) for i in range(50) for r in range(1, 5)]
    other_seed = [choose_operation(weights, 8, f"s{i}", r) for i in range(50) for r in range(1, 5)]
    assert first == again
    assert first != other_seed


def test_uniform_by_default_and_weighted_on_request() -> None:
    uniform = Counter(choose_operation(parse_weights(None), 1, f"s{i}", 1) for i in range(6000))
    assert set(uniform) == set(OPERATIONS)
    assert all(800 < n < 1200 for n in uniform.values())
    weighted = Counter(
        choose_operation(parse_weights("deepen=3,breadth=1"), 1, f"s{i}", 1) for i in range(4000)
    )
    assert set(weighted) == {"deepen", "breadth"}
    assert 2.5 < weighted["deepen"] / weighted["breadth"] < 3.5


def test_weights_errors_name_the_operations() -> None:
    with pytest.raises(UsageError) as unknown:
        parse_weights("deepen,nope")
    assert str(unknown.value) == (
        "--operations: unknown operation 'nope'; known: add_constraints, deepen, concretize, "
        "increase_reasoning, complicate_input, breadth"
    )
    with pytest.raises(UsageError) as all_zero:
        parse_weights("deepen=0")
    assert str(all_zero.value) == "--operations: at least one operation needs a weight above 0"
    with pytest.raises(UsageError):
        parse_weights("deepen=inf")


def test_the_operation_is_used_only_when_named() -> None:
    assert VERIFIABLE not in parse_weights(None) and set(parse_weights(None)) == set(OPERATIONS)
    assert parse_weights("add_verifiable_constraint=2,deepen") == {VERIFIABLE: 2.0, "deepen": 1.0}
    assert parse_weights(None, verifiable=True) == {VERIFIABLE: 1.0}
    assert parse_weights("  ", verifiable=True) == {VERIFIABLE: 1.0}
    with pytest.raises(UsageError, match="--verifiable evolves with add_verifiable_constraint"):
        parse_weights("deepen", verifiable=True)
