"""`evol export`: files trainers load (JSON Lines, one JSON array, Parquet), lineage-safe
splits, the system turn, and runs that did not finish."""

from __future__ import annotations

import errno
import json
import math
import os
import random
import shutil
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from evol.dataset.export import export_run, parse_generations, parse_split
from evol.dataset.export_scan import assign_lineages
from evol.errors import UsageError
from evol.method.constraints import Constraint, check
from evol.method.drawing import pick
from evol.rundir.record_files import iter_records
from tests.support.runs import read_jsonl, record, run_args, write_run, write_seeds
from tests.support.varied_runs import VARIED, varied_run
from tests.support.verifiable import open_instruct_constraints, verify_report, write_rows

__all__ = ["varied_run"]  # a fixture: a run as varied as real ones, written by hand

SHAPES = ["alpaca", "sharegpt", "openai-chat", "jsonl"]
# 24 seeds, 2 generations: every 4th seed's rewrites are judged equal to it, so its lineage is
# the seed alone; the others keep 3 records. 18 x 3 + 6 x 1 = 60 records, 24 lineages.
ROWS = [
    {
        "instruction": f"Explain idea number {i}" + (" [equal]" if i % 4 == 1 else ""),
        **({"input": f"context {i}"} if i % 3 == 0 else {}),
        "topic": f"topic {i % 2}",
        **({"history": [{"role": "user", "turns": [1, 2]}]} if i == 2 else {}),
    }
    for i in range(24)
]


@pytest.fixture
def run_dir(evol, server, tmp_path: Path) -> Path:
    seeds, out = write_seeds(tmp_path / "seeds.jsonl", ROWS), tmp_path / "run"
    assert evol(*run_args(server, seeds, out, "--generations", "2")).exit_code == 0
    return out


def load(path: Path, tmp_path: Path, builder: str = "json"):
    datasets = pytest.importorskip("datasets")
    return datasets.load_dataset(
        builder, data_files=str(path), split="train", cache_dir=str(tmp_path / "hf-cache")
    )


def user_text(record: dict) -> str:
    return (
        f"{record['instruction']}\n\n{record['input']}"
        if record["input"]
        else record["instruction"]
    )


def expected_row(record: dict, shape: str, system: str | None = None) -> dict:
    """What one record must become in `shape`, written out by hand."""
    if shape == "alpaca":
        row = {"instruction": record["instruction"], "input": record["input"]}
        return row | {"output": record["output"]} | ({"system": system} if system else {})
    if shape == "sharegpt":
        turns = [{"from": "system", "value": system}] if system else []
        turns += [
            {"from": "human", "value": user_text(record)},
            {"from": "gpt", "value": record["output"]},
        ]
        return {"conversations": turns}
    if shape == "openai-chat":
        turns = [{"role": "system", "content": system}] if system else []
        turns += [
            {"role": "user", "content": user_text(record)},
            {"role": "assistant", "content": record["output"]},
        ]
        return {"messages": turns}
    return record


def set_manifest(run_dir: Path, **changes) -> None:
    """Edit run.json as a run with these facts would have written it."""
    path = run_dir / "run.json"
    manifest = json.loads(path.read_text(encoding="utf-8"))
    for key, value in changes.items():
        if key == "system_prompt":
            manifest["config"]["system_prompt"] = value
        else:
            manifest[key] = value
    path.write_text(json.dumps(manifest), encoding="utf-8")


# -- files: JSON Lines, one JSON array, Parquet ---------------------------------------------


@pytest.mark.parametrize("suffix", [".jsonl", ".json"])
@pytest.mark.parametrize("shape", SHAPES)
def test_each_format_loads_with_datasets(
    evol, run_dir: Path, tmp_path: Path, shape: str, suffix: str
) -> None:
    out = tmp_path / f"export{suffix}"
    result = evol("export", run_dir, "--format", shape, "--out", out)
    assert result.exit_code == 0, result.stderr
    records = read_jsonl(run_dir / "dataset.jsonl")
    rows = load(out, tmp_path)
    assert len(rows) == len(records) == 60
    for row, kept in zip(rows, records, strict=True):
        if shape == "jsonl":
            assert (row["id"], row["parent_id"], row["generation"]) == (
                kept["id"],
                kept["parent_id"],
                kept["generation"],
            )
        else:
            assert row == expected_row(kept, shape)


@pytest.mark.parametrize("shape", SHAPES)
def test_json_is_one_array_and_anything_else_json_lines(
    evol, run_dir: Path, tmp_path: Path, shape: str
) -> None:
    records = read_jsonl(run_dir / "dataset.jsonl")
    as_array, as_lines = tmp_path / "a.json", tmp_path / "a.txt"
    for out in (as_array, as_lines):
        assert evol("export", run_dir, "--format", shape, "--out", out).exit_code == 0
    array = json.loads(as_array.read_text(encoding="utf-8"))
    assert array == [expected_row(r, shape) for r in records]
    assert read_jsonl(as_lines) == array
    # --file-format beats the name, both ways.
    swapped_array, swapped_lines = tmp_path / "b.jsonl", tmp_path / "b.json"
    evol("export", run_dir, "--format", shape, "--out", swapped_array, "--file-format", "json")
    evol("export", run_dir, "--format", shape, "--out", swapped_lines, "--file-format", "jsonl")
    assert json.loads(swapped_array.read_text(encoding="utf-8")) == array
    assert read_jsonl(swapped_lines) == array


