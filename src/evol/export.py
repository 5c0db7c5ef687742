"""`evol export`: a run's dataset in the shapes trainers read.

    alpaca       {"instruction", "input", "output"}
    sharegpt     {"conversations": [{"from": "human", ...}, {"from": "gpt", ...}]}
    openai-chat  {"messages": [{"role": "user", ...}, {"role": "assistant", ...}]}
    jsonl        the records as evol wrote them

A file named *.json gets one JSON array, anything else JSON Lines. With --split, each part goes
to <stem>.<part><suffix>. Records without an answer (from --no-answer-seeds) are left out.
"""

from __future__ import annotations

import io
import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO, Literal

import jsonlines
from pydantic import BaseModel

from evol.errors import RunDirError, UsageError
from evol.manifest import read_manifest
from evol.records import compose
from evol.store import atomic_write, generation_files, iter_records

ExportFormat = Literal["alpaca", "sharegpt", "openai-chat", "jsonl"]


class ExportResult(BaseModel):
    files: dict[str, int]
    left_out_without_output: int


def _user_text(record: dict[str, Any]) -> str:
    return compose(record["instruction"], record.get("input") or "")


SHAPES: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "alpaca": lambda r: {
        "instruction": r["instruction"],
        "input": r.get("input") or "",
        "output": r["output"],
    },
    "sharegpt": lambda r: {
        "conversations": [
            {"from": "human", "value": _user_text(r)},
            {"from": "gpt", "value": r["output"]},
        ]
    },
    "openai-chat": lambda r: {
        "messages": [
            {"role": "user", "content": _user_text(r)},
            {"role": "assistant", "content": r["output"]},
        ]
    },
    "jsonl": lambda r: r,
}


def parse_generations(spec: str | None) -> set[int] | None:
    """`1-4`, `0,2` or `3` into a set of generations; None means all."""
    if not spec:
        return None
    chosen: set[int] = set()
    try:
        for part in spec.split(","):
            low, _, high = part.strip().partition("-")
            chosen.update(range(int(low), int(high or low) + 1))
    except ValueError:
        raise UsageError(
            f"--generations: expected a range like 1-4 or a list like 0,2, got {spec!r}"
        ) from None
    return chosen


def parse_split(spec: str | None) -> dict[str, float]:
    """`train=0.95,test=0.05` into fractions that add up to 1."""
    if not spec:
        return {}
    parts: dict[str, float] = {}
    for item in spec.split(","):
        name, _, value = item.partition("=")
        try:
            parts[name.strip()] = float(value)
        except ValueError:
            raise UsageError(f"--split: expected name=fraction, got {item!r}") from None
    if any(f < 0 for f in parts.values()) or abs(sum(parts.values()) - 1) > 1e-6:
        raise UsageError(f"--split: fractions must be >= 0 and add up to 1, got {spec!r}")
    return parts


def export_run(
    run_dir: Path,
    out: Path,
    *,
    shape: ExportFormat = "alpaca",
    generations: set[int] | None = None,
    split: dict[str, float] | None = None,
    shuffle: bool = False,
    seed: int = 0,
) -> ExportResult:
    """Write the kept records of `run_dir` to `out` in `shape`; returns the files and row counts."""
    read_manifest(run_dir)
    if not generation_files(run_dir):
        raise RunDirError(f"{run_dir}: the run has no records yet")
    records, left_out = [], 0
    for record in iter_records(run_dir):
        if generations is not None and record["generation"] not in generations:
            continue
        if record.get("output") is None:
            left_out += 1
            continue
        records.append(SHAPES[shape](record))
    if shuffle:
        random.Random(seed).shuffle(records)
    files: dict[str, int] = {}
    for part, rows in _split(records, split or {}).items():
        target = out if part is None else out.with_name(f"{out.stem}.{part}{out.suffix}")
        _write(target, rows)
        files[str(target)] = len(rows)
    return ExportResult(files=files, left_out_without_output=left_out)


def _split(records: list[Any], fractions: dict[str, float]) -> dict[str | None, list[Any]]:
    if not fractions:
        return {None: records}
    parts, start, cumulative = {}, 0, 0.0
    for name, fraction in fractions.items():
        cumulative += fraction
        end = round(cumulative * len(records))
        parts[name] = records[start:end]
        start = end
    return parts


def _write(path: Path, rows: list[Any]) -> None:
    """One JSON array for a .json file, else JSON Lines; atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)

    def dump(out: BinaryIO) -> None:
        text = io.TextIOWrapper(out, encoding="utf-8", write_through=True)
        if path.suffix == ".json":
            json.dump(rows, text, ensure_ascii=False, indent=1)
            text.write("\n")
        else:
            with jsonlines.Writer(
                text, dumps=lambda row: json.dumps(row, ensure_ascii=False)
            ) as writer:
                writer.write_all(rows)
        text.detach()

    atomic_write(path, dump)
