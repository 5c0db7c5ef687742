"""`evol merge`: the merged run is the unsharded one, in its files, its run.json and its words;
what a merge refuses, and what a failed one leaves. Shards are made against the fake server, with
lineages as varied as real ones.
"""

from __future__ import annotations

import itertools
import json
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from evol.seeds import shard_of
from tests.support.fake_server import FakeServer, Fault, scripted
from tests.support.runs import Evol, assert_valid_run, read_jsonl, run_args, write_seeds
from tests.support.shards import seed_ids
from tests.support.varied_runs import evolve

# -- merge: the merged run.json describes the run as the unsharded one does ---------------------


@pytest.fixture(scope="module")
def sharded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An unsharded run (full/) and its two shards (shard-0/, shard-1/) of one seed file, with a
    skipped seed line and an eliminated evolution."""
    base = tmp_path_factory.mktemp("sharded")
    texts = [f"Explain idea {i} of gardening" for i in range(6)] + ["[sorry] Summarize Hamlet"]
    lines = [json.dumps({"id": f"s{i}", "instruction": text}) for i, text in enumerate(texts)]
    lines.insert(2, json.dumps({"id": "nothing to evolve"}))  # skipped: no instruction
    seeds = base / "seeds.jsonl"
    seeds.write_text("\n".join(lines) + "\n")
    runs = {"full": ()} | {f"shard-{i}": ("--shard", f"{i}/2") for i in range(2)}
    evol = Evol()
    with FakeServer() as server:
        for name, shard in runs.items():
            options = ("--generations", "1", "--dedup", "--skip-invalid", *shard)
            result = evol(*run_args(server, seeds, base / name, *options))
            assert result.exit_code == 0, result.output
    return base


def copied_shards(sharded: Path, tmp_path: Path) -> list[Path]:
    shards = [tmp_path / "shard-0", tmp_path / "shard-1"]
    for shard in shards:
        shutil.copytree(sharded / shard.name, shard)
    return shards


def test_a_merged_run_json_says_what_the_unsharded_run_json_says(
    evol, sharded: Path, tmp_path: Path
) -> None:
    out = tmp_path / "merged"
    result = evol("merge", sharded / "shard-1", sharded / "shard-0", "--out", out)
    assert result.exit_code == 0, result.output

    merged = json.loads((out / "run.json").read_text())
    full = json.loads((sharded / "full" / "run.json").read_text())
    assert merged["seeds"] == full["seeds"]
    assert merged["seeds"]["skipped"] and merged["seeds"]["format"]
    assert merged["seeds"]["path"] == str(sharded / "seeds.jsonl")
    assert merged["dedup"] == full["dedup"] and full["dedup"]["method"]

    def unsharded(fingerprint: dict) -> dict:
        return {key: value for key, value in fingerprint.items() if "shard" not in key}

    assert unsharded(merged["fingerprint"]) == unsharded(full["fingerprint"])
    assert merged["fingerprint"] != full["fingerprint"]  # it says the run was merged
    sizes = merged["outputs"]
    assert sizes and sizes == {name: (out / name).stat().st_size for name in sizes}
    assert set(sizes) == set(full["outputs"])


def test_merge_without_the_seed_file_says_to_pass_it(evol, sharded: Path, tmp_path: Path) -> None:
    shards = copied_shards(sharded, tmp_path)
    gone = tmp_path / "gone.jsonl"  # where the shards say their seed file was
    for shard in shards:
        manifest = json.loads((shard / "run.json").read_text())
        manifest["config"]["seeds"] = str(gone)
        (shard / "run.json").write_text(json.dumps(manifest))
    result = evol("merge", *shards, "--out", tmp_path / "merged")
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        f"evol: error: {gone}: the shards' seed file cannot be read; pass it with --seeds "
        "(merge reads it to put the records in seed-file order)"
    )


def test_merge_refuses_an_eliminated_record_without_its_reason(
    evol, sharded: Path, tmp_path: Path
) -> None:
    shards = copied_shards(sharded, tmp_path)
    damaged = next(s / "eliminated.jsonl" for s in shards if (s / "eliminated.jsonl").exists())
    records = [json.loads(line) for line in damaged.read_text().splitlines()]
    del records[-1]["reason"]
    damaged.write_text("".join(json.dumps(r) + "\n" for r in records))
    result = evol("merge", *shards, "--out", tmp_path / "merged")
    assert result.exit_code == 2
    assert result.stderr == (
        f"evol: error: {damaged}:{len(records)}: not an evol record (missing reason)\n"
    )
    assert not (tmp_path / "merged" / "dataset.jsonl").exists()


# -- found by the third mutation round ---------------------------------------------------------


# -- evol merge ----------------------------------------------------------------------------------

# Two seeds of 13 words that differ in one, placed in shards 0 and 1 of 2: their evolutions
# are near copies across the shards (ROUGE-L about 0.8 to 0.9), exact copies nowhere.
NEAR = "Describe the water cycle for a class of ten year old pupils in the {}"


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The seed file, and the two shards of it run without --dedup ("plain"), with --dedup at
    0.99 ("strict") and at the default 0.7 ("loose"), one generation each."""
    from evol.seeds import shard_of

    base = tmp_path_factory.mktemp("shards")
    ids = [next(f"p{n}" for n in range(100) if shard_of(f"p{n}", 2) == s) for s in (0, 1)]
    rows = [
        {"id": i, "instruction": NEAR.format(w)}
        for i, w in zip(ids, ["north", "south"], strict=True)
    ]
    seeds = write_seeds(base / "seeds.jsonl", rows)
    variants = {
        "plain": (),
        "strict": ("--dedup", "--dedup-threshold", "0.99"),
        "loose": ("--dedup",),
    }
    made: dict[str, Any] = {"seeds": seeds}
    with FakeServer() as server:
        for name, options in variants.items():
            made[name] = [base / name / f"shard-{i}" for i in range(2)]
            for index, out in enumerate(made[name]):
                extra = ("--generations", "1", "--shard", f"{index}/2", *options)
                result = Evol()(*run_args(server, seeds, out, *extra))
                assert result.exit_code == 0, result.output
    return made


