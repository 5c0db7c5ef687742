"""What a seed file's first 64 KiB look like.

One sniffer (`sniff`) says it: content that plainly is another format (Parquet, JSON Lines, a
JSON array) than the extension says is refused before reading, and any reading error in a file
that looks like another format than the one read ends with the same hint (`format_hint`:
"; it looks like CSV, use --format csv").
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

from evol.errors import SeedFileError
from evol.seeds.containers import FORMAT_NAMES, ColumnNames, SeedFormat, column_key, refuse

_PARQUET_MAGIC = b"PAR1"
_SNIFF_BYTES = 1 << 16
_SNIFF_RECORDS = 6  # the lines (CSV records) of the head the sniffer looks at
# Content that is one of these is never read as another format: a JSON array read as lines of
# text, or JSON Lines as a one-column CSV, would give seeds that are no seeds.
_PLAIN_FORMATS = ("parquet", "jsonl", "json")


@dataclass(frozen=True)
class Sniffed:
    """The format a file's first bytes look like, and the line that shows it."""

    format: SeedFormat
    line: int


def sniff(path: Path, instruction_columns: tuple[str, ...] = ()) -> Sniffed | None:
    """What the first 64 KiB of the file look like; None when they say nothing sure (a file
    that is empty, unreadable or binary, a first line that no format explains). Never reads
    further: a seed file may be GBs. `instruction_columns` make a one-column CSV header."""
    if not path.is_file():  # a pipe read here would be empty for the reader; a FIFO would hang
        return None
    try:
        with path.open("rb") as fp:
            head = fp.read(_SNIFF_BYTES)
            cut = bool(fp.read(1))
    except OSError:
        return None
    return sniff_head(head, cut, instruction_columns)


def sniff_head(head: bytes, cut: bool, instruction_columns: tuple[str, ...] = ()) -> Sniffed | None:
    """`sniff` on the bytes read; `cut`: the file goes on past them."""
    if head.startswith(_PARQUET_MAGIC):
        return Sniffed("parquet", 1)
    if b"\x00" in head:
        return None
    pieces = head.removeprefix(b"\xef\xbb\xbf").decode("utf-8", "replace").split("\n")
    # When the file goes on, the last piece is a line cut short: only its start is evidence.
    lines, cut_line = (pieces[:-1], pieces[-1]) if cut else (pieces, "")
    first = next((number for number, line in enumerate(lines) if line.strip()), None)
    if first is None:
        return _sniff_cut_line(cut_line) if cut_line.strip() else None
    records = lines[first:]
    starts = [line.lstrip()[:1] for line in islice(filter(str.strip, records), _SNIFF_RECORDS)]
    if starts[0] in ("{", "["):
        return _sniff_json(records, first + 1)
    if table := _sniff_table(records, instruction_columns):
        return Sniffed(table, first + 1)
    if "{" in starts or "[" in starts:
        return None  # text before JSON: a comment, a title?
    return Sniffed("text", first + 1)


def format_hint(path: Path, seed_format: SeedFormat, instruction_columns: tuple[str, ...]) -> str:
    """`; it looks like CSV, use --format csv` when the file looks like another format than
    `seed_format`, else "": what every reading error of a mismatched file ends with."""
    seen = sniff(path, instruction_columns)
    return _hint(seen) if seen and seen.format != seed_format else ""


def with_format_hint(
    error: SeedFileError, seed_format: SeedFormat, columns: ColumnNames
) -> SeedFileError:
    """The error, with `format_hint`'s hint when the file looks like another format."""
    hint = format_hint(Path(error.path), seed_format, columns.instruction)
    return SeedFileError(error.path, error.line, error.why + hint) if hint else error


def check_content(
    path: Path, seed_format: SeedFormat, requested: SeedFormat | None, columns: ColumnNames
) -> None:
    """Refuse a file whose first bytes plainly are another format than its extension names."""
    if requested is not None:
        return  # an explicit --format is trusted
    seen = sniff(path, columns.instruction)
    if seen is None or seen.format == seed_format:
        return
    if seen.format in _PLAIN_FORMATS or seed_format == "parquet":
        refuse(path, f"this is not {FORMAT_NAMES[seed_format]}{_hint(seen)}", seen.line)


def _hint(seen: Sniffed) -> str:
    return f"; it looks like {FORMAT_NAMES[seen.format]}, use --format {seen.format}"


def _sniff_cut_line(start: str) -> Sniffed | None:
    """A first line longer than the head: JSON by how it starts, or nothing sure."""
    start = start.lstrip()
    if start.startswith('{"'):
        return Sniffed("jsonl", 1)
    if start[:1] == "[" and start[1:].lstrip()[:2] in ('{"', "{", ""):
        return Sniffed("json", 1)
    return None


def _sniff_json(records: list[str], line: int) -> Sniffed | None:
    """JSON Lines or a JSON array, when the first line starts as JSON does."""
    first = records[0].strip()
    later = [record.strip() for record in islice(filter(str.strip, records[1:]), _SNIFF_RECORDS)]
    if first.startswith("{"):
        return Sniffed("jsonl", line) if any(map(_is_object, [first, *later])) else None
    if _parses_as(first, list):  # a one-line array, or JSON Lines of arrays
        more = any(record[:1] in ("{", "[") for record in later)
        return Sniffed("jsonl" if more else "json", line)
    if first[1:].lstrip()[:2] in ('{"', "{", ""):  # "[", "[{", '[{"a": ...'
        return Sniffed("json", line)
    return None


def _sniff_table(records: list[str], instruction_columns: tuple[str, ...]) -> SeedFormat | None:
    """CSV or TSV: a header naming an instruction column, or two columns or more in every
    record read (a quoted field may span lines)."""
    names = {column_key(name) for name in instruction_columns}
    found: list[tuple[int, SeedFormat]] = []
    for seed_format, delimiter in (("csv", ","), ("tsv", "\t")):
        try:
            table = list(
                islice(filter(None, csv.reader(records, delimiter=delimiter)), _SNIFF_RECORDS)
            )
        except csv.Error:
            continue
        header = table[0] if table else []
        named = any(column_key(name) in names for name in header)
        even = len(table) > 1 and all(len(record) == len(header) for record in table)
        if (named and (len(header) > 1 or seed_format == "csv")) or (even and len(header) > 1):
            found.append((len(header), seed_format))
    return max(found, key=lambda each: each[0])[1] if found else None  # a tie: CSV


def _is_object(line: str) -> bool:
    return _parses_as(line, dict)


def _parses_as(line: str, kind: type) -> bool:
    try:
        return isinstance(json.loads(line), kind)
    except (ValueError, RecursionError):
        return False
