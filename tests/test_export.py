"""`evol export`: every format loads with Hugging Face datasets, as a trainer would load it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import read_jsonl, run_args, write_seeds

# datasets must never reach for the Hub: these are local files.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

ROWS = [
    {"instruction": f"Explain idea number {i}", **({"input": f"context {i}"} if i % 3 == 0 else {})}
    for i in range(20)
]


@pytest.fixture
def run_dir(evol, server, tmp_path: Path) -> Path:
    seeds, out = write_seeds(tmp_path / "seeds.jsonl", ROWS), tmp_path / "run"
    assert evol(*run_args(server, seeds, out, "--generations", "2")).exit_code == 0
    return out


def load(path: Path, tmp_path: Path):
    datasets = pytest.importorskip("datasets")
    return datasets.load_dataset(
        "json", data_files=str(path), split="train", cache_dir=str(tmp_path / "hf-cache")
    )


def user_text(record: dict) -> str:
    return (
        f"{record['instruction']}\n\n{record['input']}"
        if record["input"]
        else record["instruction"]
    )


@pytest.mark.parametrize("suffix", [".jsonl", ".json"])
@pytest.mark.parametrize("shape", ["alpaca", "sharegpt", "openai-chat", "jsonl"])
def test_each_format_loads_with_datasets(
    evol, run_dir: Path, tmp_path: Path, shape: str, suffix: str
) -> None:
    out = tmp_path / f"export{suffix}"
    result = evol("export", run_dir, "--format", shape, "--out", out)
    assert result.exit_code == 0, result.stderr
    records = read_jsonl(run_dir / "dataset.jsonl")
    rows = load(out, tmp_path)
    assert len(rows) == len(records) == 60
    for row, record in zip(rows, records, strict=True):
        if shape == "alpaca":
            assert (row["instruction"], row["input"], row["output"]) == (
                record["instruction"],
                record["input"],
                record["output"],
            )
        elif shape == "sharegpt":
            assert row["conversations"] == [
                {"from": "human", "value": user_text(record)},
                {"from": "gpt", "value": record["output"]},
            ]
        elif shape == "openai-chat":
            assert row["messages"] == [
                {"role": "user", "content": user_text(record)},
                {"role": "assistant", "content": record["output"]},
            ]
        else:
            assert (row["id"], row["parent_id"], row["generation"]) == (
                record["id"],
                record["parent_id"],
                record["generation"],
            )


def test_split_shuffle_and_generations(evol, run_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "data.jsonl"
    args = [
        "export",
        run_dir,
        "--out",
        out,
        "--format",
        "jsonl",
        "--generations",
        "1-2",
        "--split",
        "train=0.75,test=0.25",
        "--shuffle",
        "--seed",
        "4",
        "--json",
    ]
    files = json.loads(evol(*args).stdout)["files"]
    train, test = tmp_path / "data.train.jsonl", tmp_path / "data.test.jsonl"
    assert files == {str(train): 30, str(test): 10}
    train_ids = [r["id"] for r in load(train, tmp_path)]
    test_ids = [r["id"] for r in load(test, tmp_path / "t")]
    expected = {r["id"] for r in read_jsonl(run_dir / "dataset.jsonl") if r["generation"] in (1, 2)}
    assert set(train_ids) | set(test_ids) == expected and not set(train_ids) & set(test_ids)
    assert train_ids != sorted(
        train_ids, key=[r["id"] for r in read_jsonl(run_dir / "dataset.jsonl")].index
    )
    again = tmp_path / "again.jsonl"
    evol(*[str(a).replace(str(out), str(again)) for a in args])
    assert read_jsonl(tmp_path / "again.train.jsonl") == read_jsonl(train)


def test_records_without_output_are_left_out(evol, server, tmp_path: Path) -> None:
    seeds, run = write_seeds(tmp_path / "seeds.jsonl", ROWS[:4]), tmp_path / "run"
    assert (
        evol(*run_args(server, seeds, run, "--generations", "1", "--no-answer-seeds")).exit_code
        == 0
    )
    result = evol("export", run, "--out", tmp_path / "a.jsonl")
    assert result.exit_code == 0 and "left out 4 records without an output" in result.stderr
    assert len(read_jsonl(tmp_path / "a.jsonl")) == 4


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--split", "train=0.9,test=0.2"], "add up to 1"),
        (["--split", "train"], "name=fraction"),
        (["--generations", "one"], "a range like 1-4"),
    ],
)
def test_bad_export_options(
    evol, run_dir: Path, tmp_path: Path, options: list[str], message: str
) -> None:
    result = evol("export", run_dir, "--out", tmp_path / "x.jsonl", *options)
    assert result.exit_code == 2 and message in result.stderr
