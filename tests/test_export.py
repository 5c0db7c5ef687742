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


@pytest.mark.parametrize("shape", ["alpaca", "sharegpt", "openai-chat", "jsonl"])
def test_parquet_loads_with_datasets_and_pyarrow(
    evol, run_dir: Path, tmp_path: Path, shape: str
) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    datasets = pytest.importorskip("datasets")
    out = tmp_path / "data.parquet"
    assert evol("export", run_dir, "--format", shape, "--out", out).exit_code == 0
    table = pq.read_table(out).to_pylist()
    loaded = datasets.load_dataset(
        "parquet", data_files=str(out), split="train", cache_dir=str(tmp_path / "hf")
    )
    records = read_jsonl(run_dir / "dataset.jsonl")
    assert len(table) == len(loaded) == len(records) == 60
    if shape == "sharegpt":
        assert table[0]["conversations"] == [
            {"from": "human", "value": user_text(records[0])},
            {"from": "gpt", "value": records[0]["output"]},
        ]
    if shape == "jsonl":  # free-form dicts travel as JSON text
        assert json.loads(table[5]["usage"]) == records[5]["usage"]
        assert [row["judge"] for row in table] == [r["judge"] for r in records]


def test_a_json_export_is_one_array(evol, run_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "data.json"
    assert evol("export", run_dir, "--out", out).exit_code == 0
    rows = json.loads(out.read_text(encoding="utf-8"))  # not JSON Lines: one value
    assert (
        isinstance(rows, list)
        and len(rows) == 60
        and set(rows[0]) == {"instruction", "input", "output"}
    )


def test_a_split_keeps_every_lineage_on_one_side(evol, server, tmp_path: Path) -> None:
    # Lineages of 1 to 4 kept records ([equal] ones keep only their seed).
    rows = [
        {"id": f"r{i}", "instruction": ("[equal] " if i % 3 == 0 else "") + f"Explain idea {i}"}
        for i in range(30)
    ]
    seeds, run = write_seeds(tmp_path / "seeds.jsonl", rows), tmp_path / "run"
    assert evol(*run_args(server, seeds, run, "--generations", "3")).exit_code == 0
    out = tmp_path / "data.jsonl"

    def split(seed: int) -> tuple[dict, dict[str, set[str]]]:
        result = evol("export", run, "--out", out, "--format", "jsonl", "--split",
                      "train=0.8,test=0.2", "--seed", seed, "--json")  # fmt: skip
        assert result.exit_code == 0, result.stderr
        roots = {
            part: {r["root_id"] for r in read_jsonl(tmp_path / f"data.{part}.jsonl")}
            for part in ("train", "test")
        }
        return json.loads(result.stdout), roots

    summary, roots = split(1)
    assert not roots["train"] & roots["test"]
    assert roots["train"] | roots["test"] == {f"r{i}" for i in range(30)}
    total = sum(part["records"] for part in summary["parts"].values())
    # As close as whole lineages allow: within the largest lineage of the target.
    assert abs(summary["parts"]["test"]["records"] - 0.2 * total) <= 4
    assert summary["parts"]["train"]["lineages"] + summary["parts"]["test"]["lineages"] == 30
    assert split(1) == (summary, roots)  # the same for the same --seed
    assert split(2)[1] != roots


def test_exports_carry_the_runs_system_prompt(evol, server, tmp_path: Path) -> None:
    seeds, run = write_seeds(tmp_path / "seeds.jsonl", ROWS[:2]), tmp_path / "run"
    options = ("--generations", "1", "--system-prompt", "Be brief.")
    assert evol(*run_args(server, seeds, run, *options)).exit_code == 0
    answered = [b for b in server.requests if b["messages"][0]["role"] == "system"]
    assert answered and all(b["messages"][0]["content"] == "Be brief." for b in answered)
    for shape, first in [("sharegpt", {"from": "system", "value": "Be brief."}),
                         ("openai-chat", {"role": "system", "content": "Be brief."})]:  # fmt: skip
        assert (
            evol("export", run, "--format", shape, "--out", tmp_path / f"{shape}.jsonl").exit_code
            == 0
        )
        row = read_jsonl(tmp_path / f"{shape}.jsonl")[0]
        assert next(iter(row.values()))[0] == first
    assert evol("export", run, "--out", tmp_path / "a.jsonl").exit_code == 0
    assert read_jsonl(tmp_path / "a.jsonl")[0]["system"] == "Be brief."
    own = evol("export", run, "--out", tmp_path / "b.jsonl", "--system-prompt", "Be kind.")
    assert own.exit_code == 0 and read_jsonl(tmp_path / "b.jsonl")[0]["system"] == "Be kind."
    plain_run = tmp_path / "plain"
    assert evol(*run_args(server, seeds, plain_run, "--generations", "1")).exit_code == 0
    assert evol("export", plain_run, "--out", tmp_path / "c.jsonl").exit_code == 0
    assert "system" not in read_jsonl(tmp_path / "c.jsonl")[0]


def test_an_unfinished_run_is_exported_with_a_plain_warning(
    evol, run_dir: Path, tmp_path: Path
) -> None:
    manifest = json.loads((run_dir / "run.json").read_text())
    manifest["status"] = "interrupted"
    (run_dir / "run.json").write_text(json.dumps(manifest))
    result = evol("export", run_dir, "--out", tmp_path / "a.jsonl", "--json")
    assert result.exit_code == 0
    assert (
        f"evol: warning: {run_dir} is interrupted: exporting the 60 records written so far"
        in result.stderr
    )
    assert json.loads(result.stdout)["status"] == "interrupted"
