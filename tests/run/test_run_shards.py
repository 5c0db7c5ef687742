"""`evol run --shard i/N` and `evol merge`: shards of one run joined give the unsharded run."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from evol.seeds import SeedOptions, Shard, iter_seeds, shard_of
from tests.support.fake_server import FakeServer
from tests.support.runs import Evol, assert_valid_run, read_jsonl, run_args, write_seeds

# Distinct texts, so that with --dedup no rewrite repeats another lineage's instruction and the
# shards decide exactly as the unsharded run. [equal] and [sorry] give eliminated records.
TEXTS = [
    "Explain how rivers carve canyons over time",
    "Write a limerick about a lazy cat",
    "List three causes of the French Revolution",
    "Describe how a bicycle gear works",
    "[equal] Translate good morning into Spanish",
    "Suggest a name for a bakery by the sea",
    "What is the boiling point of water at altitude",
    "[sorry] Summarize the plot of Hamlet briefly",
    "Give tips for a job interview at a bank",
    "Compute the area of a circle of radius 3",
    "Why do leaves change colour in autumn",
    "Plan a weekend trip to Lisbon on a budget",
]
SHARDS = 3
RECORD_FILES = ["gen_0.jsonl", "gen_1.jsonl", "gen_2.jsonl", "eliminated.jsonl", "dataset.jsonl"]


def options(server: FakeServer, seeds: Path, out: Path, *extra: object) -> list[object]:
    return run_args(server, seeds, out, "--generations", "2", "--dedup", *extra)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    """One unsharded run and its three shards, made once for the module's tests."""
    base = tmp_path_factory.mktemp("shards")
    seeds = write_seeds(base / "seeds.jsonl", [{"instruction": text} for text in TEXTS])
    made = {"seeds": seeds, "full": base / "full"}
    evol = Evol()
    with FakeServer() as server:
        assert evol(*options(server, seeds, made["full"])).exit_code == 0
        for index in range(SHARDS):
            made[index] = base / f"shard-{index}"
            result = evol(*options(server, seeds, made[index], "--shard", f"{index}/{SHARDS}"))
            assert result.exit_code == 0, result.output
    yield made


@pytest.fixture(scope="module")
def merged(runs: dict[str, Path]) -> Path:
    out = runs["full"].parent / "merged"
    result = Evol()("merge", *(runs[i] for i in range(SHARDS)), "--out", out)
    assert result.exit_code == 0, result.output
    return out


# -- membership ------------------------------------------------------------------------------


@pytest.mark.parametrize("count", [1, 2, 3, 8])
def test_every_seed_is_in_exactly_one_shard(count: int) -> None:
    ids = [f"s{n}" for n in range(1, 400)] + ["alpha", "é", "42", "a.b"]
    for seed_id in ids:
        holders = [i for i in range(count) if Shard(index=i, count=count).holds(seed_id)]
        assert holders == [shard_of(seed_id, count)]
    if count > 1:  # the hash spreads ids over every shard
        assert {shard_of(seed_id, count) for seed_id in ids} == set(range(count))