def test_an_empty_json_export_is_an_empty_array(evol, run_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "none.json"
    assert evol("export", run_dir, "--out", out, "--generations", "7").exit_code == 0
    assert json.loads(out.read_text(encoding="utf-8")) == []


@pytest.mark.parametrize("by", ["extension", "option"])
@pytest.mark.parametrize("shape", SHAPES)
def test_parquet_loads_with_pyarrow_and_datasets(
    evol, run_dir: Path, tmp_path: Path, shape: str, by: str
) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    out = tmp_path / ("data.parquet" if by == "extension" else "data.bin")
    options = [] if by == "extension" else ["--file-format", "parquet"]
    result = evol("export", run_dir, "--format", shape, "--out", out, *options)
    assert result.exit_code == 0, result.stderr
    records = read_jsonl(run_dir / "dataset.jsonl")
    table_rows = pq.read_table(out).to_pylist()
    dataset_rows = list(load(out, tmp_path, builder="parquet"))
    if shape != "jsonl":
        # Nested lists of dicts (the turns) come back as lists of dicts.
        assert table_rows == dataset_rows == [expected_row(r, shape) for r in records]
        return
    # evol's own records: scalar fields are columns, objects are JSON text.
    for rows in (table_rows, dataset_rows):
        assert len(rows) == len(records)
        for row, original in zip(rows, records, strict=True):
            record = dict(original)
            assert json.loads(row.pop("metadata")) == record.pop("metadata")
            assert json.loads(row.pop("usage")) == record.pop("usage")
            assert row == record
    history = [json.loads(row["metadata"]).get("history") for row in pq.read_table(out).to_pylist()]
    assert [{"role": "user", "turns": [1, 2]}] in history


def test_parquet_columns_of_evol_records_by_the_types_they_hold(
    evol, run_dir: Path, tmp_path: Path
) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    gen_1 = run_dir / "gen_1.jsonl"
    records = read_jsonl(gen_1)
    extra = [
        {"score": [1, "high", None, 2.5][i % 4], "rank": i, "ratio": i / 2, "flag": i % 2 == 0}
        | ({"later": "only here"} if i == 5 else {})
        for i in range(len(records))
    ]
    gen_1.write_text("".join(json.dumps(r | e) + "\n" for r, e in zip(records, extra, strict=True)))
    out = tmp_path / "records.parquet"
    assert (
        evol("export", run_dir, "--format", "jsonl", "--out", out, "--generations", "1").exit_code
        == 0
    )
    table = pq.read_table(out)
    types = {
        name: table.schema.field(name).type for name in ("rank", "ratio", "flag", "later", "score")
    }
    assert types == {
        "rank": pa.int64(),
        "ratio": pa.float64(),  # 0.0, 0.5, 1.0, ... are floats in JSON as written by Python
        "flag": pa.bool_(),
        "later": pa.string(),
        "score": pa.string(),  # int, str and float: one column can only hold them as JSON text
    }
    for row, e in zip(table.to_pylist(), extra, strict=True):
        assert (row["rank"], row["ratio"], row["flag"]) == (e["rank"], e["ratio"], e["flag"])
        assert row["later"] == e.get("later")
        assert row["score"] == (None if e["score"] is None else json.dumps(e["score"]))


@pytest.mark.parametrize(("rows_per_group", "groups"), [(7, 9), (60, 1), (59, 2), (1000, 1)])
def test_parquet_is_written_in_row_groups(
    run_dir: Path, tmp_path: Path, rows_per_group: int, groups: int
) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    out = tmp_path / "data.parquet"
    export_run(run_dir, out, shape="sharegpt", row_group_rows=rows_per_group)
    parquet = pq.ParquetFile(out)
    sizes = [parquet.metadata.row_group(i).num_rows for i in range(parquet.num_row_groups)]
    assert len(sizes) == groups == math.ceil(60 / rows_per_group)
    assert sum(sizes) == 60 and max(sizes) <= rows_per_group


def test_parquet_without_pyarrow_names_the_extra(
    evol, run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # sys.modules[name] = None is how Python blocks an import: as if pyarrow were absent.
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    result = evol("export", run_dir, "--out", tmp_path / "data.parquet")
    assert result.exit_code == 2
    assert result.stderr == (
        "evol: error: writing Parquet needs pyarrow: pip install 'evol[parquet]'\n"
    )
    assert list(tmp_path.glob("data*")) == []


@pytest.mark.parametrize("shape", ["alpaca", "jsonl"])
def test_json_lines_are_written_without_pyarrow(
    evol, run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shape: str
) -> None:
    """Only Parquet needs the parquet extra: an export to JSON Lines never imports pyarrow."""
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    out = tmp_path / "data.jsonl"
    result = evol("export", run_dir, "--out", out, "--format", shape)
    assert result.exit_code == 0, result.stderr
    assert len(out.read_text().splitlines()) == len(list(iter_records(run_dir)))


def test_a_part_that_cannot_be_put_in_place_is_named_and_no_temporary_is_left(
    run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rename that fails after another part's succeeded: one plain error naming the part
    and the cause, and no .tmp file left beside the parts."""
    out = tmp_path / "data.jsonl"
    replace = Path.replace

    def failing(self: Path, target: Path) -> Path:
        if Path(target).name == "data.test.jsonl":
            raise OSError(errno.EXDEV, os.strerror(errno.EXDEV))
        return replace(self, target)

    monkeypatch.setattr(Path, "replace", failing)
    with pytest.raises(UsageError) as refused:
        export_run(run_dir, out, split={"train": 0.5, "test": 0.5})
    assert str(refused.value) == (
        f"{tmp_path / 'data.test.jsonl'}: cannot write it: {os.strerror(errno.EXDEV)}"
    )
    assert not list(tmp_path.glob("*.tmp"))


# -- splits -----------------------------------------------------------------------------------


def split_export(evol, run_dir: Path, out: Path, *options: str) -> dict:
    args = ["export", run_dir, "--out", out, "--format", "jsonl", "--json", *options]
    result = evol(*args)
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def test_split_keeps_every_lineage_on_one_side(evol, run_dir: Path, tmp_path: Path) -> None:
    summary = split_export(
        evol, run_dir, tmp_path / "data.jsonl", "--split", "train=0.75,test=0.25"
    )
    train = read_jsonl(tmp_path / "data.train.jsonl")
    test = read_jsonl(tmp_path / "data.test.jsonl")
    train_roots, test_roots = {r["root_id"] for r in train}, {r["root_id"] for r in test}
    assert not train_roots & test_roots
    assert len(train_roots | test_roots) == 24
    records = read_jsonl(run_dir / "dataset.jsonl")
    # Nothing lost, nothing twice, and each part in the dataset's order.
    assert sorted(r["id"] for r in train + test) == sorted(r["id"] for r in records)
    order = [r["id"] for r in records]
    for part in (train, test):
        assert [r["id"] for r in part] == sorted((r["id"] for r in part), key=order.index)
    # Sizes count records: 45 and 15 is what 0.75 and 0.25 of 60 ask; lineages hold 1 or 3.
    assert abs(len(train) - 45) < 3 and abs(len(test) - 15) < 3
    assert summary["parts"] == [
        {
            "name": "train",
            "file": str(tmp_path / "data.train.jsonl"),
            "records": len(train),
            "lineages": len(train_roots),
        },
        {
            "name": "test",
            "file": str(tmp_path / "data.test.jsonl"),
            "records": len(test),
            "lineages": len(test_roots),
        },
    ]
    assert summary["files"] == {
        str(tmp_path / "data.train.jsonl"): len(train),
        str(tmp_path / "data.test.jsonl"): len(test),
    }


def test_split_prints_records_and_lineages_per_part(evol, run_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "data.jsonl"
    result = evol(
        "export", run_dir, "--out", out, "--split", "train=0.5,test=0.5", "--format", "jsonl"
    )
    assert result.exit_code == 0 and result.stderr == ""
    lines = result.stdout.splitlines()
    assert lines[0] == f"{run_dir} (complete): 60 records exported"
    for part, line in zip(["train", "test"], lines[1:], strict=True):
        rows = read_jsonl(tmp_path / f"data.{part}.jsonl")
        lineages = len({r["root_id"] for r in rows})
        assert (
            line == f"{tmp_path / f'data.{part}.jsonl'}: {len(rows)} records, {lineages} lineages"
        )


def test_split_is_deterministic_by_seed_and_shuffle_only_reorders(
    evol, run_dir: Path, tmp_path: Path
) -> None:
    def parts(name: str, *options: str) -> tuple[list[str], list[str]]:
        split_export(evol, run_dir, tmp_path / f"{name}.jsonl", "--split", "a=0.5,b=0.5", *options)
        return tuple(
            [r["id"] for r in read_jsonl(tmp_path / f"{name}.{part}.jsonl")] for part in "ab"
        )

    first, again = parts("first", "--seed", "3"), parts("again", "--seed", "3")
    assert first == again
    others = [parts(f"seed{seed}", "--seed", str(seed)) for seed in (4, 5, 6)]
    assert any(set(other[0]) != set(first[0]) for other in others)
    shuffled = parts("shuffled", "--seed", "3", "--shuffle")
    assert [sorted(ids) for ids in shuffled] == [sorted(ids) for ids in first]
    assert shuffled[0] != first[0] and shuffled[1] != first[1]
    assert parts("shuffled-again", "--seed", "3", "--shuffle") == shuffled
    assert parts("unshuffled", "--seed", "3", "--shuffle", "--no-shuffle") == first


def test_shuffle_without_split_and_generations(evol, run_dir: Path, tmp_path: Path) -> None:
    summary = split_export(
        evol, run_dir, tmp_path / "data.jsonl", "--generations", "1-2", "--shuffle", "--seed", "4"
    )
    rows = read_jsonl(tmp_path / "data.jsonl")
    expected = [r["id"] for r in read_jsonl(run_dir / "dataset.jsonl") if r["generation"] > 0]
    assert sorted(r["id"] for r in rows) == sorted(expected) and len(rows) == 36
    assert [r["id"] for r in rows] != expected
    assert summary["parts"] == [
        {"name": None, "file": str(tmp_path / "data.jsonl"), "records": 36, "lineages": 18}
    ]


@pytest.mark.parametrize(
    ("sizes", "fractions", "expected"),
    [
        # Ten lineages of one record: the parts are exact.
        ({f"r{i}": 1 for i in range(10)}, {"train": 0.7, "test": 0.3}, {"train": 7, "test": 3}),
        ({f"r{i}": 1 for i in range(10)}, {"train": 0.75, "test": 0.25}, {"train": 8, "test": 2}),
        # A zero fraction gets nothing, whichever side it is on.
        ({f"r{i}": 2 for i in range(5)}, {"train": 1.0, "test": 0.0}, {"train": 10, "test": 0}),
        ({f"r{i}": 2 for i in range(5)}, {"train": 0.0, "test": 1.0}, {"train": 0, "test": 10}),
        # One lineage cannot be split: on a tie it goes to the first part listed.
        ({"only": 5}, {"train": 0.5, "test": 0.5}, {"train": 5, "test": 0}),
        ({"only": 5}, {"test": 0.5, "train": 0.5}, {"train": 0, "test": 5}),
        # Three parts.
        (
            {f"r{i}": 1 for i in range(20)},
            {"a": 0.5, "b": 0.3, "c": 0.2},
            {"a": 10, "b": 6, "c": 4},
        ),
    ],
)
def test_assign_lineages_sizes(
    sizes: dict[str, int], fractions: dict[str, float], expected: dict[str, int]
) -> None:
    assignment = assign_lineages(sizes, fractions, seed=0)
    assert set(assignment) == set(sizes)
    filled = dict.fromkeys(fractions, 0)
    for root, part in assignment.items():
        filled[part] += sizes[root]
    assert filled == expected


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize(
    "fractions",
    [
        {"train": 0.9, "test": 0.1},
        {"train": 0.5, "test": 0.5},
        {"train": 0.99, "test": 0.01},
        {"a": 0.6, "b": 0.25, "c": 0.15},
    ],
)
def test_assign_lineages_lands_within_one_lineage_of_each_target(
    seed: int, fractions: dict[str, float]
) -> None:
    rng = random.Random(seed)
    sizes = {f"s{i}": rng.randint(1, 5) for i in range(rng.randint(1, 300))}
    assignment = assign_lineages(sizes, fractions, seed=seed)
    total, largest = sum(sizes.values()), max(sizes.values())
    filled = dict.fromkeys(fractions, 0)
    for root, part in assignment.items():
        filled[part] += sizes[root]
    for part, fraction in fractions.items():
        assert filled[part] - fraction * total < largest  # never a whole lineage too many
        if len(fractions) == 2:
            assert fraction * total - filled[part] < largest  # nor a whole one too few
    # Deterministic, and the same whatever order the lineages were listed in.
    shuffled = dict(sorted(sizes.items(), key=lambda item: random.Random(item[0]).random()))
    assert assign_lineages(shuffled, fractions, seed=seed) == assignment


def test_assign_lineages_depends_on_the_seed() -> None:
    sizes = {f"s{i}": 1 + i % 3 for i in range(40)}
    fractions = {"train": 0.8, "test": 0.2}
    results = {
        frozenset(r for r, p in assign_lineages(sizes, fractions, seed).items() if p == "test")
        for seed in range(5)
    }
    assert len(results) == 5


# -- the system turn ---------------------------------------------------------------------------


@pytest.mark.parametrize("shape", ["alpaca", "sharegpt", "openai-chat"])
@pytest.mark.parametrize(
    ("recorded", "option", "expected"),
    [
        (None, None, None),
        ("You are terse.", None, "You are terse."),
        ("You are terse.", "Answer in French.", "Answer in French."),
        (None, "Answer in French.", "Answer in French."),
        ("You are terse.", "", None),
    ],
)
def test_system_turn(
    evol,
    run_dir: Path,
    tmp_path: Path,
    shape: str,
    recorded: str | None,
    option: str | None,
    expected: str | None,
) -> None:
    set_manifest(run_dir, system_prompt=recorded)
    out = tmp_path / "data.jsonl"
    options = [] if option is None else ["--system-prompt", option]
    result = evol("export", run_dir, "--format", shape, "--out", out, "--json", *options)
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["system_prompt"] == expected
    records = read_jsonl(run_dir / "dataset.jsonl")
    assert read_jsonl(out) == [expected_row(r, shape, expected) for r in records]


def test_system_turn_in_parquet(evol, run_dir: Path, tmp_path: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    set_manifest(run_dir, system_prompt="You are terse.")
    for shape in ("alpaca", "sharegpt"):
        out = tmp_path / f"{shape}.parquet"
        assert evol("export", run_dir, "--format", shape, "--out", out).exit_code == 0
        records = read_jsonl(run_dir / "dataset.jsonl")
        assert pq.read_table(out).to_pylist() == [
            expected_row(r, shape, "You are terse.") for r in records
        ]


def test_jsonl_records_take_no_system_prompt(evol, run_dir: Path, tmp_path: Path) -> None:
    set_manifest(run_dir, system_prompt="You are terse.")
    out = tmp_path / "data.jsonl"
    assert evol("export", run_dir, "--format", "jsonl", "--out", out).exit_code == 0
    assert read_jsonl(out) == read_jsonl(run_dir / "dataset.jsonl")
    result = evol("export", run_dir, "--format", "jsonl", "--out", out, "--system-prompt", "x")
    assert result.exit_code == 2 and "use alpaca, sharegpt or openai-chat" in result.stderr
    # "" asks for no system turn, which is what the jsonl shape always writes.
    result = evol("export", run_dir, "--format", "jsonl", "--out", out, "--system-prompt", "")
    assert result.exit_code == 0 and read_jsonl(out) == read_jsonl(run_dir / "dataset.jsonl")


# -- runs that did not finish ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "warning"),
    [
        ("complete", None),
        ("interrupted", "{run} is interrupted: exporting the 59 records written so far"),
        (
            "failed",
            "{run} is incomplete (some steps failed after all retries): exporting the 59 records "
            "written so far",
        ),
        ("unknown", "{run} is unknown: exporting the 59 records written so far"),
        (
            "running",
            "{run} is still running, or was killed before it finished: exporting the 59 records "
            "written so far",
        ),
    ],
)
def test_an_unfinished_run_is_exported_with_a_warning(
    evol, run_dir: Path, tmp_path: Path, status: str, warning: str | None
) -> None:
    set_manifest(run_dir, status=status)
    # A kill mid-write: the last record of gen_2 is torn, and the line before it is whole.
    gen_2 = run_dir / "gen_2.jsonl"
    whole = gen_2.read_bytes()
    gen_2.write_bytes(whole[: len(whole) - 40])
    out = tmp_path / "data.jsonl"
    result = evol("export", run_dir, "--out", out, "--json")
    assert result.exit_code == 0
    assert json.loads(result.stdout)["status"] == status
    expected = f"evol: warning: {warning.format(run=run_dir)}\n" if warning else ""
    assert result.stderr == expected
    assert len(read_jsonl(out)) == 59
    human = evol("export", run_dir, "--out", out)
    assert human.stdout.splitlines()[0] == f"{run_dir} ({status}): 59 records exported"
    assert human.stderr == expected


def test_records_without_output_are_left_out(evol, server, tmp_path: Path) -> None:
    seeds, run = write_seeds(tmp_path / "seeds.jsonl", ROWS[:4]), tmp_path / "run"
    assert (
        evol(*run_args(server, seeds, run, "--generations", "1", "--no-answer-seeds")).exit_code
        == 0
    )
    result = evol("export", run, "--out", tmp_path / "a.jsonl")
    assert result.exit_code == 0 and "left out 4 records without an output" in result.stderr
    assert len(read_jsonl(tmp_path / "a.jsonl")) == 3  # seed 1's rewrite was judged equal


# -- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--split", "train=0.9,test=0.2"], "add up to 1"),
        (["--split", "train=nan,test=0.5"], "add up to 1"),
        (["--split", "train=inf,test=-inf"], "add up to 1"),
        (["--split", "train=1.5,test=-0.5"], "add up to 1"),
        (["--split", "train"], "name=fraction"),
        (["--split", "train=0.5,train=0.5"], "named twice"),
        (["--split", "../up=0.5,test=0.5"], "it names a file"),
        (["--split", "=1"], "it names a file"),
        (["--generations", "one"], "a range like 1-4"),
        (["--generations", "3-1"], "a range like 1-4"),
    ],
)
def test_bad_export_options(
    evol, run_dir: Path, tmp_path: Path, options: list[str], message: str
) -> None:
    result = evol("export", run_dir, "--out", tmp_path / "x.jsonl", *options)
    assert result.exit_code == 2
    assert message in result.stderr and result.stderr.count("\n") == 1
    assert list(tmp_path.glob("x*")) == []


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (None, None),
        ("3", {3}),
        ("1-4", {1, 2, 3, 4}),
        ("2-2", {2}),
        ("0, 2,5-6", {0, 2, 5, 6}),
    ],
)
def test_parse_generations(spec: str | None, expected: set[int] | None) -> None:
    assert parse_generations(spec) == expected


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (None, {}),
        ("train=1", {"train": 1.0}),
        ("train=0.9, test=0.1", {"train": 0.9, "test": 0.1}),
        ("a=0.1,b=0.2,c=0.7", {"a": 0.1, "b": 0.2, "c": 0.7}),
        ("held_out-1=0,train=1", {"held_out-1": 0.0, "train": 1.0}),
    ],
)
def test_parse_split(spec: str | None, expected: dict[str, float]) -> None:
    assert parse_split(spec) == expected


@pytest.mark.parametrize(
    "name",
    [
        "gen_1.jsonl",
        "dataset.jsonl",
        "run.json",
        "eliminated.jsonl",
        "scores.jsonl",
        "metrics.json",
        "contamination.json",
        ".evol.lock",
    ],
)
def test_export_never_overwrites_the_run(evol, run_dir: Path, name: str) -> None:
    if not (run_dir / name).exists():  # what evol score writes, the lock's empty file
        (run_dir / name).write_text("paid for\n")
    before = (run_dir / name).read_bytes()
    result = evol("export", run_dir, "--out", run_dir / name)
    assert result.exit_code == 2 and f"is {name} of the run in {run_dir}" in result.stderr
    assert (run_dir / name).read_bytes() == before


def test_export_beside_the_run_files_is_fine(evol, run_dir: Path) -> None:
    assert evol("export", run_dir, "--out", run_dir / "alpaca.json").exit_code == 0
    assert len(json.loads((run_dir / "alpaca.json").read_text(encoding="utf-8"))) == 60


def test_parts_are_written_all_or_none(evol, run_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "data.test.jsonl.tmp").mkdir()  # the second part cannot be written
    result = evol(
        "export", run_dir, "--out", tmp_path / "data.jsonl", "--split", "train=0.5,test=0.5"
    )
    assert result.exit_code == 2
    assert result.stderr == (
        f"evol: error: {tmp_path / 'data.test.jsonl'}: cannot write it: Is a directory\n"
    )
    assert sorted(p.name for p in tmp_path.glob("data*")) == ["data.test.jsonl.tmp"]


def test_out_may_not_be_a_directory(evol, run_dir: Path, tmp_path: Path) -> None:
    result = evol("export", run_dir, "--out", tmp_path)
    assert result.exit_code == 2 and "is a directory" in result.stderr


@pytest.mark.parametrize(
    ("line", "why"),
    [
        (b"{not json\n", "corrupt record"),
        (b"[1, 2]\n", "not an evol record (not a JSON object)"),
        (b'{"id": "x", "root_id": "x", "generation": "2"}\n', "wrong generation; missing"),
        (b'{"id": "x", "root_id": 7, "generation": 1, "instruction": "i"}\n', "wrong root_id;"),
    ],
)
def test_a_bad_record_names_its_file_and_line(
    evol, run_dir: Path, tmp_path: Path, line: bytes, why: str
) -> None:
    gen_1 = run_dir / "gen_1.jsonl"
    lines = gen_1.read_bytes().splitlines(keepends=True)
    gen_1.write_bytes(b"".join(lines[:2] + [line] + lines[2:]))
    result = evol("export", run_dir, "--out", tmp_path / "x.jsonl")
    assert result.exit_code == 2
    assert result.stderr.startswith(f"evol: error: {gen_1}:3: ") and why in result.stderr
    assert result.stderr.count("\n") == 1
    assert list(tmp_path.glob("x*")) == []


def test_a_bad_record_is_refused_in_a_generation_not_exported_too(
    evol, run_dir: Path, tmp_path: Path
) -> None:
    """The first pass checks every record of the run, not only those of `--generations`: a
    damaged run directory is refused whole, not exported in part."""
    gen_1 = run_dir / "gen_1.jsonl"
    lines = gen_1.read_bytes().splitlines(keepends=True)
    gen_1.write_bytes(b"".join(lines[:2] + [b"{not json\n"] + lines[2:]))
    result = evol("export", run_dir, "--out", tmp_path / "x.jsonl", "--generations", "2")
    assert result.exit_code == 2
    assert result.stderr.startswith(f"evol: error: {gen_1}:3: corrupt record")
    assert list(tmp_path.glob("x*")) == []


def test_no_run_here(evol, tmp_path: Path) -> None:
    result = evol("export", tmp_path, "--out", tmp_path / "x.jsonl")
    assert result.exit_code == 2 and "run.json is missing" in result.stderr


@pytest.mark.parametrize("command", ["export", "show"])
def test_flags_read_as_flags_in_help(evol, command: str) -> None:
    result = evol(command, "--help", env={"COLUMNS": "200"})
    rows = [row for row in result.stdout.splitlines() if "--json" in row or "--shuffle" in row]
    assert rows and all("<bool>" not in row for row in rows)
    if command == "export":
        assert any("--shuffle" in row and "--no-shuffle" in row for row in rows)


# -- where an export may write (found by mutation testing) -------------------------------------


def test_an_export_into_folders_that_do_not_exist_yet_makes_them(evol, tmp_path: Path) -> None:
    run = write_run(tmp_path / "run", [record("s1", "Name a river.")])
    out = tmp_path / "exports" / "today" / "data.jsonl"
    result = evol("export", run, "--out", out, "--format", "jsonl")
    assert result.exit_code == 0, result.output
    assert [json.loads(line)["id"] for line in out.read_text().splitlines()] == ["s1"]


def test_an_export_over_a_file_of_the_run_is_refused_naming_the_option(
    evol, tmp_path: Path
) -> None:
    run = write_run(tmp_path / "run", [record("s1", "Name a river.")])
    before = (run / "gen_0.jsonl").read_bytes()
    result = evol("export", run, "--out", run / "gen_0.jsonl", "--format", "jsonl")
    assert result.exit_code == 2
    assert result.stderr == (
        f"evol: error: {run / 'gen_0.jsonl'}: is gen_0.jsonl of the run in {run}; give --out a "
        "path outside the run's own files\n"
    )
    assert (run / "gen_0.jsonl").read_bytes() == before


# -- a planted link, every chat shape's prompt, a damaged constraints list (found by mutation testing) ---


# -- a planted link ------------------------------------------------------------------------------


def test_a_link_in_place_of_the_output_is_refused_saying_what_to_do(evol, tmp_path: Path) -> None:
    run = write_run(tmp_path / "run", [record("s1", "Name a river.")])
    target = tmp_path / "precious.txt"
    target.write_text("precious\n", encoding="utf-8")
    link = tmp_path / "out.jsonl"
    link.symlink_to(target)
    result = evol("export", run, "--out", link)
    assert result.exit_code == 2, result.output
    assert result.stderr == (
        f"evol: error: {link}: is a symbolic link; evol writes no file through a link: "
        "remove it or choose another name\n"
    )
    assert target.read_text(encoding="utf-8") == "precious\n"


# -- every export shape shows the trainer the whole task (attack22's survivor) -----------------

TASK = {
    "id": "s1.2",
    "instruction": "Summarise the text below in one sentence, all in lowercase.",
    "input": "The cat sat on the mat while the dog slept by the door.",
    "output": "a cat sat and a dog slept.",
    "constraints": [{"id": "change_case:english_lowercase", "kwargs": {}}],
}


@pytest.mark.parametrize("shape", ["sharegpt", "openai-chat", "ifeval", "rlvr"])
def test_every_chat_shaped_export_prompts_with_the_instruction_and_its_input(shape: str) -> None:
    from evol.dataset.export_files import shape_record
    from evol.rundir.records import compose

    row = shape_record(dict(TASK), shape, None)
    whole_task = compose(TASK["instruction"], TASK["input"])
    prompts = {
        "sharegpt": lambda: row["conversations"][0]["value"],
        "openai-chat": lambda: row["messages"][0]["content"],
        "ifeval": lambda: row["prompt"],
        "rlvr": lambda: row["messages"][0]["content"],
    }
    assert prompts[shape]() == whole_task
    assert TASK["input"] in whole_task and TASK["instruction"] in whole_task


@pytest.mark.parametrize(
    ("constraints", "why"),
    [
        ([{"kwargs": {}}], "Field required"),
        ([{"id": "x", "kwargs": []}], "Input should be a valid dictionary"),
    ],
)
def test_a_damaged_constraints_list_is_refused_naming_the_file_the_line_and_why(
    tmp_path: Path, constraints: object, why: str
) -> None:
    from evol.dataset.export import export_run
    from evol.errors import RunDirError

    rows = [record("s1", "Name a colour."), record("s1.1", "Name a warm colour.")]
    rows[1]["constraints"] = constraints
    run = write_run(tmp_path / "run", rows)
    with pytest.raises(RunDirError) as refused:
        export_run(run, tmp_path / "out.jsonl", shape="ifeval")
    assert str(refused.value) == (
        f"{run / 'gen_1.jsonl'}:1: not an evol record (constraints: {why})"
    )


# -- found by the third mutation round ---------------------------------------------------------


# -- evol export: what it refuses, in words that say what to do -----------------------------------


@pytest.fixture
def small_run(tmp_path: Path) -> Path:
    from tests.support.runs import record, write_run

    return write_run(tmp_path / "run", [record("s1", "Name a river."), record("s1.1", "Name two.")])


@pytest.mark.parametrize(
    ("shape", "what"),
    [("jsonl", "writes evol's records as they are"), ("ifeval", "has no system turn")],
)
def test_a_system_prompt_for_a_shape_without_one_is_refused_saying_which_have_one(
    evol, small_run: Path, tmp_path: Path, shape: str, what: str
) -> None:
    out = tmp_path / "out.jsonl"
    result = evol(
        "export", small_run, "--out", out, "--format", shape, "--system-prompt", "Be kind."
    )
    assert result.exit_code == 2
    assert result.stderr == (
        f"evol: error: --system-prompt: the {shape} format {what}; use alpaca, sharegpt or "
        "openai-chat (or rlvr) for a system turn\n"
    )
    assert not out.exists()


def test_ifeval_to_parquet_is_refused_saying_what_to_write_instead(
    evol, small_run: Path, tmp_path: Path
) -> None:
    pytest.importorskip("pyarrow")
    out = tmp_path / "out.parquet"
    result = evol("export", small_run, "--out", out, "--format", "ifeval")
    assert result.exit_code == 2
    assert result.stderr == (
        "evol: error: --format ifeval: its kwargs differ per constraint, which one Parquet "
        "column cannot hold; write JSON Lines (or rlvr to Parquet)\n"
    )


def test_a_run_without_records_is_not_exported(evol, small_run: Path, tmp_path: Path) -> None:
    for path in small_run.glob("gen_*.jsonl"):
        path.unlink()
    result = evol("export", small_run, "--out", tmp_path / "out.jsonl")
    assert result.exit_code == 2
    assert result.stderr == f"evol: error: {small_run}: the run has no records yet\n"


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"generation": "zero", "round": "first"}, "wrong generation, round"),
        (
            {"generation": "zero", "instruction": None, "output": None},
            "wrong generation; missing instruction, output",
        ),
    ],
)
def test_a_damaged_record_is_named_with_every_field_at_fault(
    evol, small_run: Path, tmp_path: Path, change: dict[str, Any], why: str
) -> None:
    path = small_run / "gen_1.jsonl"
    [damaged] = read_jsonl(path)
    damaged = {key: value for key, value in (damaged | change).items() if value is not None}
    path.write_text(json.dumps(damaged) + "\n")
    result = evol("export", small_run, "--out", tmp_path / "out.jsonl")
    assert result.exit_code == 2
    assert result.stderr.startswith(f"evol: error: {path}:1: not an evol record ({why})"), (
        result.stderr
    )


def test_a_run_json_without_a_status_is_exported_with_a_warning_that_says_so(
    evol, small_run: Path, tmp_path: Path
) -> None:
    manifest = json.loads((small_run / "run.json").read_text())
    del manifest["status"]
    (small_run / "run.json").write_text(json.dumps(manifest))
    result = evol("export", small_run, "--out", tmp_path / "out.jsonl")
    assert result.exit_code == 0, result.output
    assert result.stderr == (
        f"evol: warning: {small_run} is unknown: exporting the 2 records written so far\n"
    )


def test_a_shuffled_export_is_the_same_file_for_the_same_seed_on_any_machine(
    evol, tmp_path: Path
) -> None:
    """docs/export.md: "the same seed, the same files". The order is seeded by the seed and
    the part (none here), so a dataset exported again elsewhere, or by a later evol, is the
    same file."""
    from tests.support.runs import record, write_run

    run = write_run(tmp_path / "run", [record(f"s{i}", f"Name river {i}.") for i in range(8)])
    out = tmp_path / "out.jsonl"
    result = evol("export", run, "--out", out, "--format", "jsonl", "--shuffle", "--seed", "3")
    assert result.exit_code == 0, result.output
    order = [row["id"] for row in read_jsonl(out)]
    assert order == ["s6", "s7", "s2", "s3", "s4", "s1", "s0", "s5"]


RUN_FIXTURE = Path(__file__).parents[1] / "fixtures" / "run_v1" / "complete"


def constrained_run(tmp_path: Path) -> Path:
    """The committed finished run, every record given constraints drawn by `pick`."""
    run = tmp_path / "run"
    shutil.copytree(RUN_FIXTURE, run)
    rng = random.Random(1)
    for path in sorted(run.glob("gen_*.jsonl")):
        rows = [json.loads(line) for line in path.read_text("utf-8").splitlines()]
        for row in rows:
            carried: list[Constraint] = []
            for _ in range(3):
                drawn = pick(rng, carried)
                if drawn:
                    carried.append(drawn)
            row["constraints"] = [c.model_dump() for c in carried]
        write_rows(path, rows)
    return run


def test_exports_load_with_datasets_and_verify_round_trips(tmp_path, evol):
    datasets = pytest.importorskip("datasets")
    run = constrained_run(tmp_path)
    for shape, name in [("rlvr", "r.jsonl"), ("ifeval", "i.jsonl"), ("rlvr", "r.json")]:
        out = tmp_path / name
        export_run(run, out, shape=shape)
        loaded = datasets.load_dataset(
            "json", data_files=str(out), split="train", cache_dir=str(tmp_path / "hf")
        )
        assert loaded.num_rows == 20
        code, report = verify_report(evol, out)
        assert code == 0 and report["rows"]["checked"] == 20
        if shape == "rlvr":
            for row in loaded:
                for key, kwargs in open_instruct_constraints(row["ground_truth"]):
                    check(row["messages"][-1]["content"], [Constraint(id=key, kwargs=kwargs)])


def test_an_rlvr_parquet_export_round_trips_through_evol_verify(tmp_path, evol):
    pytest.importorskip("pyarrow")
    out = tmp_path / "r.parquet"
    export_run(constrained_run(tmp_path), out, shape="rlvr")
    code, report = verify_report(evol, out)
    assert code == 0 and report["rows"]["checked"] == 20


@st.composite
def varied_runs(draw) -> list[dict[str, Any]]:
    """Kept records of a run: lineages of 0 to 3 evolutions, with eliminated rounds between
    (so round != generation), root ids listed out of sorted order, and some seeds without an
    answer."""
    count = draw(st.integers(1, 14))
    names = draw(st.permutations([f"{chr(97 + k % 26)}{k}" for k in range(count)]))
    records = []
    for name in names:
        record_id, round_ = name, 0
        records.append(record(name, f"seed {name}", output=draw(st.sampled_from(["A.", None]))))
        for _ in range(draw(st.integers(0, 3))):
            round_ += draw(st.integers(1, 3))  # the rounds between were eliminated
            record_id = f"{record_id}.{round_}"
            records.append(record(record_id, f"evolved {record_id}"))
    return records


def dataset_order(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """gen_0 first, each generation in file order: what `evol run` writes."""
    return sorted(records, key=lambda r: r["generation"])


def reference_split(
    exported: list[dict[str, Any]], fractions: dict[str, float], seed: int
) -> dict[str, str]:
    """The dealing the docs describe, written plainly: root id -> part."""
    sizes = Counter(r["root_id"] for r in exported)
    total = sum(sizes.values())
    filled = dict.fromkeys(fractions, 0)
    roots = sorted(sizes)
    random.Random(seed).shuffle(roots)
    assignment = {}
    for root in roots:
        best = None
        for name in fractions:  # the first part listed wins a tie
            if (
                best is None
                or fractions[name] * total - filled[name] > fractions[best] * total - filled[best]
            ):
                best = name
        filled[best] += sizes[root]
        assignment[root] = best
    return assignment


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    records=varied_runs(),
    weights=st.lists(st.integers(0, 10), min_size=2, max_size=3).filter(any),
    seed=st.integers(0, 2**16),
    generations=st.none() | st.sets(st.integers(0, 3), min_size=1),
    shuffle=st.booleans(),
)
def test_split_keeps_lineages_whole_and_loses_nothing(
    records: list[dict[str, Any]],
    weights: list[int],
    seed: int,
    generations: set[int] | None,
    shuffle: bool,
) -> None:
    names = ["train", "test", "dev"][: len(weights)]
    fractions = {name: w / sum(weights) for name, w in zip(names, weights, strict=True)}
    with tempfile.TemporaryDirectory() as tmp:
        run = write_run(Path(tmp) / "run", records)
        result = export_run(
            run,
            Path(tmp) / "out" / "data.jsonl",
            shape="jsonl",
            split=fractions,
            seed=seed,
            shuffle=shuffle,
            generations=generations,
        )
        parts = {name: read_jsonl(Path(tmp) / "out" / f"data.{name}.jsonl") for name in names}
    chosen = [
        r for r in dataset_order(records) if generations is None or r["generation"] in generations
    ]
    exported = [r for r in chosen if r["output"] is not None]
    assert result.left_out_without_output == len(chosen) - len(exported)

    # Nothing lost, nothing twice, no lineage on two sides.
    assert sorted(r["id"] for rows in parts.values() for r in rows) == sorted(
        r["id"] for r in exported
    )
    side: dict[str, str] = {}
    for name, rows in parts.items():
        for r in rows:
            assert side.setdefault(r["root_id"], name) == name, r["root_id"]
    # Each part in the dataset's order unless shuffled; the result counts what the files hold.
    order = [r["id"] for r in exported]
    for name, rows in parts.items():
        ids = [r["id"] for r in rows]
        if not shuffle:
            assert ids == sorted(ids, key=order.index)
        part = next(p for p in result.parts if p.name == name)
        assert (part.records, part.lineages) == (len(rows), len({r["root_id"] for r in rows}))
        assert part.file == str(Path(tmp) / "out" / f"data.{name}.jsonl")

    # Whole lineages dealt as documented, and each part within one lineage of its target.
    assert side == reference_split(exported, fractions, seed)
    if exported:
        largest = max(Counter(r["root_id"] for r in exported).values())
        for name, fraction in fractions.items():
            assert len(parts[name]) - fraction * len(exported) < largest
            if len(fractions) == 2:
                assert fraction * len(exported) - len(parts[name]) < largest


def test_export_by_generation_reads_generation_not_round(
    evol, varied_run: Path, tmp_path: Path
) -> None:
    out = tmp_path / "data.jsonl"
    result = evol(
        "export", varied_run, "--out", out, "--format", "jsonl", "--generations", "1-2",
        "--split", "train=0.5,test=0.5", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = read_jsonl(tmp_path / "data.train.jsonl") + read_jsonl(tmp_path / "data.test.jsonl")
    assert sorted(r["id"] for r in rows) == sorted(
        r["id"] for r in VARIED if r["generation"] in (1, 2)
    )
    summary = json.loads(result.stdout)
    assert summary["left_out_without_output"] == 0
    assert sum(p["lineages"] for p in summary["parts"]) == 3  # q7, b2, nx: each on one side


def test_shuffle_follows_the_seed(tmp_path: Path) -> None:
    run = write_run(tmp_path / "run", [record(f"s{i}", f"seed {i}") for i in range(30)])

    def order(seed: int) -> list[str]:
        out = tmp_path / f"data-{seed}.jsonl"
        export_run(run, out, shape="jsonl", split={"all": 1.0}, shuffle=True, seed=seed)
        return [r["id"] for r in read_jsonl(tmp_path / f"data-{seed}.all.jsonl")]

    first = order(1)
    assert sorted(first) == sorted(f"s{i}" for i in range(30))
    assert order(1) == first  # the same seed, the same order
    assert len({tuple(order(seed)) for seed in (1, 2, 3)}) == 3
