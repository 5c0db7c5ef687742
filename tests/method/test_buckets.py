"""evol.method.buckets: a key holds one position as an int, then a list in the order added;
checked against a plain dict of lists."""

from __future__ import annotations

import pytest

from evol.method.buckets import add_to_buckets


def as_lists(buckets: dict[str, int | list[int]]) -> dict[str, list[int]]:
    return {key: [held] if isinstance(held, int) else held for key, held in buckets.items()}


@pytest.mark.parametrize(
    ("batches", "expected"),
    [
        ([], {}),
        ([[("a", 0)]], {"a": 0}),  # one position: a plain int
        ([[("a", 0), ("b", 1)]], {"a": 0, "b": 1}),
        ([[("a", 0), ("a", 1)]], {"a": [0, 1]}),  # a second: a list, in the order added
        ([[("a", 5)], [("a", 2)], [("a", 9)]], {"a": [5, 2, 9]}),  # a third: appended
        (
            [[("a", 0), ("b", 0)], [("a", 1)], [("b", 2), ("c", 2)]],
            {"a": [0, 1], "b": [0, 2], "c": 2},
        ),
        ([[("a", 0), ("a", 0)]], {"a": [0, 0]}),  # a repeat is kept: deduplicating is the caller's
    ],
)
def test_each_position_lands_in_its_keys_bucket_in_order(
    batches: list[list[tuple[str, int]]], expected: dict[str, int | list[int]]
) -> None:
    buckets: dict[str, int | list[int]] = {}
    reference: dict[str, list[int]] = {}
    for batch in batches:
        entries = list(batch)
        add_to_buckets(buckets, entries)
        for key, position in entries:
            reference.setdefault(key, []).append(position)
    assert buckets == expected
    assert as_lists(buckets) == reference


def test_a_list_bucket_is_grown_in_place() -> None:
    buckets: dict[str, int | list[int]] = {}
    add_to_buckets(buckets, [("a", 0), ("a", 1)])
    held = buckets["a"]
    add_to_buckets(buckets, [("a", 2)])
    assert buckets["a"] is held and held == [0, 1, 2]
