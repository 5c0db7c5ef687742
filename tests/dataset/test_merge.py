"""`evol merge`: the merged run is the unsharded one, in its files, its run.json and its words;
what a merge refuses, and what a failed one leaves. Shards are made against the fake server, with
lineages as varied as real ones.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.support.fake_server import FakeServer, Fault, scripted
from tests.support.runs import Evol, run_args, write_seeds

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
