"""The rows and files of an export: each shape a record takes (alpaca, sharegpt, openai-chat,
ifeval, rlvr, dpo...), and JSON Lines or Parquet (pyarrow, the `parquet` extra) with columns
typed from what the records hold."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, BinaryIO, Literal

import orjson

from evol.dataset.export_scan import ExportScan
from evol.errors import UsageError
from evol.jsonl import open_fresh
from evol.method.constraints import from_record, ground_truth, ifeval_columns
from evol.rundir.records import compose

ExportFormat = Literal["alpaca", "sharegpt", "openai-chat", "jsonl", "ifeval", "rlvr", "dpo"]
# The shapes made of verifiable constraints: records without them are left out.
CONSTRAINED_SHAPES = ("ifeval", "rlvr")
# The shape made of a passing and a failing answer: records without both are left out.
PAIRED_SHAPES = ("dpo",)
# What `evol export` writes and `evol select` does not (a selection is of records, not pairs).
EXPORT_ONLY_SHAPES = (*CONSTRAINED_SHAPES, *PAIRED_SHAPES)
FileFormat = Literal["jsonl", "json", "parquet"]

# Rows per Parquet row group (and per batch written to any file): a few MB of text at a time.
ROW_GROUP_ROWS = 10_000
PARQUET_EXTRA = "pip install 'evol[parquet]'"


def shape_record(record: dict[str, Any], shape: ExportFormat, system: str | None) -> dict[str, Any]:
    """One kept record as a row of `shape`, with `system` as its system turn (None: none)."""
    if shape == "jsonl":
        return record
    if shape == "alpaca":
        row = {
            "instruction": record["instruction"],
            "input": record.get("input") or "",
            "output": record["output"],
        }
        return row | {"system": system} if system else row
    user = compose(record["instruction"], record.get("input") or "")
    if shape == "dpo":
        return {"prompt": user, "chosen": record["output"], "rejected": record["rejected_output"]}
    if shape == "ifeval":
        columns = ifeval_columns(from_record(record["constraints"]))
        return {"key": record["id"], "prompt": user, **columns, "response": record["output"]}
    if shape == "sharegpt":
        turns = [{"from": "human", "value": user}, {"from": "gpt", "value": record["output"]}]
        system_turn = {"from": "system", "value": system}
        return {"conversations": [system_turn, *turns] if system else turns}
    turns = [{"role": "user", "content": user}, {"role": "assistant", "content": record["output"]}]
    system_turn = {"role": "system", "content": system}
    row: dict[str, Any] = {"messages": [system_turn, *turns] if system else turns}
    if shape == "rlvr":  # openai-chat's messages, and what open-instruct's verifier reads
        row["ground_truth"] = ground_truth(from_record(record["constraints"]))
        row["dataset"] = "ifeval"
    return row


def file_format_of(out: Path) -> FileFormat:
    """The file format a name asks for: .parquet, .json (one array), else JSON Lines."""
    suffix = out.suffix.lower()
    return "parquet" if suffix == ".parquet" else "json" if suffix == ".json" else "jsonl"


# -- writing ----------------------------------------------------------------------------------


def require_pyarrow() -> None:
    try:
        import pyarrow  # noqa: F401
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        raise UsageError(f"writing Parquet needs pyarrow: {PARQUET_EXTRA}") from None


# The type of a parsed JSON value -> its column; anything else (dict, list) is JSON text.
_SCALARS = {type(None): "null", bool: "bool", int: "int", float: "float", str: "str"}


def record_columns(scan: ExportScan) -> dict[str, str]:
    return typed_columns(scan.fields or {}, scan.field_types)


def typed_columns(fields: Iterable[str], field_types: Iterable[tuple[str, type]]) -> dict[str, str]:
    """Each top-level field of the records -> the one scalar type its values have (None
    aside), or "json" for fields of objects, lists or mixed types, written as JSON text."""
    kinds: dict[str, set[str]] = {key: set() for key in fields}
    for key, kind in field_types:
        kinds[key].add(_SCALARS.get(kind, "json"))
    columns = {}
    for key, seen in kinds.items():
        seen.discard("null")
        columns[key] = seen.pop() if len(seen) == 1 else "json" if seen else "str"
    return columns


def row_maker(
    shape: ExportFormat, system: str | None, columns: dict[str, str]
) -> Callable[[dict[str, Any]], dict[str, Any]]:
    as_text = [key for key, kind in columns.items() if kind == "json"]
    if not as_text:
        return lambda record: shape_record(record, shape, system)

    def record_row(record: dict[str, Any]) -> dict[str, Any]:
        for key in as_text:
            value = record.get(key)
            record[key] = None if value is None else orjson.dumps(value).decode()
        return record

    return record_row


def parquet_schema(shape: ExportFormat, system: str | None, columns: dict[str, str]) -> Any:
    import pyarrow as pa

    text = pa.string()
    if shape == "alpaca":
        names = ["instruction", "input", "output"] + (["system"] if system else [])
        return pa.schema([(name, text) for name in names])
    if shape == "sharegpt":
        return pa.schema(
            [("conversations", pa.list_(pa.struct([("from", text), ("value", text)])))]
        )
    if shape == "openai-chat":
        return pa.schema([("messages", pa.list_(pa.struct([("role", text), ("content", text)])))])
    if shape == "dpo":
        return pa.schema([(name, text) for name in ("prompt", "chosen", "rejected")])
    if shape == "rlvr":
        turns = pa.list_(pa.struct([("role", text), ("content", text)]))
        return pa.schema([("messages", turns), ("ground_truth", text), ("dataset", text)])
    types = {
        "bool": pa.bool_(),
        "int": pa.int64(),
        "float": pa.float64(),
        "str": text,
        "json": text,
    }
    return pa.schema([(key, types[kind]) for key, kind in columns.items()])


def write_file(
    path: Path, file_format: FileFormat, chunks: Iterable[list[dict[str, Any]]], schema: Any
) -> None:
    """Write rows, a chunk at a time: one Parquet row group, or lines of JSON, per chunk."""
    path.parent.mkdir(parents=True, exist_ok=True)

    def write(fp: BinaryIO) -> None:
        if file_format == "parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            with pq.ParquetWriter(fp, schema) as writer:
                for rows in chunks:
                    writer.write_batch(pa.RecordBatch.from_pylist(rows, schema=schema))
            return
        if file_format == "jsonl":
            for rows in chunks:
                fp.write(b"".join(orjson.dumps(row) + b"\n" for row in rows))
            return
        separator = b"[\n"
        for rows in chunks:
            for row in rows:
                fp.write(separator + orjson.dumps(row))
                separator = b",\n"
        fp.write(b"[\n]\n" if separator == b"[\n" else b"\n]\n")

    with open_fresh(path) as fp:
        write(fp)
