"""`evol export`: a run's dataset in the shapes trainers read, in the files they read.

Shapes:

    alpaca       {"instruction", "input", "output"} (and "system" when the run has one)
    sharegpt     {"conversations": [{"from": "system"?}, {"from": "human"}, {"from": "gpt"}]}
    openai-chat  {"messages": [{"role": "system"?}, {"role": "user"}, {"role": "assistant"}]}
    jsonl        the records as evol wrote them

Files: `.json` gets one JSON array, `.parquet` Parquet (written a row group at a time with
pyarrow, the `parquet` extra; a record's `metadata` and `usage` go in as JSON text, since their
keys differ from record to record), anything else JSON Lines. With --split, each part goes to
<stem>.<part><suffix>, and every lineage (one root_id) lands whole in one part, so no
near-duplicate of a test item sits in train: lineages are shuffled by --seed, then each goes to
the part furthest below its share of the records. --shuffle then shuffles records inside each
part. Records without an answer (from --no-answer-seeds) are left out and counted. The system
turn is the run's --system-prompt (run.json), or export's own --system-prompt.
"""

from __future__ import annotations

import io
import json
import random
from collections import defaultdict
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
PARQUET_ROW_GROUP = 10_000


class PartSize(BaseModel):
    records: int
    lineages: int


class ExportResult(BaseModel):
    """What `evol export` wrote: the files with their sizes, and the run's status."""

    status: str
    files: dict[str, int]
    parts: dict[str, PartSize] = {}
    left_out_without_output: int


def _user_text(record: dict[str, Any]) -> str:
    return compose(record["instruction"], record.get("input") or "")


def _alpaca(record: dict[str, Any], system: str | None) -> dict[str, Any]:
    row = {
        "instruction": record["instruction"],
        "input": record.get("input") or "",
        "output": record["output"],
    }
    return {"system": system} | row if system else row


def _sharegpt(record: dict[str, Any], system: str | None) -> dict[str, Any]:
    turns = [
        {"from": "human", "value": _user_text(record)},
        {"from": "gpt", "value": record["output"]},
    ]
    return {"conversations": ([{"from": "system", "value": system}] if system else []) + turns}


def _openai_chat(record: dict[str, Any], system: str | None) -> dict[str, Any]:
    turns = [
        {"role": "user", "content": _user_text(record)},
        {"role": "assistant", "content": record["output"]},
    ]
    return {"messages": ([{"role": "system", "content": system}] if system else []) + turns}


SHAPES: dict[str, Callable[[dict[str, Any], str | None], dict[str, Any]]] = {
    "alpaca": _alpaca,
    "sharegpt": _sharegpt,
    "openai-chat": _openai_chat,
    "jsonl": lambda record, _system: record,
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
    system_prompt: str | None = None,
    on_warning: Callable[[str], None] | None = None,
) -> ExportResult:
    """Write the kept records of `run_dir` to `out` in `shape`; returns the files and sizes."""
    manifest = read_manifest(run_dir)
    assert manifest is not None
    status = manifest.get("status", "unknown")
    if not generation_files(run_dir):
        raise RunDirError(f"{run_dir}: the run has no records yet")
    system = system_prompt or manifest.get("config", {}).get("system_prompt")
    to_row = SHAPES[shape]
    # Rows grouped by lineage for the split, each with its place in the dataset's order.
    lineages: dict[str, list[tuple[int, Any]]] = defaultdict(list)
    left_out = 0
    for place, record in enumerate(iter_records(run_dir)):
        if generations is not None and record["generation"] not in generations:
            continue
        if record.get("output") is None:
            left_out += 1
            continue
        lineages[record["root_id"]].append((place, to_row(record, system)))
    kept = sum(len(rows) for rows in lineages.values())
    if status != "complete" and on_warning:
        on_warning(f"{run_dir} is {status}: exporting the {kept} records written so far")
    parts = _split(lineages, split or {}, seed)
    files: dict[str, int] = {}
    sizes: dict[str, PartSize] = {}
    for part, groups in parts.items():
        rows = [row for _place, row in sorted(item for group in groups for item in group)]
        if shuffle:
            random.Random(seed).shuffle(rows)
        target = out if part is None else out.with_name(f"{out.stem}.{part}{out.suffix}")
        _write(target, rows)
        files[str(target)] = len(rows)
        if part is not None:
            sizes[part] = PartSize(records=len(rows), lineages=len(groups))
    return ExportResult(status=status, files=files, parts=sizes, left_out_without_output=left_out)


def _split(
    lineages: dict[str, list[Any]], fractions: dict[str, float], seed: int
) -> dict[str | None, list[list[Any]]]:
    """Whole lineages to parts, as close to the fractions (of records) as whole lineages allow."""
    if not fractions:
        return {None: list(lineages.values())}
    order = sorted(lineages)
    random.Random(seed).shuffle(order)
    total = sum(len(rows) for rows in lineages.values())
    targets = {name: fraction * total for name, fraction in fractions.items()}
    filled = dict.fromkeys(fractions, 0)
    parts: dict[str | None, list[list[Any]]] = {name: [] for name in fractions}
    for root in order:
        # The part furthest below its target takes the next lineage (the first, on a tie).
        name = max(fractions, key=lambda part: targets[part] - filled[part])
        parts[name].append(lineages[root])
        filled[name] += len(lineages[root])
    return parts


def _write(path: Path, rows: list[Any]) -> None:
    """One JSON array for .json, Parquet for .parquet, else JSON Lines; atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".parquet":
        atomic_write(path, lambda out: _write_parquet(out, rows))
        return

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


def _write_parquet(out: BinaryIO, rows: list[dict[str, Any]]) -> None:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise UsageError("writing Parquet needs pyarrow: pip install 'evol[parquet]'") from None
    flat = [_parquet_row(row) for row in rows]
    # Each column's type from its first value that is not null, over all rows: the first row
    # group alone may hold only seeds, whose `judge` is null everywhere.
    columns: dict[str, Any] = {}
    for row in flat:
        for key, value in row.items():
            if columns.get(key) is None and value is not None:
                columns[key] = pa.infer_type([value])
            columns.setdefault(key, None)
    schema = pa.schema([(key, kind or pa.string()) for key, kind in columns.items()])
    with pq.ParquetWriter(out, schema) as writer:
        for start in range(0, len(flat), PARQUET_ROW_GROUP):
            batch = flat[start : start + PARQUET_ROW_GROUP]
            writer.write_table(pa.Table.from_pylist(batch, schema=schema))


def _parquet_row(row: dict[str, Any]) -> dict[str, Any]:
    """A record's free-form dicts as JSON text: their keys differ from record to record."""
    return {
        key: json.dumps(value, ensure_ascii=False) if key in ("metadata", "usage") else value
        for key, value in row.items()
    }