@pytest.mark.slow
def test_membership_is_the_same_in_every_process() -> None:
    """Python's hash() of a str changes with PYTHONHASHSEED; the shard must not."""
    code = "from evol.seeds import shard_of; print([shard_of(f's{n}', 8) for n in range(50)])"
    seen = {
        subprocess.run(
            [sys.executable, "-c", code],
            env=os.environ | {"PYTHONHASHSEED": salt},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for salt in ("1", "2", "3")
    }
    assert seen == {str([shard_of(f"s{n}", 8) for n in range(50)]) + "\n"}


def test_limit_counts_seeds_before_sharding(tmp_path: Path) -> None:
    seeds = write_seeds(tmp_path / "seeds.jsonl", [{"instruction": t} for t in TEXTS])
    limited = [s.id for s in iter_seeds(seeds, SeedOptions(limit=7))]
    shards = [
        [s.id for s in iter_seeds(seeds, SeedOptions(limit=7, shard=Shard(index=i, count=3)))]
        for i in range(3)
    ]
    assert sorted(sum(shards, [])) == sorted(limited) and len(limited) == 7


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ("1/0", "N must be at least 1"),
        ("3/3", "i must be below N (0 to 2)"),
        ("8/3", "i must be below N"),
        ("-1/3", "give i/N with whole numbers"),
        ("two/3", "give i/N with whole numbers"),
        ("3", "give i/N with whole numbers"),
        ("1/2/3", "give i/N with whole numbers"),
    ],
)
def test_a_bad_shard_is_refused_in_one_line(evol, tmp_path: Path, given: str, message: str) -> None:
    seeds = write_seeds(tmp_path / "seeds.jsonl", [{"instruction": "Name a river"}])
    result = evol("run", seeds, "--out", tmp_path / "run", "--shard", given, "--dry-run")
    assert result.exit_code == 2
    assert result.stderr.startswith(f"evol: error: --shard {given!r}: {message}")
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_a_shard_resumed_with_another_shard_is_refused(evol, server, tmp_path: Path) -> None:
    seeds = write_seeds(tmp_path / "seeds.jsonl", [{"instruction": t} for t in TEXTS[:4]])
    out = tmp_path / "run"
    assert (
        evol(*run_args(server, seeds, out, "--generations", "1", "--shard", "0/2")).exit_code == 0
    )
    again = evol(*run_args(server, seeds, out, "--generations", "1", "--shard", "1/2"))
    assert again.exit_code == 2
    assert "--shard (run has '0/2', now '1/2')" in again.stderr
    unsharded = evol(*run_args(server, seeds, out, "--generations", "1"))
    assert unsharded.exit_code == 2 and "--shard (run has '0/2', now None)" in unsharded.stderr
    # The same shard resumes (here: finds its run complete).
    assert (
        evol(*run_args(server, seeds, out, "--generations", "1", "--shard", "0/2")).exit_code == 0
    )


def test_a_shard_with_no_seeds_is_an_empty_complete_run(evol, server, tmp_path: Path) -> None:
    seed_id = "only"
    seeds = write_seeds(tmp_path / "seeds.jsonl", [{"id": seed_id, "instruction": TEXTS[0]}])
    other = 1 - shard_of(seed_id, 2)
    out = tmp_path / "run"
    result = evol(*run_args(server, seeds, out, "--shard", f"{other}/2", "--json"))
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["kept"] == 0 and server.requests == []


# -- merge -----------------------------------------------------------------------------------


def test_merged_shards_equal_the_unsharded_run(runs: dict[str, Path], merged: Path) -> None:
    full = runs["full"]
    assert {r["id"] for r in read_jsonl(full / "eliminated.jsonl")} >= {"s5.1", "s8"}
    # Each shard evolved only its own seeds.
    for index in range(SHARDS):
        roots = {r["root_id"] for r in read_jsonl(runs[index] / "dataset.jsonl")}
        assert all(shard_of(root, SHARDS) == index for root in roots)
    # The same records in the same order (seed-file order, then round), byte for byte.
    for name in RECORD_FILES:
        assert (merged / name).read_bytes() == (full / name).read_bytes(), name
    mine, theirs = assert_valid_run(merged), assert_valid_run(full)
    assert mine["counts"] == theirs["counts"]  # usage and operations included
    assert mine["summary"]["requests"] == theirs["summary"]["requests"]
    assert mine["seeds"]["count"] == len(TEXTS) and mine["status"] == "complete"
    listed = mine["shards"]
    assert [run["shard"] for run in listed["runs"]] == ["0/3", "1/3", "2/3"]
    assert sum(run["seeds"] for run in listed["runs"]) == len(TEXTS)
    assert listed["missing"] == [] and listed["cross_shard_duplicates"] == []


def test_the_merged_run_is_not_resumed_by_evol_run(evol, server, runs, merged: Path) -> None:
    result = evol(*options(server, runs["seeds"], merged))
    assert result.exit_code == 2 and "--shard (run has 'merged'" in result.stderr


