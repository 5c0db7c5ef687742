"""The containers seed files come in: JSON Lines, a JSON array, CSV or TSV with a header, plain
text (one instruction a line), and Parquet (the Hugging Face Hub's storage format).

Each reader yields (line, row) pairs, a row being the parsed object or a `RowError` saying why
that row is no seed; a problem with the file as a whole is a `SeedFileError`. Every reader
streams (a JSON array too, an element at a time) and holds every row to the same two rules:
at most MAX_ROW_BYTES, and no NUL. The extension names the format, unless `--format` does.
One sniffer (`sniff`) says what the first 64 KiB look like: content that plainly is another
format (Parquet, JSON Lines, a JSON array) than the extension says is refused before reading,
and any reading error in a file that looks like another format than the one read ends with the
same hint (`format_hint`: "; it looks like CSV, use --format csv").
"""

from __future__ import annotations

import codecs
import csv
import json
import re
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any, BinaryIO, Literal, NoReturn

from evol.errors import SeedFileError

SeedFormat = Literal["jsonl", "json", "csv", "tsv", "text", "parquet"]
FORMAT_NAMES: dict[SeedFormat, str] = {
    "jsonl": "JSON Lines",
    "json": "a JSON array",
    "csv": "CSV",
    "tsv": "TSV",
    "text": "plain text",
    "parquet": "Parquet",
}
# Every container holds a row to these two rules: a row (a line, an array element, a CSV or
# Parquet row) of at most MAX_ROW_BYTES, and no NUL (the mark of a binary file).
MAX_ROW_BYTES = 1_000_000
NUL_BYTE = "contains a NUL byte (is this a binary file?)"
EXTENSIONS: dict[str, SeedFormat] = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".csv": "csv",
    ".tsv": "tsv",
    ".txt": "text",
    ".text": "text",
    ".parquet": "parquet",
}
_PARQUET_MAGIC = b"PAR1"
_SNIFF_BYTES = 1 << 16
_SNIFF_RECORDS = 6  # the lines (CSV records) of the head the sniffer looks at
# Content that is one of these is never read as another format: a JSON array read as lines of
# text, or JSON Lines as a one-column CSV, would give seeds that are no seeds.
_PLAIN_FORMATS = ("parquet", "jsonl", "json")
_SHOWN_COLUMNS, _SHOWN_COLUMN_CHARS = 8, 40
_BLOCK_BYTES = 1 << 16
# csv counts a field in characters; a field of up to 4 MB of characters is read whole so that a
# row over MAX_ROW_BYTES is a row error like any other, and only a longer one stops the file.
_CSV_FIELD_CHARS = 4 * MAX_ROW_BYTES
_NOT_WHITESPACE = re.compile(r"[^ \t\n\r]")
_DECODER = json.JSONDecoder()
# A JSON value that ends or fails this close to the end of the text read may go on past it.
_LOOKAHEAD = 64
_MORE_AFTER_THE_ARRAY = "more JSON after the array: a seed file holds one JSON array"


class RowError(ValueError):
    """A row that is not a valid seed; becomes a `SeedFileError` or a skipped row."""


@dataclass(frozen=True)
class ColumnNames:
    """The CSV/TSV columns a reader knows: any of `instruction` must be in the header, and a
    column naming one of `known` (in any case, with spaces around) is read under that name."""

    instruction: tuple[str, ...]
    known: tuple[str, ...] = ()


@dataclass(frozen=True)
class Sniffed:
    """The format a file's first bytes look like, and the line that shows it."""

    format: SeedFormat
    line: int


def detect_format(path: Path, requested: SeedFormat | None = None) -> SeedFormat:
    """The format named by `requested`, else by the file's extension, else JSON Lines."""
    if requested:
        return requested
    return EXTENSIONS.get(path.suffix.lower(), "jsonl")


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
        _refuse(path, f"this is not {FORMAT_NAMES[seed_format]}{_hint(seen)}", seen.line)