def merged(evol, shard_dirs: list[Path], out: Path, *extra: object) -> dict[str, Any]:
    """`evol merge --json`, which must succeed; returns its summary."""
    result = evol("merge", *shard_dirs, "--out", out, "--json", *extra)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_cross_shard_duplicates_follow_the_runs_own_dedup_rule(
    evol, shards: dict[str, Any], tmp_path: Path
) -> None:
    """Listed only when the run deduplicated, and by its threshold, not the default one."""
    loose = merged(evol, shards["loose"], tmp_path / "loose")
    assert loose["cross_shard_duplicates"]  # the near copies are there to be found
    for name in ("plain", "strict"):
        summary = merged(evol, shards[name], tmp_path / name)
        assert summary["cross_shard_duplicates"] == [], name
        manifest = json.loads((tmp_path / name / "run.json").read_text())
        assert manifest["shards"]["cross_shard_duplicates"] == [], name


def test_a_merged_run_is_not_resumed_as_one_of_its_shards(
    evol, shards: dict[str, Any], tmp_path: Path
) -> None:
    """The shards are resumed and merged again; `evol run` on the merged directory, with the
    options of a shard or of the whole run, is refused and changes nothing."""
    out = tmp_path / "merged"
    merged(evol, shards["plain"], out)
    before = {path.name: path.read_bytes() for path in out.iterdir()}
    with FakeServer() as server:
        for shard in (("--shard", "0/2"), ()):
            options = ("--generations", "1", *shard)
            result = evol(*run_args(server, shards["seeds"], out, *options))
            assert result.exit_code == 2, (shard, result.output)
            assert "shard" in result.stderr, result.stderr
        assert not server.requests
    assert {path.name: path.read_bytes() for path in out.iterdir()} == before


def test_a_merge_with_overwrite_over_a_longer_run_leaves_none_of_its_files(
    evol, shards: dict[str, Any], tmp_path: Path
) -> None:
    """--out held a run of two generations: the merge of one-generation shards over it is the
    merge into an empty directory, without the old gen_2.jsonl."""
    merged(evol, shards["plain"], tmp_path / "fresh")
    out = tmp_path / "merged"
    with FakeServer() as server:
        result = evol(*run_args(server, shards["seeds"], out, "--generations", "2"))
    assert result.exit_code == 0, result.output
    before = {path.name: path.read_bytes() for path in out.iterdir()}
    refused = evol("merge", *shards["plain"], "--out", out)  # without --overwrite
    assert refused.exit_code == 2
    assert refused.stderr == (
        f"evol: error: {out}: holds a run already; choose a new or empty --out, or "
        "--overwrite to replace it\n"
    )
    assert {path.name: path.read_bytes() for path in out.iterdir()} == before
    merged(evol, shards["plain"], out, "--overwrite")
    assert {path.name: path.read_bytes() for path in out.glob("*.jsonl")} == {
        path.name: path.read_bytes() for path in (tmp_path / "fresh").glob("*.jsonl")
    }


