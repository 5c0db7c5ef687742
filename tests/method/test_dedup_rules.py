"""The duplicate rule's promises: `--dedup-method` and `--dedup-threshold` do what they say
through the command line, a resumed run's pool holds every kept instruction and every seed, a
text always finds its exact copy in another lineage and never its own, the cheap bounds never
drop a real duplicate, and the MinHash functions are the same in every run.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evol.method.dedup import EXACT_UP_TO, DuplicateIndex, _may_reach, load_pool, resolved_method
from evol.method.elimination import EliminationRules
from evol.method.textstats import rouge_l, tokens
from tests.support.runs import read_jsonl, run_args, write_seeds

# Deterministic on every machine, and never failed for being slow.
PROPERTY = settings(derandomize=True, deadline=None, max_examples=200, database=None)

CELL = "Explain how a cell divides into two cells during mitosis"
ROWS = [{"id": "a", "instruction": f"{CELL} in humans"}, {"id": "b", "instruction": CELL}]


# -- the options, through the command line ----------------------------------------------------


@pytest.mark.parametrize(
    ("threshold", "eliminated"),
    [
        # a.1 = a + a clause: ROUGE-L 20/26 = 0.77 with seed b. b.1 = b + a clause: 0.87 with a.1.
        ("0.7", [("a.1", "b"), ("b.1", "a")]),  # each repeats the other's seed
        ("0.8", [("b.1", "a.1")]),  # a kept evolution is in the pool
        ("0.9", []),
    ],
)
def test_the_threshold_decides_what_repeats(
    evol, server, tmp_path: Path, threshold: str, eliminated: list[tuple[str, str]]
) -> None:
    seeds, out = write_seeds(tmp_path / "seeds.jsonl", ROWS), tmp_path / "run"
    options = ("--generations", "1", "--dedup", "--concurrency", "1", "--no-judge")
    result = evol(*run_args(server, seeds, out, *options, "--dedup-threshold", threshold))
    assert result.exit_code == 0, result.output
    found = [(r["id"], r["duplicate_of"]) for r in read_jsonl(out / "eliminated.jsonl")]
    assert found == eliminated
    rules = json.loads((out / "run.json").read_text())["config"]["rules"]
    assert rules["dedup_threshold"] == float(threshold)


@pytest.mark.parametrize("threshold", ["0", "1.01", "-1", "nan"])
def test_a_threshold_outside_0_to_1_is_one_line_and_exit_2(
    evol, server, tmp_path: Path, threshold: str
) -> None:
    seeds = write_seeds(tmp_path / "seeds.jsonl", ROWS)
    result = evol(*run_args(server, seeds, tmp_path / "run", "--dedup-threshold", threshold))
    assert result.exit_code == 2
    assert "--dedup-threshold" in result.stderr and "Traceback" not in result.output
    assert server.requests == []


@pytest.mark.parametrize(
    ("seeds", "option", "method"),
    [
        (3, ["--dedup-method", "minhash"], "minhash"),  # asked for, however small the pool
        (300, ["--dedup-method", "rouge-l"], "rouge-l"),  # asked for, however large
        (300, [], "minhash"),
        (250, [], "rouge-l"),  # 250 seeds and 3 rewrites of each: at most EXACT_UP_TO, exact
        (3, [], "rouge-l"),
    ],
)
def test_the_method_asked_for_is_the_method_used(
    evol, server, tmp_path: Path, seeds: int, option: list[str], method: str
) -> None:
    rows = [{"instruction": f"Explain idea {i}"} for i in range(seeds)]
    seed_file = write_seeds(tmp_path / "seeds.jsonl", rows)
    common = ("--generations", "3", "--dedup", "--no-judge", *option)
    planned = evol(*run_args(server, seed_file, tmp_path / "plan", *common, "--dry-run", "--json"))
    assert planned.exit_code == 0, planned.output
    assert json.loads(planned.stdout)["dedup_method"] == method
    if seeds > 3:
        return
    result = evol(*run_args(server, seed_file, tmp_path / "run", *common))
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "run" / "run.json").read_text())
    assert manifest["dedup"] == {"method": method}


def test_the_environment_sets_the_method_and_the_threshold(evol, server, tmp_path: Path) -> None:
    seeds = write_seeds(tmp_path / "seeds.jsonl", ROWS)
    env = {"EVOL_DEDUP_METHOD": "minhash", "EVOL_DEDUP_THRESHOLD": "0.9"}
    result = evol(*run_args(server, seeds, tmp_path / "run", "--dedup", "--no-judge"), env=env)
    assert result.exit_code == 0, result.output
    rules = json.loads((tmp_path / "run" / "run.json").read_text())["config"]["rules"]
    assert (rules["dedup_method"], rules["dedup_threshold"]) == ("minhash", 0.9)


# -- the pool a run starts from ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "largest", "expected"),
    [
        ("auto", EXACT_UP_TO, "rouge-l"),
        ("auto", EXACT_UP_TO + 1, "minhash"),
        ("rouge-l", 10**6, "rouge-l"),
        ("minhash", 1, "minhash"),
    ],
)
def test_resolved_method(method: str, largest: int, expected: str) -> None:
    assert EXACT_UP_TO == 1_000
    assert resolved_method(method, largest) == expected


def test_a_resumed_pool_holds_every_kept_instruction_and_every_seed_once() -> None:
    rules = EliminationRules(dedup=True, dedup_method="auto", dedup_threshold=0.9)
    kept = [
        ("a", "a", "Name three rivers of Spain"),
        ("a.1", "a", "Name three rivers of Spain and their sources"),
    ]
    seeds = [("a", "Name three rivers of Spain"), ("b", "Write a haiku about snow")]
    pool = load_pool(rules, 2_000, iter(kept), iter(seeds))
    assert (pool.method, pool.threshold, len(pool)) == ("minhash", 0.9, 3)
    assert pool.find("name three rivers of spain and their sources!", "z") == "a.1"
    assert pool.find("Name three rivers of Spain and their sources", "a") is None
    assert pool.find("Write a haiku about snow.", "z") == "b"  # a seed whose answer failed
    assert load_pool(EliminationRules(), 10, [], []).method == "rouge-l"


# -- finding: exact copies, lineages, bounds --------------------------------------------------

WORDS = st.sampled_from(["tide", "moon", "sun", "sea", "wave", "salt", "the", "of"])
TEXT = st.lists(WORDS, min_size=0, max_size=9).map(" ".join)
ENTRIES = st.lists(st.tuples(st.sampled_from("abc"), TEXT), min_size=1, max_size=8)


@PROPERTY
@given(entries=ENTRIES, method=st.sampled_from(["rouge-l", "minhash"]), data=st.data())
def test_a_text_finds_an_exact_copy_in_another_lineage_never_its_own(
    entries: list[tuple[str, str]], method: str, data: st.DataObject
) -> None:
    pool = DuplicateIndex(method=method)
    for number, (root, text) in enumerate(entries):
        pool.add(f"{root}{number}", root, text)
    root, text = data.draw(st.sampled_from(entries))
    roots = {entry_root: None for entry_root, _ in entries}
    for asking in roots:
        found = pool.find(text.upper() + " !", asking)
        if found is not None:
            assert not found.startswith(asking)  # never its own lineage
        if asking != root:
            assert found is not None  # its exact copy, in root's lineage, is there


@pytest.mark.parametrize("method", ["rouge-l", "minhash"])
def test_the_first_copy_from_another_lineage_is_the_one_named(method: str) -> None:
    pool = DuplicateIndex(method=method)
    pool.add("a.1", "a", "Explain the tides of the sea")
    pool.add("b.1", "b", "explain the tides of the sea!")
    pool.add("c.1", "c", "Explain the tides of the sea.")
    assert pool.find("EXPLAIN THE TIDES OF THE SEA", "a") == "b.1"
    assert pool.find("EXPLAIN THE TIDES OF THE SEA", "z") == "a.1"
    # A near-duplicate (not exact) follows the same order.
    assert pool.find("Explain the tides of the sea now", "a") == "b.1"


@PROPERTY
@given(
    first=st.lists(WORDS, max_size=10),
    second=st.lists(WORDS, max_size=10),
    threshold=st.sampled_from([0.5, 0.7, 0.75, 0.8, 0.9, 1.0]),
)
def test_the_cheap_bounds_never_drop_a_real_duplicate(
    first: list[str], second: list[str], threshold: float
) -> None:
    if rouge_l(first, second) >= threshold:
        assert _may_reach(first, second, threshold)


@pytest.mark.parametrize(
    ("first", "second", "threshold"),
    [
        ("a b c d", "a b c d e f", 0.8),  # 2 * 4 / 10: only as many as the shorter one
        ("a a a b", "a a a c", 0.75),  # 2 * 3 / 8: one shared word, two repeats
        ("a a b", "a a b", 1.0),
        ("a b", "a b c d e f", 0.5),
    ],
)
def test_the_bounds_hold_at_the_threshold_itself(first: str, second: str, threshold: float) -> None:
    words, other = tokens(first), tokens(second)
    assert rouge_l(words, other) == threshold
    assert _may_reach(words, other, threshold) and _may_reach(other, words, threshold)
    pool = DuplicateIndex(threshold=threshold)
    pool.add("x", "x", second)
    assert pool.find(first, "y") == "x"


@pytest.mark.parametrize(
    ("first", "second", "threshold"),
    [
        ("a b c", "a b c d e f", 0.7),  # 6 / 9 < 0.7 on lengths alone
        ("a b c d", "e f g h", 0.1),  # nothing shared
        ("", "", 0.5),
    ],
)
def test_the_bounds_drop_what_cannot_reach(first: str, second: str, threshold: float) -> None:
    assert not _may_reach(tokens(first), tokens(second), threshold)


def test_the_minhash_functions_are_the_same_in_every_run() -> None:
    """The hash functions decide which near-duplicates are candidates: a change to them (or to
    numpy's generator) changes what a rerun or a resumed run eliminates, so it must be seen
    and meant: then update this digest."""
    index = DuplicateIndex(method="minhash")
    keys = [index._band_keys(tokens(text)) for text in ("Explain the tides", "a b c d e f g")]
    assert len(keys[0]) == index.bands == 16
    digest = hashlib.sha256(json.dumps(keys).encode()).hexdigest()[:16]
    assert digest == "9d88689a6ea4dddd"


def test_buckets_shared_by_many_texts_find_each_of_them() -> None:
    pool = DuplicateIndex(method="minhash")
    texts = ["tide moon sun sea", "tide moon sun sea sea", "tide tide moon sun sea", "salt wave"]
    for number, text in enumerate(texts):
        pool.add(f"r{number}", f"r{number}", text)
    # The first three have the same words (and so every bucket); the first one found wins.
    assert pool.find("tide moon sun sea", "r0") == "r1"
    assert pool.find("tide moon sun sea", "r1") == "r0"
    assert pool.find("tide moon sun sea", "r9") == "r0"
    assert pool.find("Salt, wave!", "r0") == "r3"
    assert pool.find("Salt, wave!", "r3") is None
