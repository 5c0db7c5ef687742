"""The duplicate rule: ROUGE-L against the pool, exact or through MinHash candidates."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest

from evol.method.dedup import DuplicateIndex, rouge_l, tokens
from tests.support.fake_server import FakeServer, Responder
from tests.support.runs import read_jsonl, run_args, write_seeds


@pytest.mark.parametrize(
    ("first", "second", "expected"),
    [
        ("the cat sat on the mat", "the cat sat on a mat", 5 / 6),  # LCS 5 of 6 and 6
        ("a b c d", "d c b a", 1 / 4),  # LCS 1
        ("a b c d e f", "a c e", 2 * (3 / 6) * 1 / (3 / 6 + 1)),  # LCS 3: P 3/6, R 3/3
        ("Hello, World!", "hello world", 1.0),
        ("", "anything", 0.0),
        ("x y", "z w", 0.0),
    ],
)
def test_rouge_l(first: str, second: str, expected: float) -> None:
    assert rouge_l(tokens(first), tokens(second)) == pytest.approx(expected)


@pytest.mark.parametrize("method", ["rouge-l", "minhash"])
def test_index_finds_exact_and_near_duplicates_of_other_lineages(method: str) -> None:
    pool = DuplicateIndex(method=method)
    pool.add("s1", "s1", "Explain how photosynthesis works in green plants, step by step.")
    pool.add("s2", "s2", "Write a haiku about the winter sea at night.")
    assert pool.find("EXPLAIN how photosynthesis works in green plants step by step!", "s9") == "s1"
    assert (
        pool.find("Explain how photosynthesis works in plants, step by step please.", "s9") == "s1"
    )
    assert (
        pool.find("Explain how photosynthesis works in green plants, step by step.", "s1") is None
    )
    assert pool.find("Describe the causes of the French Revolution.", "s9") is None
    assert len(pool) == 2


def test_exact_method_agrees_with_the_definition_and_minhash_never_invents() -> None:
    rng = random.Random(5)
    vocabulary = [f"w{i}" for i in range(40)]
    texts = [" ".join(rng.choices(vocabulary, k=rng.randint(6, 14))) for _ in range(150)]
    texts += [t.rsplit(" ", 1)[0] + " extra" for t in texts[:60]]  # near-duplicates
    exact, hashed = DuplicateIndex(method="rouge-l"), DuplicateIndex(method="minhash")
    for number, text in enumerate(texts):
        root = f"r{number}"
        truth = [
            i for i, old in enumerate(texts[:number]) if rouge_l(tokens(text), tokens(old)) >= 0.7
        ]
        found = exact.find(text, root)
        assert (found is not None) == bool(truth)
        if found is not None:
            assert int(found[1:]) in truth
        maybe = hashed.find(text, root)
        assert maybe is None or int(maybe[1:]) in truth
        exact.add(f"r{number}", root, text)
        hashed.add(f"r{number}", root, text)


def test_minhash_recall_on_planted_near_duplicates() -> None:
    rng = random.Random(11)
    words = [f"word{i}" for i in range(5000)]
    pool = DuplicateIndex(method="minhash")
    originals = [" ".join(rng.choices(words, k=20)) for _ in range(2000)]
    for number, text in enumerate(originals):
        pool.add(f"o{number}", f"o{number}", text)
    planted = [text.split() for text in originals[:300]]
    for sentence in planted:
        sentence[rng.randrange(20)] = "changed"  # ROUGE-L 0.95 with its original
    found = sum(pool.find(" ".join(sentence), "new") is not None for sentence in planted)
    assert found / len(planted) >= 0.98


def test_dedup_eliminates_an_evolution_that_repeats_another_lineage(
    evol, server, tmp_path: Path
) -> None:
    rows = [
        {
            "id": "a",
            "instruction": "Explain how a cell divides into two cells during mitosis in humans",
        },
        {"id": "b", "instruction": "Explain how a cell divides into two cells during mitosis"},
        {"id": "c", "instruction": "Write a limerick about a cat"},
    ]
    seeds = write_seeds(tmp_path / "seeds.jsonl", rows)
    common = ["--base-url", server.base_url, "--generations", "1", "--quiet"]
    assert evol("run", seeds, "--out", tmp_path / "plain", *common).exit_code == 0
    assert not (tmp_path / "plain" / "eliminated.jsonl").exists()

    server.requests.clear()
    assert (
        evol("run", seeds, "--out", tmp_path / "dedup", *common, "--dedup", "--json").exit_code == 0
    )
    eliminated = {r["root_id"]: r for r in read_jsonl(tmp_path / "dedup" / "eliminated.jsonl")}
    # b + " Also consider case xxxxxx." is within ROUGE-L 0.7 of seed a, and the other way round.
    assert set(eliminated) == {"a", "b"}
    assert eliminated["a"]["reason"] == "duplicate" and eliminated["a"]["duplicate_of"] in {
        "b",
        "b.1",
    }
    assert eliminated["b"]["duplicate_of"] in {"a", "a.1"}
    assert all(
        set(r["usage"]) == {"evolve"} for r in eliminated.values()
    )  # no answer or judge paid
    assert [r["id"] for r in read_jsonl(tmp_path / "dedup" / "gen_1.jsonl")] == ["c.1"]
    manifest = json.loads((tmp_path / "dedup" / "run.json").read_text())
    assert manifest["counts"]["eliminated_per_reason"] == {"duplicate": 2}
    assert manifest["config"]["rules"]["dedup"] is True


# -- which neighbour is named (found by mutation testing) --------------------------------------


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


GREEK = "alpha beta gamma delta epsilon zeta eta theta iota kappa"


@pytest.mark.parametrize("method", ["rouge-l", "minhash"])
def test_neighbours_are_the_best_other_entries(method: str) -> None:
    pool = DuplicateIndex(method=method)
    pool.add("a", "a", GREEK)
    pool.add("b", "b", GREEK.replace("kappa", "lambda"))  # a's, one word changed: 0.9
    pool.add("c", "c", GREEK.replace("iota kappa", "omega psi"))  # two changed: 0.8 to a, b
    pool.add("d", "d", "One, two; THREE four")
    pool.add("e", "e", "one two three four")  # d's words exactly
    found = pool.neighbours()
    assert found["a"] == ("b", pytest.approx(0.9)) and found["b"] == ("a", pytest.approx(0.9))
    assert found["c"] == ("a", pytest.approx(0.8))  # a and b tie: the first added
    assert found["d"] == ("e", 1.0) and found["e"] == ("d", 1.0)


def test_neighbours_with_minhash_are_none_when_nothing_is_close() -> None:
    pool = DuplicateIndex(method="minhash")
    pool.add("a", "a", GREEK)
    pool.add("b", "b", "one two three four five six")
    assert pool.neighbours() == {"a": None, "b": None}
    assert DuplicateIndex(method="rouge-l").neighbours() == {}


@pytest.mark.parametrize("method", ["rouge-l", "minhash"])
def test_a_score_exactly_at_the_threshold_counts_as_a_duplicate(method: str) -> None:
    kept = "one two three four five six seven eight nine ten"
    new = "one two three four five six seven eight ALPHA BETA"
    score = rouge_l(tokens(new), tokens(kept))  # the very float the index computes
    for threshold, expected in ((score, "a.1"), (math.nextafter(score, 1.0), None)):
        pool = DuplicateIndex(method=method, threshold=threshold)
        pool.add("a.1", "a", kept)
        assert pool.find(new, "b") == expected, threshold


class CopyingResponder(Responder):
    """Lineage b's round-2 rewrite copies lineage a's round-1 kept evolution."""

    def __init__(self) -> None:
        super().__init__()
        self.a_round_1: str | None = None

    def evolve(self, instruction: str, prompt: str):
        rewrite = super().evolve(instruction, prompt)
        if instruction.startswith("Alpha") and self.a_round_1 is None:
            self.a_round_1 = rewrite
        if instruction.startswith("Bravo") and "Also consider" in instruction:
            assert self.a_round_1 is not None
            return self.a_round_1
        return rewrite


def test_kept_evolutions_join_the_duplicate_pool(evol, tmp_path: Path) -> None:
    rows = [
        {"id": "a", "instruction": "Alpha: explain tides"},
        {"id": "b", "instruction": "Bravo: explain rain"},
    ]
    seeds = write_seeds(tmp_path / "seeds.jsonl", rows)
    with FakeServer(responder=CopyingResponder()) as server:
        result = evol(
            *run_args(
                server,
                seeds,
                tmp_path / "run",
                "--generations",
                "2",
                "--dedup",
                "--concurrency",
                "1",
            )
        )
    assert result.exit_code == 0, result.output
    eliminated = read_jsonl(tmp_path / "run" / "eliminated.jsonl")
    assert [(r["id"], r["reason"], r["duplicate_of"]) for r in eliminated] == [
        ("b.1.2", "duplicate", "a.1")
    ]


@pytest.mark.parametrize(
    ("seeds", "generations", "method"), [(250, 3, "rouge-l"), (251, 3, "minhash")]
)
def test_auto_dedup_compares_exactly_up_to_1000_instructions(
    evol, server, tmp_path: Path, seeds: int, generations: int, method: str
) -> None:
    rows = [{"instruction": f"Explain idea {i}"} for i in range(seeds)]
    seed_file = write_seeds(tmp_path / "seeds.jsonl", rows)
    # 250 seeds x (3 rounds + the seed) = 1,000 instructions at most: compared exactly.
    result = evol(
        *run_args(server, seed_file, tmp_path / "run", "--generations", generations, "--dedup",
                  "--no-judge", "--dry-run", "--json")
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["dedup_method"] == method