def test_a_moved_seed_file_is_where_the_merged_run_json_says_it_is(
    evol, shards: dict[str, Any], tmp_path: Path
) -> None:
    copies = [tmp_path / "shard-0", tmp_path / "shard-1"]
    for source, copy in zip(shards["plain"], copies, strict=True):
        shutil.copytree(source, copy)
    moved = tmp_path / "moved.jsonl"
    moved.write_bytes(shards["seeds"].read_bytes())
    for copy in copies:
        manifest = json.loads((copy / "run.json").read_text())
        manifest["config"]["seeds"] = str(tmp_path / "gone.jsonl")
        (copy / "run.json").write_text(json.dumps(manifest))
    merged(evol, copies, tmp_path / "merged", "--seeds", moved)
    manifest = json.loads((tmp_path / "merged" / "run.json").read_text())
    assert manifest["config"]["seeds"] == manifest["seeds"]["path"] == str(moved)


def test_a_failed_merge_leaves_a_run_that_says_it_is_not_complete(
    evol, shards: dict[str, Any], tmp_path: Path
) -> None:
    """A damaged shard stops the merge after run.json is written: the half-merged directory
    says it is running, and is refused as a shard in those words."""
    copies = [tmp_path / "shard-0", tmp_path / "shard-1"]
    for source, copy in zip(shards["plain"], copies, strict=True):
        shutil.copytree(source, copy)
    with (copies[1] / "gen_1.jsonl").open("a") as damaged:
        damaged.write('{"id": "torn"}\n')
    out = tmp_path / "merged"
    assert evol("merge", *copies, "--out", out).exit_code == 2
    assert json.loads((out / "run.json").read_text())["status"] == "running"
    result = evol("merge", out, copies[0], "--out", tmp_path / "again")
    assert result.exit_code == 2
    assert result.stderr == (
        f"evol: error: {out}: the run is running, not complete; run its evol run command "
        "again to finish it, then merge\n"
    )


def test_shards_of_two_runs_are_refused_naming_every_difference(
    evol, shards: dict[str, Any], tmp_path: Path
) -> None:
    other = tmp_path / "other"
    with FakeServer() as server:
        options = ("--generations", "2", "--shard", "1/3")
        assert evol(*run_args(server, shards["seeds"], other, *options)).exit_code == 0
    first = shards["plain"][0]
    result = evol("merge", first, other, "--out", tmp_path / "merged")
    assert result.exit_code == 2
    assert result.stderr == (
        f"evol: error: {other} and {first} are not shards of one run: they differ in "
        "--generations, --shard N\n"
    )


def test_a_shard_whose_run_json_this_evol_cannot_read_is_named(
    evol, shards: dict[str, Any], tmp_path: Path
) -> None:
    copy = tmp_path / "shard-1"
    shutil.copytree(shards["plain"][1], copy)
    manifest = json.loads((copy / "run.json").read_text())
    manifest["config"]["from_a_later_evol"] = True
    (copy / "run.json").write_text(json.dumps(manifest))
    result = evol("merge", shards["plain"][0], copy, "--out", tmp_path / "merged")
    assert result.exit_code == 2
    assert result.stderr == f"evol: error: {copy}: run.json is not one this evol can read\n"


@pytest.mark.parametrize("part", ["fingerprint", "backend", "seeds", "counts"])
def test_a_complete_shard_whose_run_json_lacks_a_part_is_named_not_merged(
    evol, shards: dict[str, Any], tmp_path: Path, part: str
) -> None:
    """A complete run records its fingerprint, backend, seeds and counts; a shard's run.json
    without any one of them (null, as the format allows for a run that stopped early) is
    refused in one line, naming the shard, and nothing is written."""
    copy = tmp_path / "shard-1"
    shutil.copytree(shards["plain"][1], copy)
    manifest = json.loads((copy / "run.json").read_text())
    assert manifest["status"] == "complete" and manifest[part] is not None
    manifest[part] = None
    (copy / "run.json").write_text(json.dumps(manifest))
    result = evol("merge", shards["plain"][0], copy, "--out", tmp_path / "merged")
    assert result.exit_code == 2, result.output
    assert result.stderr == f"evol: error: {copy}: run.json is not one this evol can read\n"
    assert not (tmp_path / "merged").exists()