def test_stats_report_export_score_and_show_read_the_merged_run(
    evol, merged: Path, runs: dict[str, Path], tmp_path: Path
) -> None:
    kept = len(read_jsonl(merged / "dataset.jsonl"))
    stats = evol("stats", merged, "--json")
    assert stats.exit_code == 0, stats.output
    figures, unsharded = (
        json.loads(stats.stdout),
        json.loads(evol("stats", runs["full"], "--json").stdout),
    )
    assert (
        figures["status"] == "complete" and sum(g["kept"] for g in figures["generations"]) == kept
    )
    assert (
        figures["generations"] == unsharded["generations"]
        and figures["roles"] == unsharded["roles"]
    )
    assert evol("stats", merged).exit_code == 0

    page = tmp_path / "report.html"
    assert evol("report", merged, "--out", page).exit_code == 0 and page.stat().st_size > 0

    exported = evol("export", merged, "--out", tmp_path / "data.jsonl", "--json")
    assert exported.exit_code == 0
    assert json.loads(exported.stdout)["files"] == {str(tmp_path / "data.jsonl"): kept}

    shown = evol("show", merged, "s3.1.2", "--json")
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.stdout)["root_id"] == "s3" and json.loads(shown.stdout)["kept"] == 3

    scored = evol("score", merged, "--no-difficulty", "--no-complexity", "--json")
    assert scored.exit_code == 0, scored.output
    assert json.loads(scored.stdout)["metrics"] and (merged / "metrics.json").exists()


