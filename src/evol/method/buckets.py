"""The buckets of a hash index (the dedup pool's MinHash bands, the contamination check's
n-grams): a key holds one position as a plain int, and a list once a second comes. Most keys
hold one, and an int costs a fraction of a one-element list."""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from typing import TypeVar

K = TypeVar("K", bound=Hashable)


def add_to_buckets(buckets: dict[K, int | list[int]], entries: Iterable[tuple[K, int]]) -> None:
    """Put each (key, position) of `entries` into the bucket of its key, after those already
    there (one call for an item's keys: the loop stays out of the caller's)."""
    for key, position in entries:
        held = buckets.get(key)
        if held is None:
            buckets[key] = position
        elif isinstance(held, int):
            buckets[key] = [held, position]
        else:
            held.append(position)
