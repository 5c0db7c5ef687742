"""A detail of the duplicate rule that mutation testing found unguarded (`make mutate`): an
exact copy is named before a near one that came first in the pool."""

from __future__ import annotations

import pytest

from evol.method.dedup import DuplicateIndex, rouge_l, tokens

EXACT = "Explain why the sky is blue in one short paragraph"
NEAR = "Explain why the sky is blue in one short paragraph today"


@pytest.mark.parametrize("method", ["rouge-l", "minhash"])
def test_an_exact_copy_is_named_before_an_earlier_near_one(method: str) -> None:
    pool = DuplicateIndex(method=method)
    pool.add("a.1", "a", NEAR)  # ROUGE-L 0.95 with EXACT, and first in the pool
    pool.add("b.1", "b", EXACT)
    assert pool.find(EXACT.upper() + "!", "c") == "b.1"
    assert pool.find(EXACT, "b") == "a.1"  # its own lineage's copy does not count


def test_every_entrys_neighbour_is_its_best_even_after_a_pair_was_skipped() -> None:
    # Pairs that cannot beat both sides' best are skipped; the pairs after them still count.
    texts = [
        "charlie charlie bravo bravo charlie",
        "bravo charlie",
        "echo echo alpha delta bravo charlie bravo delta",
        "alpha bravo bravo bravo",
        "foxtrot charlie",
    ]
    pool = DuplicateIndex(method="rouge-l")
    for number, text in enumerate(texts):
        pool.add(f"t{number}", f"t{number}", text)
    found = pool.neighbours()
    words = [tokens(text) for text in texts]
    for me, mine in enumerate(words):
        best = max(rouge_l(mine, other) for you, other in enumerate(words) if you != me)
        assert found[f"t{me}"][1] == pytest.approx(best)
    assert {me: you for me, (you, _score) in found.items()} == {
        "t0": "t1",
        "t1": "t0",
        "t2": "t3",
        "t3": "t2",
        "t4": "t1",
    }