def rows(path: Path, seed_format: SeedFormat, columns: ColumnNames) -> Iterator[tuple[int, Any]]:
    """Yield (line, parsed row or RowError) pairs; trailing blank lines are ignored."""
    if seed_format in ("csv", "tsv"):
        yield from _table_rows(path, seed_format, columns)
    elif seed_format == "json":
        yield from _json_array_rows(path)
    elif seed_format == "parquet":
        yield from _parquet_rows(path)
    else:
        yield from _line_rows(path, seed_format)


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


def column_key(name: str) -> str:
    """How a column name is matched: in any case, spaces around it ignored."""
    return name.strip().lower()


def open_binary(path: Path) -> BinaryIO:
    if path.is_dir():
        raise SeedFileError(str(path), None, "is a directory, not a seed file")
    if path.exists() and not path.is_file():
        raise SeedFileError(
            str(path),
            None,
            "not a regular file (a pipe, a FIFO or a device): evol reads the seed file more "
            "than once; save it to a file first",
        )
    try:
        return path.open("rb")
    except FileNotFoundError:
        raise SeedFileError(str(path), None, "no such file") from None
    except OSError as error:
        raise SeedFileError(str(path), None, f"cannot be read: {error.strerror}") from None


def json_type(value: Any) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}
    if value is None:
        return "null"
    if isinstance(value, int | float) and not isinstance(value, bool):
        return "a number"
    return names.get(type(value), type(value).__name__)


def row_too_large(size: int) -> RowError | None:
    """The refusal of a row of `size` bytes, or None when it is within MAX_ROW_BYTES."""
    if size <= MAX_ROW_BYTES:
        return None
    return RowError(f"row is {size / 1e6:.1f} MB, over the {MAX_ROW_BYTES // 10**6} MB limit")


def _refuse(path: Path, why: str, line: int | None = None) -> NoReturn:
    raise SeedFileError(str(path), line, why)


def _is_object(line: str) -> bool:
    return _parses_as(line, dict)


def _parses_as(line: str, kind: type) -> bool:
    try:
        return isinstance(json.loads(line), kind)
    except (ValueError, RecursionError):
        return False


