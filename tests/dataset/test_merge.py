"""`evol merge`: the merged run is the unsharded one, in its files, its run.json and its words;
what a merge refuses, and what a failed one leaves. Shards are made against the fake server, with
lineages as varied as real ones.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.support.fake_server import FakeServer
from tests.support.runs import Evol, run_args

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
