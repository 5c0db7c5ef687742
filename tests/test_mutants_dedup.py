"""A detail of the duplicate rule that mutation testing found unguarded (`make mutate`): an
exact copy is named before a near one that came first in the pool."""

from __future__ import annotations

import pytest

from evol.dedup import DuplicateIndex

EXACT = "Explain why the sky is blue in one short paragraph"
NEAR = "Explain why the sky is blue in one short paragraph today"


@pytest.mark.parametrize("method", ["rouge-l", "minhash"])
def test_an_exact_copy_is_named_before_an_earlier_near_one(method: str) -> None:
    pool = DuplicateIndex(method=method)
    pool.add("a.1", "a", NEAR)  # ROUGE-L 0.95 with EXACT, and first in the pool
    pool.add("b.1", "b", EXACT)
    assert pool.find(EXACT.upper() + "!", "c") == "b.1"
    assert pool.find(EXACT, "b") == "a.1"  # its own lineage's copy does not count