def test_partial_merge_lists_the_missing_shard(evol, runs, tmp_path: Path) -> None:
    out = tmp_path / "partial"
    refused = evol("merge", runs[0], runs[2], "--out", out)
    assert refused.exit_code == 2
    assert "missing shard 1/3" in refused.stderr and "--partial" in refused.stderr
    assert not (out / "run.json").exists()

    result = evol("merge", runs[0], runs[2], "--out", out, "--partial", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["missing"] == ["1/3"]
    manifest = assert_valid_run(out)
    assert manifest["shards"]["missing"] == ["1/3"]
    expected = [
        r for r in read_jsonl(runs["full"] / "dataset.jsonl") if shard_of(r["root_id"], 3) != 1
    ]
    assert read_jsonl(out / "dataset.jsonl") == expected


def test_merge_refuses_shards_that_do_not_belong_together(
    evol, server, runs, tmp_path: Path
) -> None:
    seeds, shards = runs["seeds"], [runs[i] for i in range(SHARDS)]
    other = tmp_path / "other-seed"
    assert evol(*options(server, seeds, other, "--seed", "1", "--shard", "1/3")).exit_code == 0
    result = evol("merge", shards[0], other, shards[2], "--out", tmp_path / "m1")
    assert result.exit_code == 2
    assert f"{other} and {shards[0]} are not shards of one run" in result.stderr
    assert "--seed" in result.stderr

    quarter = tmp_path / "quarter"
    assert evol(*options(server, seeds, quarter, "--shard", "1/4")).exit_code == 0
    result = evol("merge", shards[0], quarter, "--out", tmp_path / "m2")
    assert result.exit_code == 2 and "--shard N" in result.stderr

    result = evol("merge", *shards, shards[1], "--out", tmp_path / "m3")
    assert result.exit_code == 2
    assert f"shards overlap: {shards[1]} and {shards[1]} are both shard 1/3" in result.stderr

    result = evol("merge", *shards, runs["full"], "--out", tmp_path / "m4")
    assert result.exit_code == 2 and f"{runs['full']}: not a shard" in result.stderr


def test_merge_refuses_an_unfinished_shard(evol, runs, tmp_path: Path) -> None:
    unfinished = tmp_path / "unfinished"
    shutil.copytree(runs[1], unfinished)
    manifest = json.loads((unfinished / "run.json").read_text())
    (unfinished / "run.json").write_text(json.dumps(manifest | {"status": "interrupted"}))
    result = evol("merge", runs[0], unfinished, runs[2], "--out", tmp_path / "m")
    assert result.exit_code == 2
    assert f"{unfinished}: the run is interrupted, not complete" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_merge_writes_only_where_run_would(evol, runs, merged: Path, tmp_path: Path) -> None:
    shards = [runs[i] for i in range(SHARDS)]
    foreign = tmp_path / "notes"
    foreign.mkdir()
    (foreign / "todo.txt").write_text("mine")
    result = evol("merge", *shards, "--out", foreign)
    assert result.exit_code == 2 and "holds no evol run" in result.stderr

    result = evol("merge", *shards, "--out", merged)
    assert result.exit_code == 2 and "--overwrite" in result.stderr
    result = evol("merge", *shards, "--out", shards[0], "--overwrite")
    assert result.exit_code == 2 and "is one of the shards" in result.stderr

    again = tmp_path / "again"
    assert evol("merge", *shards, "--out", again).exit_code == 0
    assert evol("merge", *shards, "--out", again, "--overwrite").exit_code == 0
    assert (again / "dataset.jsonl").read_bytes() == (merged / "dataset.jsonl").read_bytes()


def test_merge_finds_the_seed_file_it_needs_for_the_order(evol, runs, tmp_path: Path) -> None:
    shards = [runs[i] for i in range(SHARDS)]
    moved = tmp_path / "moved.jsonl"
    shutil.copy(runs["seeds"], moved)
    other = write_seeds(tmp_path / "other.jsonl", [{"instruction": "Name a river"}])
    result = evol("merge", *shards, "--out", tmp_path / "a", "--seeds", other)
    assert result.exit_code == 2 and "not the seed file the shards ran on" in result.stderr
    assert evol("merge", *shards, "--out", tmp_path / "b", "--seeds", moved).exit_code == 0


def test_merge_lists_duplicates_across_shards(evol, server, tmp_path: Path) -> None:
    """With --dedup, a shard compares only with its own lineages: merge names what repeats
    another shard's instruction, by the same rule, and keeps it."""
    text = "Describe the water cycle for a class of ten year old pupils"
    ids = [f"d{n}" for n in range(40)]
    first = ids[0]
    second = next(i for i in ids if shard_of(i, 2) != shard_of(first, 2))
    rows = [{"id": first, "instruction": text}, {"id": second, "instruction": text.upper()}]
    seeds = write_seeds(tmp_path / "seeds.jsonl", rows)
    shards = []
    for index in range(2):
        shards.append(tmp_path / f"shard-{index}")
        made = evol(*run_args(server, seeds, shards[-1], "--dedup", "--shard", f"{index}/2"))
        assert made.exit_code == 0, made.output
    result = evol("merge", *shards, "--out", tmp_path / "merged", "--json")
    assert result.exit_code == 0, result.output
    found = json.loads(result.stdout)["cross_shard_duplicates"]
    assert {d["id"] for d in found} >= {f"{first}.1", f"{second}.1"}
    assert all(d["id"].split(".")[0] != d["duplicate_of"].split(".")[0] for d in found)
    manifest = assert_valid_run(tmp_path / "merged")
    assert manifest["shards"]["cross_shard_duplicates"] == found
    # The unsharded run would have eliminated them instead.
    full = tmp_path / "full"
    assert evol(*run_args(server, seeds, full, "--dedup")).exit_code == 0
    assert any(r["reason"] == "duplicate" for r in read_jsonl(full / "eliminated.jsonl"))


# -- one shard of one (found by mutation testing) ----------------------------------------------


def test_one_shard_of_one_is_the_whole_file_and_none_of_none_is_refused() -> None:
    from evol.errors import UsageError
    from evol.seeds import Shard, shard_of

    whole = Shard.parse("0/1")
    assert (whole.index, whole.count) == (0, 1)
    assert {shard_of(f"p{n}", 1) for n in range(50)} == {0}
    with pytest.raises(UsageError, match="0/0"):
        Shard.parse("0/0")


# -- found by the third mutation round ---------------------------------------------------------


# -- which shard a seed is in, and what a damaged record lacks ----------------------------------


def test_a_seeds_shard_is_the_same_on_every_machine_and_every_version() -> None:
    """blake2b of the id (docs/shards.md): a shard resumed by a later evol, or on another
    machine, must hold the same seeds, or the merge would see seeds twice and others never."""
    from evol.seeds import shard_of

    assert [shard_of(f"p{n}", 4) for n in range(12)] == [0, 1, 0, 3, 2, 2, 1, 3, 0, 2, 0, 3]
    assert [shard_of(seed_id, 7) for seed_id in ("a", "id-42", "ü")] == [2, 4, 3]
