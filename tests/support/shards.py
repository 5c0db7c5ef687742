"""Seed ids chosen for the shard they fall in, so that a sharded run puts each seed where a
test wants it."""

from __future__ import annotations

import itertools

from evol.seeds import shard_of


def seed_ids(shards: list[int], count: int) -> list[str]:
    """An id for each wanted shard, in order: p<n> ids that `count` shards place there."""
    pool = (f"p{n}" for n in itertools.count())
    return [next(i for i in pool if shard_of(i, count) == shard) for shard in shards]