def _loads(text: str) -> Any:
    """json.loads, with what Python's parser refuses beyond JSON's grammar (nesting too deep,
    an integer over its 4,300-digit limit) as a plain JSON error."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        raise
    except RecursionError:
        raise json.JSONDecodeError("nested too deeply", text, 0) from None
    except ValueError:
        raise json.JSONDecodeError(
            f"a number longer than {sys.get_int_max_str_digits()} digits", text, 0
        ) from None


def _decoded_lines(path: Path) -> Iterator[tuple[int, str | RowError]]:
    with open_binary(path) as fp:
        pending_blank: list[int] = []
        for number, raw in enumerate(fp, start=1):
            if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            text = _decode(raw)
            if isinstance(text, str) and not text.strip():
                pending_blank.append(number)
                continue
            for blank in pending_blank:
                yield blank, RowError("blank line")
            pending_blank.clear()
            yield number, text


def _decode(raw: bytes) -> str | RowError:
    if too_large := row_too_large(len(raw)):
        return too_large
    if b"\x00" in raw:
        return RowError(NUL_BYTE)
    try:
        return raw.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError as error:
        return RowError(
            f"not valid UTF-8 (byte 0x{raw[error.start]:02x} at column {error.start + 1})"
        )


def _line_rows(path: Path, seed_format: SeedFormat) -> Iterator[tuple[int, Any]]:
    for number, text in _decoded_lines(path):
        if isinstance(text, RowError) or seed_format == "text":
            yield number, text
            continue
        try:
            yield number, _loads(text)
        except json.JSONDecodeError as error:
            column = f" (column {error.colno})" if error.pos else ""
            why = f"invalid JSON: {error.msg}{column}"
            if number == 1 and text.lstrip().startswith("["):
                # A JSON array read as lines, its bad lines skipped, would keep some elements.
                raise SeedFileError(str(path), number, why) from None
            yield number, RowError(why)


def _json_array_rows(path: Path) -> Iterator[tuple[int, Any]]:
    """The elements of a JSON array with their lines, one at a time (see `_JsonStream`)."""
    with open_binary(path) as fp:
        stream = _JsonStream(path, fp)
        if stream.skip_whitespace() != "[":
            _refuse_other_value(stream)
        stream.move_to(stream.position + 1)
        after = stream.skip_whitespace()
        while after != "]":
            line, row, size = stream.value()
            yield line, row_too_large(size) or row
            after = stream.skip_whitespace()
            if after == ",":
                stream.move_to(stream.position + 1)
                stream.skip_whitespace()  # then a value: json names a "]" here
            elif after != "]":
                stream.refuse("invalid JSON: Expecting ',' delimiter")
        stream.move_to(stream.position + 1)
        if stream.skip_whitespace():
            stream.refuse(_MORE_AFTER_THE_ARRAY)


def _refuse_other_value(stream: _JsonStream) -> NoReturn:
    """A .json file that holds something else than an array: say what it holds."""
    line, value, _size = stream.value()
    _refuse(stream.path, f"expected a JSON array of seeds, got {json_type(value)}", line)


class _JsonStream:
    """The text of a JSON file, read a block at a time, and the line of the read position.

    json's own decoder parses each value (`raw_decode`), so only the value being read and a
    block or two stay in memory; a value that goes on past the text read is parsed again
    once more is read, and each read is as large as the text held, so a long value is parsed
    a logarithmic number of times.
    """

    def __init__(self, path: Path, fp: BinaryIO) -> None:
        self.path, self.fp = path, fp
        self.decoder = codecs.getincrementaldecoder("utf-8-sig")()
        self.text, self.position, self.line = "", 0, 1
        self.lines_read = 0  # newlines in the bytes read so far
        self.at_end = False

    def read_more(self) -> bool:
        """Append the next block to the text; False at the end of the file."""
        if self.at_end:
            return False
        block = self.fp.read(max(_BLOCK_BYTES, len(self.text)))
        self.at_end = not block
        if (nul := block.find(b"\x00")) >= 0:
            _refuse(self.path, NUL_BYTE, self.lines_read + block.count(b"\n", 0, nul) + 1)
        try:
            self.text += self.decoder.decode(block, final=self.at_end)
        except UnicodeDecodeError as error:
            # error.object: bytes held back from the block before (never a newline), then this one.
            line = self.lines_read + error.object[: error.start].count(b"\n") + 1
            _refuse(self.path, "not valid UTF-8", line)
        self.lines_read += block.count(b"\n")
        return not self.at_end

    def move_to(self, position: int) -> None:
        self.line += self.text.count("\n", self.position, position)
        self.position = position

    def drop_read(self) -> None:
        """Forget the text before the read position, once it is a block or more (each drop
        copies the rest)."""
        if self.position >= _BLOCK_BYTES or self.position == len(self.text):
            self.text, self.position = self.text[self.position :], 0

    def skip_whitespace(self) -> str:
        """Move past whitespace; the next character, or "" at the end of the file."""
        while True:
            found = _NOT_WHITESPACE.search(self.text, self.position)
            self.move_to(found.start() if found else len(self.text))
            if self.position < len(self.text):
                return self.text[self.position]
            self.drop_read()
            if not self.read_more():
                return ""

    def value(self) -> tuple[int, Any, int]:
        """(line, value, its size in bytes) of the JSON value at the read position."""
        self.drop_read()
        while True:
            try:
                value, end = _raw_decode(self.text, self.position)
            except json.JSONDecodeError as error:
                if self._may_go_on(error) and self.read_more():
                    continue
                line = self.line + self.text.count("\n", self.position, error.pos)
                _refuse(self.path, f"invalid JSON: {error.msg}", line)
            if end >= len(self.text) - _LOOKAHEAD and self.read_more():
                continue  # a number cut by the block ("0." of "0.5") parses, but wrongly
            line, size = self.line, _utf8_size(self.text, self.position, end)
            self.move_to(end)
            return line, value, size

    def _may_go_on(self, error: json.JSONDecodeError) -> bool:
        """Whether the error may only mean that the value goes on past the text read."""
        near_the_end = error.pos >= len(self.text) - _LOOKAHEAD
        return near_the_end or error.msg.startswith("Unterminated string")

    def refuse(self, why: str) -> NoReturn:
        _refuse(self.path, why, self.line)


def _raw_decode(text: str, position: int) -> tuple[Any, int]:
    """json's raw_decode, with what Python's parser refuses beyond JSON's grammar (nesting too
    deep, an integer over its 4,300-digit limit) as a JSON error at the value's start."""
    try:
        return _DECODER.raw_decode(text, position)
    except json.JSONDecodeError:
        raise
    except RecursionError:
        raise json.JSONDecodeError("nested too deeply", text, position) from None
    except ValueError:
        raise json.JSONDecodeError(
            f"a number longer than {sys.get_int_max_str_digits()} digits", text, position
        ) from None


