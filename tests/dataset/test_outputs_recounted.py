"""Promises of merge, stats, selection and contamination, checked on whole outputs (#22).

Each test runs a whole command (`evol merge`, `evol stats`, `evol select`, `evol score
--against`) on run directories made against the fake server, and compares what it wrote with
an expectation computed another way: the unsharded run, a recount from the record and score
files, a plain greedy pick, a plain n-gram lookup. The runs are as varied as real ones:
lineages of several generations with eliminated rounds between (so round differs from
generation, and id from parent_id and root_id), failed seed answers, shards that lack a file.
"""

from __future__ import annotations

import itertools
import json
import shutil
import statistics
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from evol.method.textstats import rouge_l, tokens, word_count
from evol.quality.contamination import MATCHES_KEPT, check_contamination
from evol.seeds import shard_of
from tests.support.fake_server import FakeServer, Responder
from tests.support.runs import (
    Evol,
    assert_valid_run,
    read_jsonl,
    record,
    run_args,
    write_run,
    write_seeds,
)
from tests.support.scoring import ScoringResponder
from tests.support.selection import scored_run
from tests.support.shards import seed_ids

pytestmark = pytest.mark.usefixtures("scripted_backend")

# -- merge -------------------------------------------------------------------------------------

SHARDS = 4
# (shard, marker, text) of each seed, in seed-file order. Shard 0 holds only lineages whose
# first rewrite leaks (round 1 eliminated, so an empty gen_3.jsonl); shard 3 only clean ones (no
# eliminated.jsonl); shard 1 a seed whose answer fails and one the judge finds equal.
LAYOUT = [
    (1, "", "Explain how rivers carve canyons over many thousands of years"),
    (0, "[leak-once] ", "Suggest a name for a small bakery by the sea"),
    (3, "", "Describe how the gears of a bicycle help on steep hills"),
    (2, "[leak] ", "Describe what a good guide dog must learn"),
    (1, "[sorry] ", "Summarize the plot of Hamlet for a ten year old"),
    (0, "[leak-once] ", "Plan a weekend trip to Lisbon on a small budget"),
    (2, "", "Compute the area of a circle whose radius is three metres"),
    (3, "", "Give tips for a job interview at a large bank"),
    (1, "[equal] ", "Translate good morning into Spanish and Portuguese"),
]
RECORD_FILES = [
    "gen_0.jsonl",
    "gen_1.jsonl",
    "gen_2.jsonl",
    "gen_3.jsonl",
    "eliminated.jsonl",
    "dataset.jsonl",
]


class VariedAnswers(Responder):
    """The default script, with answers whose length follows the instruction's."""

    def answer(self, instruction: str) -> str | tuple[str, str]:
        reply = super().answer(instruction)
        if isinstance(reply, str) and reply.startswith("Here is a worked answer"):
            return reply + " Note this." * (len(instruction.split()) % 5)
        return reply


def evolve(seeds: Path, out: Path, *extra: object) -> None:
    """`evol run` with three generations and --dedup, on a server of its own ([leak-once]
    leaks once per server)."""
    with FakeServer(responder=VariedAnswers()) as server:
        result = Evol()(*run_args(server, seeds, out, "--generations", "3", "--dedup", *extra))
    assert result.exit_code == 0, result.output


