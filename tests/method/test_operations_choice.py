"""`--operations` read exactly, with the one-line messages a user acts on, and the choice of an
operation as a pure function of (run seed, item id, round).
"""

from __future__ import annotations

import os
import random
import subprocess
import sys

import pytest

from evol.errors import UsageError
from evol.method.operations import OPERATIONS, choice_rng, choose_operation, parse_weights

KNOWN = "add_constraints, deepen, concretize, increase_reasoning, complicate_input, breadth"


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("   ", dict.fromkeys(OPERATIONS, 1.0)),
        (" deepen = 2 , breadth= ", {"deepen": 2.0, "breadth": 1.0}),
        ("deepen=0.25", {"deepen": 0.25}),
        ("deepen=-0,breadth=1", {"breadth": 1.0}),
        ("deepen=1e3", {"deepen": 1000.0}),
    ],
)
def test_weights_as_written(spec: str, expected: dict[str, float]) -> None:
    assert parse_weights(spec) == expected


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("deep", f"--operations: unknown operation 'deep'; known: {KNOWN}"),
        ("deepen=x", "--operations: weight of deepen must be a number, got 'x'"),
        ("deepen=-0.5", "--operations: weight of deepen must be a finite number >= 0"),
        ("deepen=nan", "--operations: weight of deepen must be a finite number >= 0"),
        ("deepen=INF", "--operations: weight of deepen must be a finite number >= 0"),
        ("deepen=0,breadth=0", "--operations: at least one operation needs a weight above 0"),
    ],
)
def test_each_bad_spec_is_one_line_that_names_it(spec: str, message: str) -> None:
    with pytest.raises(UsageError) as raised:
        parse_weights(spec)
    assert str(raised.value) == message


def test_an_operation_of_weight_zero_is_never_chosen() -> None:
    weights = parse_weights("deepen=0,breadth=1,concretize=1")
    chosen = {choose_operation(weights, 3, f"s{i}", r) for i in range(200) for r in (1, 2)}
    assert chosen == {"breadth", "concretize"}


def test_the_choice_is_spread_over_the_names_in_sorted_order() -> None:
    # A weight belongs to its name, whatever order the spec gave: swapping two weights moves
    # the choices, and giving the same weights in another order does not.
    first = {"deepen": 9.0, "breadth": 1.0}
    same = {"breadth": 1.0, "deepen": 9.0}
    swapped = {"deepen": 1.0, "breadth": 9.0}
    picks = [choose_operation(first, 0, f"s{i}", 1) for i in range(300)]
    assert picks == [choose_operation(same, 0, f"s{i}", 1) for i in range(300)]
    assert picks.count("deepen") > 240
    assert [choose_operation(swapped, 0, f"s{i}", 1) for i in range(300)].count("breadth") > 240


def test_the_operation_depends_on_the_round() -> None:
    weights = parse_weights(None)
    for item in ("s1", "s2", "seed-a", "s1.3"):
        chosen = {choose_operation(weights, 0, item, round_) for round_ in range(1, 41)}
        assert len(chosen) > 1, item  # the same for 40 rounds: the round is ignored


def test_the_operation_choice_is_the_same_in_every_process() -> None:
    """A per-process hash() in the choice would change with PYTHONHASHSEED."""
    code = (
        "from evol.method.operations import choose_operation, parse_weights\n"
        "w = parse_weights(None)\n"
        "print(','.join(choose_operation(w, 5, f's{i}', r) for i in range(30) for r in (1, 2)))\n"
    )
    outputs = set()
    for hash_seed in ("0", "1", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        result = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True
        )
        assert result.returncode == 0, result.stderr
        outputs.add(result.stdout)
    local = ",".join(
        choose_operation(parse_weights(None), 5, f"s{i}", r) for i in range(30) for r in (1, 2)
    )
    assert outputs == {local + "\n"}


def test_the_choice_streams_are_the_operations_as_before_and_the_constraints_own() -> None:
    before = random.Random("7\0s1.2\x003").random()  # choose_operation's stream until now
    assert choice_rng(7, "s1.2", 3).random() == before
    assert choice_rng(7, "s1.2", 3, "constraint").random() != before
    assert (
        choice_rng(7, "s1.2", 3, "constraint").random()
        == random.Random("7\0s1.2\x003\0constraint").random()
    )