def _utf8_size(text: str, start: int, end: int) -> int:
    """Bytes of text[start:end] in UTF-8 (as the file holds it)."""
    return len(text[start:end].encode("utf-8"))


def _table_rows(
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
                    yield line, _value_rules(row) or row
        except UnicodeDecodeError:
            # The text layer decodes ahead of the csv reader, whose line count says nothing here.
            raise SeedFileError(
                str(path), _first_undecodable_line(path), "not valid UTF-8"
            ) from None
        except csv.Error as error:
            # DictReader's own line_num still names the row before the one that failed.
            line = reader.reader.line_num
            if "field larger than field limit" in str(error):
                _refuse(path, f"row is over the {MAX_ROW_BYTES // 10**6} MB limit", line)
            raise SeedFileError(str(path), line, f"bad {kind}: {error}") from None


def _header(path: Path, header: list[str] | None, kind: str, columns: ColumnNames) -> list[str]:
    """The header row, each column naming a known field spelled as evol spells it; refused
    when it names no instruction column, or one field twice."""
    if not header:
        _refuse(path, f"empty {kind} file: expected a header row", 1)
    if any("\x00" in name for name in header):  # the header is a row too
        _refuse(path, NUL_BYTE, 1)
    spelled = {column_key(name): name for name in (*columns.known, *columns.instruction)}
    names = [spelled.get(column_key(name), name) for name in header]
    if not set(columns.instruction) & set(names):
        accepted = ", ".join(repr(name) for name in columns.instruction)
        _refuse(
            path,
            f"the {kind} header has no instruction column: found {_shown_columns(header)}; "
            f"it must name one of {accepted} (in any case), or pick one with --instruction-field",
            1,
        )
    counts = Counter(names)
    if twice := next((name for name in spelled.values() if counts[name] > 1), None):
        _refuse(path, f"the {kind} header names the column {twice!r} twice", 1)
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


def _parquet_rows(path: Path) -> Iterator[tuple[int, Any]]:
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
                yield number, _value_rules(row) or row
    except (OSError, ValueError) as error:  # pyarrow's ArrowInvalid is a ValueError
        raise SeedFileError(str(path), None, f"unreadable Parquet: {error}") from None


def _value_rules(row: dict[str, Any]) -> RowError | None:
    """The row rules for a row read as values (CSV, Parquet): the UTF-8 size of its texts, and
    no NUL in them."""
    size, nul = 0, False
    for text in _texts(row):
        size += len(text.encode("utf-8", "surrogatepass"))
        nul = nul or "\x00" in text
    return row_too_large(size) or (RowError(NUL_BYTE) if nul else None)


def _texts(value: Any) -> Iterator[str]:
    """Every string among a row's values, nested lists and objects included."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _texts(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _texts(item)


def _csv_width(row: dict[Any, Any]) -> int:
    extra = row.get(None) or []
    return sum(value is not None for key, value in row.items() if key is not None) + len(extra)
