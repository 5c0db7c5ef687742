"""CSV, TSV and Parquet seed files: rows read as values."""

from __future__ import annotations

import codecs
import csv
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from evol.errors import SeedFileError
from evol.seeds.containers import (
    MAX_ROW_BYTES,
    NUL_BYTE,
    ColumnNames,
    RowError,
    SeedFormat,
    column_key,
    open_binary,
    refuse,
    value_rules,
)

_SHOWN_COLUMNS, _SHOWN_COLUMN_CHARS = 8, 40
_BLOCK_BYTES = 1 << 16  # read at a time, looking for the first byte that is not UTF-8
# csv counts a field in characters; a field of up to 4 MB of characters is read whole so that a
# row over MAX_ROW_BYTES is a row error like any other, and only a longer one stops the file.
_CSV_FIELD_CHARS = 4 * MAX_ROW_BYTES


def table_rows(
    path: Path, seed_format: SeedFormat, columns: ColumnNames
) -> Iterator[tuple[int, Any]]:
    """The rows of a CSV or TSV file (a TSV read by the csv module with tabs between fields)."""
    open_binary(path).close()
    # The csv module caps a field at 128 KiB by default (process-wide).
    csv.field_size_limit(max(csv.field_size_limit(), _CSV_FIELD_CHARS))
    kind = seed_format.upper()
    with path.open(encoding="utf-8-sig", newline="") as fp:
        reader = csv.DictReader(fp, delimiter="\t" if seed_format == "tsv" else ",")
        try:
            reader.fieldnames = _header(path, reader.fieldnames, kind, columns)
            header = reader.fieldnames
            for row in reader:
                line = reader.line_num
                if any(value is None for value in row.values()) or None in row:
                    yield (
                        line,
                        RowError(f"has {_csv_width(row)} columns, the header has {len(header)}"),
                    )
                elif not any((value or "").strip() for value in row.values()):
                    yield line, RowError("blank row")
                else:
                    yield line, value_rules(row) or row
        except UnicodeDecodeError:
            # The text layer decodes ahead of the csv reader, whose line count says nothing here.
            raise SeedFileError(
                str(path), _first_undecodable_line(path), "not valid UTF-8"
            ) from None
        except csv.Error as error:
            # DictReader's own line_num still names the row before the one that failed.
            line = reader.reader.line_num
            if "field larger than field limit" in str(error):
                refuse(path, f"row is over the {MAX_ROW_BYTES // 10**6} MB limit", line)
            raise SeedFileError(str(path), line, f"bad {kind}: {error}") from None


def _header(path: Path, header: list[str] | None, kind: str, columns: ColumnNames) -> list[str]:
    """The header row, each column naming a known field spelled as evol spells it; refused
    when it names no instruction column, or one field twice."""
    if not header:
        refuse(path, f"empty {kind} file: expected a header row", 1)
    if any("\x00" in name for name in header):  # the header is a row too
        refuse(path, NUL_BYTE, 1)
    spelled = {column_key(name): name for name in (*columns.known, *columns.instruction)}
    names = [spelled.get(column_key(name), name) for name in header]
    if not set(columns.instruction) & set(names):
        accepted = ", ".join(repr(name) for name in columns.instruction)
        refuse(
            path,
            f"the {kind} header has no instruction column: found {_shown_columns(header)}; "
            f"it must name one of {accepted} (in any case), or pick one with --instruction-field",
            1,
        )
    counts = Counter(names)
    if twice := next((name for name in spelled.values() if counts[name] > 1), None):
        refuse(path, f"the {kind} header names the column {twice!r} twice", 1)
    return names


def _shown_columns(header: list[str]) -> str:
    """The first columns of a header, each cut short, quoted with its controls escaped."""
    shown = [
        repr(name if len(name) <= _SHOWN_COLUMN_CHARS else name[:_SHOWN_COLUMN_CHARS] + "...")
        for name in header[:_SHOWN_COLUMNS]
    ]
    more = len(header) - _SHOWN_COLUMNS
    return ", ".join(shown) + (f" and {more} more" if more > 0 else "")


def _first_undecodable_line(path: Path) -> int:
    """The line of the file's first byte that is not UTF-8, read a block at a time."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    line = 1
    with open_binary(path) as fp:
        for block in iter(lambda: fp.read(_BLOCK_BYTES), b""):
            try:
                decoder.decode(block)
            except UnicodeDecodeError as error:
                # error.object: the bytes the decoder held back from the block before (never a
                # newline), then this block.
                return line + error.object[: error.start].count(b"\n")
            line += block.count(b"\n")
    return line  # a character cut short by the end of the file


def parquet_rows(path: Path) -> Iterator[tuple[int, Any]]:
    """Rows of a Parquet file, a record batch at a time; `line` is the 1-based row number."""
    try:
        import pyarrow.parquet as parquet
    except ImportError:
        raise SeedFileError(
            str(path), None, "reading Parquet needs pyarrow: pip install 'evol[parquet]'"
        ) from None
    open_binary(path).close()
    try:
        # pre_buffer=False: recent pyarrow pre-buffers whole row groups by default.
        table = parquet.ParquetFile(path, pre_buffer=False)
        number = 0
        for batch in table.iter_batches(batch_size=1024):
            for row in batch.to_pylist():
                number += 1
                yield number, value_rules(row) or row
    except (OSError, ValueError) as error:  # pyarrow's ArrowInvalid is a ValueError
        raise SeedFileError(str(path), None, f"unreadable Parquet: {error}") from None


def _csv_width(row: dict[Any, Any]) -> int:
    extra = row.get(None) or []
    return sum(value is not None for key, value in row.items() if key is not None) + len(extra)