def test_a_shard_whose_fingerprint_lacks_an_entry_is_not_merged(
    evol, shards: dict[str, Any], tmp_path: Path
) -> None:
    """A shard made by an evol that did not record an option cannot show it matched."""
    copy = tmp_path / "shard-1"
    shutil.copytree(shards["plain"][1], copy)
    manifest = json.loads((copy / "run.json").read_text())
    name = next(
        key for key in manifest["fingerprint"] if key in ("seeds file content", "seeds_digest")
    )
    del manifest["fingerprint"][name]
    (copy / "run.json").write_text(json.dumps(manifest))
    result = evol("merge", shards["plain"][0], copy, "--out", tmp_path / "merged")
    assert result.exit_code == 2, result.output
    assert "not shards of one run" in result.stderr


def test_a_merged_run_counts_the_retries_of_every_shard(evol, tmp_path: Path) -> None:
    from evol.seeds import shard_of

    ids = [next(f"p{n}" for n in range(100) if shard_of(f"p{n}", 2) == s) for s in (0, 1)]
    seeds = write_seeds(
        tmp_path / "seeds.jsonl",
        [{"id": i, "instruction": f"Explain idea {i} of gardening"} for i in ids],
    )
    shard_dirs = [tmp_path / f"shard-{i}" for i in range(2)]
    for index, out in enumerate(shard_dirs):
        faults = scripted(Fault("status", 500), Fault("status", 503))
        with FakeServer(faults=faults) as server:
            options = ("--generations", "1", "--shard", f"{index}/2", "--retry-max-wait", "0.01")
            assert evol(*run_args(server, seeds, out, *options)).exit_code == 0
    merged(evol, shard_dirs, tmp_path / "merged")
    retries = [json.loads((d / "run.json").read_text())["retries"] for d in shard_dirs]
    assert all(retries)
    total = Counter(retries[0]) + Counter(retries[1])
    assert json.loads((tmp_path / "merged" / "run.json").read_text())["retries"] == dict(total)


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
        assert result.stderr == (
            f"evol: error: missing shard{plural} {', '.join(missing)}: pass every shard's run "
            "directory, or --partial to merge these alone\n"
        )
        assert not out.exists()
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


def test_merge_says_which_shards_it_joined_what_is_missing_and_what_repeats(
    evol, tmp_path: Path
) -> None:
    first, second, third = seed_ids([0, 1, 2], 3)
    text = "Describe the water cycle for a class of ten year old pupils"
    rows = [
        {"id": first, "instruction": text},
        {"id": second, "instruction": text.upper()},
        {"id": third, "instruction": "Write a short poem about the first snow in a quiet town"},
    ]
    seeds = write_seeds(tmp_path / "seeds.jsonl", rows)
    shards = [tmp_path / f"shard-{index}" for index in range(3)]
    for index, shard in enumerate(shards):
        with FakeServer() as server:
            made = evol(
                *run_args(server, seeds, shard, "--generations", "1", "--dedup"),
                "--shard",
                f"{index}/3",
            )
        assert made.exit_code == 0, made.output
    out = tmp_path / "merged"
    result = evol("merge", shards[0], shards[1], "--out", out, "--partial")
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "run.json").read_text())
    kept = sum(len(read_jsonl(out / f"gen_{g}.jsonl")) for g in range(2))
    eliminated = len(read_jsonl(out / "eliminated.jsonl"))
    dataset = len(read_jsonl(out / "dataset.jsonl"))
    duplicates = len(manifest["shards"]["cross_shard_duplicates"])
    assert duplicates > 0  # the water cycle, told in either shard
    assert result.stdout.splitlines() == [
        f"{out}: merged 2 shards (0/3, 1/3): 2 seeds, {kept} records kept, {eliminated} eliminated",
        f"dataset: {out / 'dataset.jsonl'} ({dataset} records)",
        "missing shards (--partial): 2/3",
        f"{duplicates} kept evolutions repeat an instruction of another shard "
        "(kept; listed in run.json under shards.cross_shard_duplicates)",
    ]
    alone = evol("merge", shards[1], "--out", tmp_path / "alone", "--partial")
    assert alone.stdout.splitlines()[2:] == ["missing shards (--partial): 0/3, 2/3"]
