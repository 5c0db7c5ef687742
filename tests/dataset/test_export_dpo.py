"""`evol export --format dpo` of a verifiable run (#26): each pair's chosen answer meets its
constraints and its rejected one fails them, the pairs load with `datasets` as JSON lines and as
Parquet, and what dpo cannot carry is refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evol.rundir.records import compose
from tests.support.fake_server import FakeServer, VerifiableResponder
from tests.support.runs import read_jsonl
from tests.support.verifiable import POOL, constraints_of, fails, verifiable_run

pytestmark = pytest.mark.usefixtures("private_cache")


def test_dpo_pairs_load_with_datasets_and_the_checker_agrees(evol, tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    with FakeServer(responder=VerifiableResponder(pass_rate=0.5)) as server:
        out = verifiable_run(evol, server, tmp_path, "--generations", "2", "--constraint-ids", POOL)
    records = [r for r in read_jsonl(out / "dataset.jsonl") if r.get("rejected_output")]
    assert records
    result = evol("export", out, "--out", tmp_path / "dpo.jsonl", "--format", "dpo", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (
        summary["left_out_without_pair"]
        == len(read_jsonl(out / "dataset.jsonl"))
        - len(records)
        - summary["left_out_without_constraints"]
    )
    rows = datasets.load_dataset(
        "json", data_files=str(tmp_path / "dpo.jsonl"), split="train",
        cache_dir=str(tmp_path / "hf"),
    )  # fmt: skip
    assert rows.column_names == ["prompt", "chosen", "rejected"] and len(rows) == len(records)
    for row, record in zip(rows, records, strict=True):
        assert row["prompt"] == compose(record["instruction"], record["input"])
        assert not fails(row["chosen"], constraints_of(record))
        assert fails(row["rejected"], constraints_of(record))
    parquet = evol("export", out, "--out", tmp_path / "dpo.parquet", "--format", "dpo")
    assert parquet.exit_code == 0, parquet.output
    assert datasets.load_dataset(
        "parquet", data_files=str(tmp_path / "dpo.parquet"), split="train",
        cache_dir=str(tmp_path / "hf"),
    ).to_list() == rows.to_list()  # fmt: skip
    refused = evol("export", out, "--out", tmp_path / "x.jsonl", "--format", "dpo",
                   "--system-prompt", "Be brief.")  # fmt: skip
    assert refused.exit_code == 2 and "has no system turn" in refused.output
    select = evol("select", out, "--out", tmp_path / "s.jsonl", "--format", "dpo", "--budget", "2")
    assert select.exit_code == 2 and "evol export writes dpo" in select.output