@pytest.fixture(scope="module")
def shard_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The unsharded run and its four shards, made once."""
    base = tmp_path_factory.mktemp("merge")
    ids = seed_ids([shard for shard, _marker, _text in LAYOUT], SHARDS)
    rows = [
        {"id": seed_id, "instruction": marker + text}
        for seed_id, (_shard, marker, text) in zip(ids, LAYOUT, strict=True)
    ]
    seeds = write_seeds(base / "seeds.jsonl", rows)
    evolve(seeds, base / "full")
    shards = []
    for index in range(SHARDS):
        shards.append(base / f"shard-{index}")
        evolve(seeds, shards[-1], "--shard", f"{index}/{SHARDS}")
    roots = {seed_id: shard for seed_id, (shard, _m, _t) in zip(ids, LAYOUT, strict=True)}
    return {"seeds": seeds, "full": base / "full", "shards": shards, "roots": roots}


def lines_of(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True) if path.exists() else []


def test_the_fixture_is_as_varied_as_a_real_run(shard_runs: dict[str, Any]) -> None:
    full, shards = shard_runs["full"], shard_runs["shards"]
    kept = [r for g in range(4) for r in read_jsonl(full / f"gen_{g}.jsonl")]
    assert any(r["round"] != r["generation"] for r in kept)
    assert any(r["parent_id"] not in (None, r["root_id"]) for r in kept)
    assert any(r["generation"] == 0 for r in read_jsonl(full / "eliminated.jsonl"))
    # Shard 0 kept nothing at generation 3: its file is there, empty, as in any finished run.
    assert (shards[0] / "gen_3.jsonl").stat().st_size == 0
    assert (shards[1] / "gen_3.jsonl").stat().st_size > 0
    assert not (shards[3] / "eliminated.jsonl").exists()


SUBSETS = [c for k in range(1, SHARDS + 1) for c in itertools.combinations(range(SHARDS), k)]


@pytest.mark.parametrize("present", SUBSETS, ids=lambda c: "+".join(map(str, c)))
def test_any_subset_of_shards_merges_to_the_unsharded_run_or_is_refused(
    evol, shard_runs: dict[str, Any], tmp_path: Path, present: tuple[int, ...]
) -> None:
    full, shards, roots = shard_runs["full"], shard_runs["shards"], shard_runs["roots"]
    given = [shards[i] for i in reversed(present)]  # in any order
    missing = [f"{i}/{SHARDS}" for i in range(SHARDS) if i not in present]
    out = tmp_path / "merged"
    result = evol("merge", *given, "--out", out, "--json")
    if missing:
        assert result.exit_code == 2
        plural = "s" if len(missing) > 1 else ""
        assert f"missing shard{plural} {', '.join(missing)}: pass every" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1 and not out.exists()
        result = evol("merge", *given, "--out", out, "--json", "--partial")
    assert result.exit_code == 0, result.output

    # The unsharded run's records of these shards' lineages, in its order, byte for byte.
    mine = {root for root, shard in roots.items() if shard in present}
    for name in RECORD_FILES:
        expected = [line for line in lines_of(full / name) if json.loads(line)["root_id"] in mine]
        assert lines_of(out / name) == expected, name
    manifest = assert_valid_run(out)
    summary = json.loads(result.stdout)
    own = [json.loads((shards[i] / "run.json").read_text()) for i in present]
    assert summary | {"out": None} == {
        "out": None,
        "shards": [f"{i}/{SHARDS}" for i in present],
        "missing": missing,
        "seeds": len(mine),
        "kept": len(lines_of(out / "dataset.jsonl")),
        "eliminated": len(lines_of(out / "eliminated.jsonl")),
        "dataset": str(out / "dataset.jsonl"),
        "dataset_records": len(lines_of(out / "dataset.jsonl")),
        "cross_shard_duplicates": [],
    }
    assert manifest["seeds"]["count"] == len(mine) and manifest["status"] == "complete"
    assert manifest["shards"]["missing"] == missing
    assert manifest["shards"]["runs"] == [
        {
            "path": str(shards[i]),
            "shard": f"{i}/{SHARDS}",
            "seeds": shard["seeds"]["count"],
            "kept": shard["counts"]["kept"],
            "eliminated": shard["counts"]["eliminated"],
        }
        for i, shard in zip(present, own, strict=True)
    ]
    requests = sum((Counter(shard["summary"]["requests"]) for shard in own), Counter())
    assert manifest["summary"]["requests"] == dict(requests)
    if not missing:
        unsharded = json.loads((full / "run.json").read_text())
        assert manifest["counts"] == unsharded["counts"]
        assert manifest["summary"]["requests"] == unsharded["summary"]["requests"]


def test_a_shard_file_without_its_last_newline_merges_whole(
    evol, shard_runs: dict[str, Any], tmp_path: Path
) -> None:
    copies = []
    for index, shard in enumerate(shard_runs["shards"]):
        copies.append(tmp_path / f"shard-{index}")
        shutil.copytree(shard, copies[-1])
    for name in ("gen_0.jsonl", "eliminated.jsonl"):  # cut where another shard's lines follow
        path = copies[1] / name
        path.write_bytes(path.read_bytes().rstrip(b"\n"))
    result = evol("merge", *copies, "--out", tmp_path / "merged")
    assert result.exit_code == 0, result.output
    for name in RECORD_FILES:
        assert lines_of(tmp_path / "merged" / name) == lines_of(shard_runs["full"] / name), name


@pytest.mark.parametrize(
    ("option", "named"), [(("--limit", "8"), "--limit"), (("--generations", "2"), "--generations")]
)
def test_a_shard_made_with_another_limit_or_depth_is_refused(
    evol, shard_runs: dict[str, Any], tmp_path: Path, option: tuple[str, str], named: str
) -> None:
    other = tmp_path / "other"
    with FakeServer() as server:
        made = evol(
            *run_args(server, shard_runs["seeds"], other, "--generations", "3", "--dedup"),
            "--shard",
            f"1/{SHARDS}",
            *option,  # the last --generations given counts
        )
    assert made.exit_code == 0, made.output
    shards = shard_runs["shards"]
    result = evol("merge", shards[0], other, shards[2], shards[3], "--out", tmp_path / "m")
    assert result.exit_code == 2
    assert f"{other} and {shards[0]} are not shards of one run: they differ in {named}" in (
        result.stderr
    )
    assert not (tmp_path / "m").exists()


def test_cross_shard_duplicates_are_exactly_the_evolutions_repeating_another_shard(
    evol, tmp_path: Path
) -> None:
    """With --dedup: every kept evolution of the three lineages that repeat another shard's
    seed (one of them a seed whose answer failed, still in the pool) is listed, no seed."""
    first, second, third, fourth = seed_ids([0, 1, 0, 1], 2)
    text = "Describe the water cycle for a class of ten year old pupils"
    other = "Write a short poem about the first snow falling on a quiet town"
    rows = [
        {"id": first, "instruction": text},
        {"id": second, "instruction": text.upper()},
        {"id": third, "instruction": other},
        {"id": fourth, "instruction": "[sorry] " + other},
    ]
    seeds = write_seeds(tmp_path / "seeds.jsonl", rows)
    shards = []
    for index in range(2):
        shards.append(tmp_path / f"shard-{index}")
        with FakeServer() as server:
            made = evol(
                *run_args(server, seeds, shards[-1], "--generations", "2", "--dedup"),
                "--shard",
                f"{index}/2",
            )
        assert made.exit_code == 0, made.output
    result = evol("merge", *reversed(shards), "--out", tmp_path / "merged", "--json")
    assert result.exit_code == 0, result.output
    found = json.loads(result.stdout)["cross_shard_duplicates"]
    evolutions = [r for r in read_jsonl(tmp_path / "merged" / "dataset.jsonl") if r["generation"]]
    assert {r["root_id"] for r in evolutions} == {first, second, third}
    assert sorted(d["id"] for d in found) == sorted(r["id"] for r in evolutions)
    for duplicate in found:
        original = duplicate["duplicate_of"].split(".")[0]
        assert shard_of(original, 2) != shard_of(duplicate["id"].split(".")[0], 2)
        if duplicate["id"].startswith(third + "."):
            assert duplicate["duplicate_of"] == fourth
    manifest = json.loads((tmp_path / "merged" / "run.json").read_text())
    assert manifest["shards"]["cross_shard_duplicates"] == found


# -- a scored, checked run: stats, select, contamination -------------------------------------

# A and B evolve cleanly, C's first rewrite leaks (its lineage is a round behind), D's
# answers fail (a failed seed), E's rewrites always leak, F is never given a score.
RUN_SEEDS = [
    {"instruction": "Explain how rivers carve canyons over many thousands of years"},
    {"instruction": "Describe how the gears of a bicycle help on steep hills"},
    {"instruction": "[leak-once] Suggest a name for a small bakery by the sea"},
    {"instruction": "[sorry] Summarize the plot of Hamlet for a ten year old"},
    {"instruction": "[leak] Describe what a good guide dog must learn"},
    {"instruction": "[never] Name three long rivers of Europe"},
]
NGRAM = 5


@pytest.fixture(scope="module")
def scored(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The run, scored for difficulty, complexity and quality, and checked against a bench
    whose items share words with C's evolutions only (in an instruction) and with A's seed
    (in an input)."""
    base = tmp_path_factory.mktemp("scored")
    run = base / "run"
    evolve(write_seeds(base / "seeds.jsonl", RUN_SEEDS), run)
    evol = Evol()
    with FakeServer(responder=ScoringResponder()) as server:
        result = evol("score", run, "--base-url", server.base_url, "--answers", "--no-metrics")
    assert result.exit_code == 0, result.output
    c_child = next(r for r in read_jsonl(run / "gen_1.jsonl") if r["root_id"] == "s3")
    bench = base / "bench.jsonl"
    items = [
        {"instruction": "Too short to match"},
        {"instruction": "Quiz: " + " ".join(c_child["instruction"].split()[-7:]) + " Go."},
        {"instruction": "Read the passage.", "input": "Passage: " + RUN_SEEDS[0]["instruction"]},
    ]
    bench.write_text("".join(json.dumps(item) + "\n" for item in items), encoding="utf-8")
    result = evol(
        "score", run, "--no-difficulty", "--no-complexity", "--no-metrics", "--against", bench,
        "--ngram", NGRAM,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return {"run": run, "bench": bench, "items": items}


def kept_of(run: Path) -> list[dict[str, Any]]:
    return [r for g in range(4) for r in read_jsonl(run / f"gen_{g}.jsonl")]


def recorded_scores(run: Path) -> dict[str, dict[str, float | None]]:
    """scorer -> record id -> score, read straight from scores.jsonl (the last line wins)."""
    book: dict[str, dict[str, float | None]] = {"difficulty": {}, "complexity": {}, "quality": {}}
    for line in read_jsonl(run / "scores.jsonl"):
        if line["scorer"] == "complexity":
            book["complexity"].update(line["scores"] or {})
        else:
            book[line["scorer"]][line["id"]] = line["score"]
    return book


def ngrams(words: list[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]


def contaminated_ids(run: Path, items: list[dict[str, str]], n: int) -> set[str]:
    bench = {
        g for i in items for f in ("instruction", "input") for g in ngrams(tokens(i.get(f, "")), n)
    }
    return {
        r["id"]
        for r in kept_of(run)
        if any(set(ngrams(tokens(r.get(f) or ""), n)) & bench for f in ("instruction", "input", "output"))
    }  # fmt: skip


def lengths(values: list[int]) -> dict[str, float] | None:
    if not values:
        return None
    if len(values) == 1:
        return {"mean": float(values[0]), "p50": values[0], "p90": values[0], "max": values[0]}
    p90 = statistics.quantiles(values, n=10, method="inclusive")[8]
    return {
        "mean": round(statistics.mean(values), 1),
        "p50": statistics.median(values),
        "p90": round(p90, 1),
        "max": max(values),
    }


def present(scores: dict[str, float | None], records: list[dict[str, Any]]) -> list[float]:
    """The scores of these records, those that have one (a score is never guessed)."""
    return [v for r in records if (v := scores.get(r["id"])) is not None]


def mean(values: list[float]) -> float | None:
    return round(statistics.mean(values), 4) if values else None


def test_the_scored_run_is_as_varied_as_a_real_one(scored: dict[str, Any]) -> None:
    kept = kept_of(scored["run"])
    assert Counter(r["generation"] for r in kept) == {0: 5, 1: 4, 2: 4, 3: 3}
    assert any(r["round"] != r["generation"] for r in kept)
    assert len({word_count(r["output"]) for r in kept}) > 3
    book = recorded_scores(scored["run"])
    never = {r["id"] for r in kept if r["root_id"] == "s6"}
    for name in ("difficulty", "quality"):
        assert {i for i, v in book[name].items() if v is None} == never
    # E's lineage is its seed alone: nothing to rank, so no complexity score at all.
    assert {r["id"] for r in kept if book["complexity"].get(r["id"]) is None} == never | {"s5"}


def test_stats_per_generation_and_operation_equal_a_recount(evol, scored: dict[str, Any]) -> None:
    run = scored["run"]
    stats = json.loads(evol("stats", run, "--json").stdout)
    kept, eliminated = kept_of(run), read_jsonl(run / "eliminated.jsonl")
    book = recorded_scores(run)
    flagged = contaminated_ids(run, scored["items"], NGRAM)
    assert [row["generation"] for row in stats["generations"]] == [0, 1, 2, 3]
    for row in stats["generations"]:
        mine = [r for r in kept if r["generation"] == row["generation"]]
        gone = Counter(r["reason"] for r in eliminated if r["generation"] == row["generation"])
        difficulty = present(book["difficulty"], mine)  # two in generation 3
        assert row == {
            "generation": row["generation"],
            "kept": len(mine),
            "eliminated": dict(sorted(gone.items())),
            "instruction_words": lengths([word_count(r["instruction"]) for r in mine]),
            "answer_words": lengths([word_count(r["output"]) for r in mine]),
            "difficulty_mean": mean(difficulty),
            "difficulty_sd": round(statistics.stdev(difficulty), 4),
            "difficulty_scored": len(difficulty),
            "complexity_mean": mean(present(book["complexity"], mine)),
            "quality_mean": mean(present(book["quality"], mine)),
            "distinct_1": None,
            "distinct_2": None,
            "drift_rouge_l": None,
            "nearest_rouge_l": None,
            "near_duplicates": None,
            "contaminated": sum(r["id"] in flagged for r in mine),
        }
    everything = [r for r in kept + eliminated if r["operation"]]
    assert set(stats["operations"]) == {r["operation"] for r in everything}
    for name, row in stats["operations"].items():
        children = [r for r in kept if r["operation"] == name]
        failed = [r for r in eliminated if r["operation"] == name]
        gain = {
            scorer: mean(
                [
                    book[scorer][r["id"]] - book[scorer][r["parent_id"]]
                    for r in children
                    if None not in (book[scorer].get(r["id"]), book[scorer].get(r["parent_id"]))
                ]
            )
            for scorer in ("difficulty", "complexity")
        }
        assert row == {
            "kept": len(children),
            "eliminated": len(failed),
            "success_rate": round(len(children) / (len(children) + len(failed)), 4),
            "difficulty_mean": mean(present(book["difficulty"], children)),
            "difficulty_gain": gain["difficulty"],
            "complexity_gain": gain["complexity"],
        }
    assert stats["scores"] == {
        name: {
            "model": "fake-model",
            "scored": sum(v is not None for v in values.values()),
            "missing": sum(v is None for v in values.values()),
        }
        for name, values in book.items()
    }


def test_contamination_flags_the_records_that_share_the_words(scored: dict[str, Any]) -> None:
    run = scored["run"]
    report = json.loads((run / "contamination.json").read_text())
    kept = {r["id"]: r for r in kept_of(run)}
    flagged = contaminated_ids(run, scored["items"], NGRAM)
    # A's lineage (the seed is an item's input) and C's evolutions, not C's seed.
    assert {kept[i]["root_id"] for i in flagged} == {"s1", "s3"} and "s3" not in flagged
    assert [r["id"] for r in report["flagged"]] == [i for i in kept if i in flagged]
    for row in report["flagged"]:
        assert row["generation"] == kept[row["id"]]["generation"]
        (match,) = row["matches"]
        assert match["path"] == str(scored["bench"]) and match["field"] == "instruction"
        assert match["line"] == (3 if row["id"].startswith("s1") else 2)
        shared = tuple(match["words"].split())
        assert len(shared) == NGRAM and shared in ngrams(
            tokens(kept[row["id"]]["instruction"]), NGRAM
        )
    assert report["checked"] == len(kept)
    assert report["against"] == [{"path": str(scored["bench"]), "items": 3, "too_short": 1}]


def greedy(
    records: list[dict[str, Any]],
    book: dict[str, dict[str, float | None]],
    budget: int,
    similarity: float,
    flagged: set[str],
) -> list[str]:
    """The ids `evol select` should pick, by the rule its docs give, computed plainly."""

    def rank(candidate: dict[str, Any]) -> tuple[int, float]:
        values = [book[name].get(candidate["id"]) for name in ("difficulty", "quality")]
        if None in values:
            return 1, 0.0
        return 0, -(values[0] * values[1])

    picks: list[dict[str, Any]] = []
    for candidate in sorted(records, key=rank):
        if len(picks) == budget:
            break
        words = tokens(candidate["instruction"])
        if candidate["output"] is None or candidate["id"] in flagged:
            continue
        if any(rouge_l(words, tokens(p["instruction"])) >= similarity for p in picks):
            continue
        picks.append(candidate)
    return [p["id"] for p in picks]


@pytest.mark.parametrize(
    ("budget", "similarity", "drop"),
    [(2, "0.7", False), (100, "0.7", False), (100, "0.7", True), (6, "1", True), (100, "1", False)],
)
def test_select_picks_what_a_plain_greedy_pick_does(
    evol, scored: dict[str, Any], tmp_path: Path, budget: int, similarity: str, drop: bool
) -> None:
    run, out = scored["run"], tmp_path / "picked.jsonl"
    flagged = contaminated_ids(run, scored["items"], NGRAM)
    options = ["--drop-contaminated"] if drop else []
    result = evol("select", run, "--out", out, "--json", "--format", "jsonl", "--budget", budget,
                  "--similarity", similarity, *options)  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    records = kept_of(run)
    expected = greedy(
        records, recorded_scores(run), budget, float(similarity), flagged if drop else set()
    )
    assert [r["id"] for r in read_jsonl(out)] == expected
    assert summary["scores_used"] == ["difficulty", "quality"]
    assert summary["picked"] == len(expected)
    assert summary["picked_contaminated"] == sum(i in flagged for i in expected)
    unscored = {i for i, v in recorded_scores(run)["difficulty"].items() if v is None}
    assert summary["picked_without_all_scores"] == len(unscored & set(expected))
    assert summary["contamination_stale"] is False
    passed_over = sum(summary["dropped"].values())
    assert summary["not_reached"] == len(records) - len(expected) - passed_over
    if drop:
        assert not flagged & set(expected) and summary["dropped"]["contaminated"] > 0


def test_a_run_grown_after_its_check_says_so(evol, scored: dict[str, Any], tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(scored["run"], run)
    last = read_jsonl(run / "gen_3.jsonl")[-1]
    with (run / "gen_3.jsonl").open("a", encoding="utf-8") as fp:
        fp.write(json.dumps(last | {"id": last["id"] + ".9", "instruction": "Name a lake"}) + "\n")
    stats = json.loads(evol("stats", run, "--json").stdout)
    assert stats["contamination"]["stale"] is True
    assert "the run grew after this check" in evol("stats", run).stdout
    result = evol("select", run, "--out", tmp_path / "p.jsonl", "--budget", "2", "--json")
    assert json.loads(result.stdout)["contamination_stale"] is True


def test_the_product_ranks_and_equal_products_keep_run_order(evol, tmp_path: Path) -> None:
    # By the sum of the scores (11, 10, 12, 10) the order would differ from the product's.
    rows = {
        "Name every planet of the solar system": (10, 1),  # 10
        "Write a sonnet about a lighthouse keeper": (5, 5),  # 25
        "Prove that there are infinitely many primes": (3, 9),  # 27
        "Describe the taste of fresh bread to a robot": (1, 9),  # 9
        "Explain why the sky looks blue at noon": (9, 1),  # 9: after the one before it
    }
    run, out = scored_run(evol, tmp_path, rows), tmp_path / "picked.jsonl"
    result = evol("select", run, "--out", out, "--budget", "5", "--json")
    assert result.exit_code == 0, result.output
    order = sorted(rows, key=lambda text: -(rows[text][0] * rows[text][1]))
    assert [r["instruction"] for r in read_jsonl(out)] == order


# -- contamination: any records, any evaluation items ----------------------------------------

WORDS = st.lists(st.sampled_from(["ab", "Cd", "ef"]), max_size=9).map(" ".join)


ITEMS = st.lists(st.tuples(WORDS.filter(bool), WORDS), min_size=1, max_size=4)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    ngram=st.integers(1, 4),
    files=st.lists(ITEMS, min_size=1, max_size=2),
    texts=st.lists(st.tuples(WORDS.filter(bool), WORDS, st.none() | WORDS), min_size=1, max_size=4),
)
def test_a_record_is_flagged_for_exactly_the_items_it_shares_n_words_with(
    ngram: int, files: list[list[tuple[str, str]]], texts: list[tuple[str, str, str | None]]
) -> None:
    # Ids of a lineage with eliminated rounds: s1 (round 0), s1.2 (generation 1), s1.2.4, ...
    ids = ["s1", "s1.2", "s1.2.4", "s1.2.4.5"]
    records = [
        record(ids[k], instruction, input=given_input, output=output)
        for k, (instruction, given_input, output) in enumerate(texts)
    ]
    with tempfile.TemporaryDirectory() as scratch:
        run = write_run(Path(scratch) / "run", records)
        benches = [Path(scratch) / f"bench-{k}.jsonl" for k in range(len(files))]
        for bench, items in zip(benches, files, strict=True):
            rows = [{"instruction": i, "input": extra} for i, extra in items]
            bench.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
        report = check_contamination(run, benches, ngram=ngram)
    index = [  # (file, line, n-grams in order) of each item's instruction and input
        (str(bench), line, ngrams(tokens(text), ngram))
        for bench, items in zip(benches, files, strict=True)
        for line, item in enumerate(items, start=1)
        for text in item
    ]
    expected = []
    for data in records:
        found: dict[tuple[str, int], dict[str, Any]] = {}
        for field in ("instruction", "input", "output"):
            for gram in ngrams(tokens(data[field] or ""), ngram):
                for path, line, grams in index:
                    if gram in grams and (path, line) not in found:
                        words = " ".join(gram)
                        found[path, line] = {
                            "path": path,
                            "line": line,
                            "field": field,
                            "words": words,
                        }
        if found:
            matches = list(found.values())
            expected.append({
                "id": data["id"], "generation": data["generation"],
                "matches": matches[:MATCHES_KEPT], "more_matches": max(0, len(matches) - MATCHES_KEPT),
            })  # fmt: skip
    assert [row.model_dump() for row in report.flagged] == expected
    assert report.checked == len(records)
    assert [(s.path, s.items, s.too_short) for s in report.against] == [
        (str(bench), len(items), sum(all(len(tokens(t)) < ngram for t in item) for item in items))
        for bench, items in zip(benches, files, strict=True)
    ]


def test_a_near_copy_of_a_picked_seed_in_its_own_lineage_is_passed_over(
    evol, tmp_path: Path
) -> None:
    """And equal products keep run order (s9 before s10), a record without an answer is
    passed over whatever its rank."""
    from tests.support.selection import SCRIPT

    seed, child, grandchild = (
        "Explain recursion with an example",
        "Explain recursion with an example please",
        "Explain recursion with an example, please, now",
    )
    SCRIPT.clear()
    SCRIPT.update(
        {
            seed: (9, 9),
            child: (8, 8),
            grandchild: (7, 7),
            "Name a river": (2, 2),
            "Name a desert in Asia": (2, 2),
            "Name a mountain": (10, None),
        }
    )
    records = [
        record("s1", seed, output="Answer 1."),
        record("s9", "Name a river", output="Answer 2."),
        record("s10", "Name a desert in Asia", output="Answer 3."),
        record("s3", "Name a mountain", output=None),
        record("s1.2", child, output="Answer 4."),  # round 1 was eliminated
        record("s1.2.3", grandchild, output="Answer 5."),
    ]
    run = write_run(tmp_path / "run", records)
    scoring = evol("score", run, "--backend", "scripted", "--answers", "--no-complexity")
    assert scoring.exit_code == 0, scoring.output
    out = tmp_path / "picked.jsonl"
    result = evol("select", run, "--out", out, "--budget", "4", "--json", "--format", "jsonl")
    assert result.exit_code == 0, result.output
    assert [r["id"] for r in read_jsonl(out)] == ["s1", "s9", "s10"]
    assert json.loads(result.stdout)["dropped"] == {"no_output": 1, "too_similar": 2}
