"""The containers seed files come in: JSON Lines, a JSON array, CSV with a header, plain text
(one instruction a line), and Parquet (the Hugging Face Hub's storage format).

Each reader yields (line, row) pairs, a row being the parsed object or a `RowError` saying why
that row is no seed; a problem with the file as a whole is a `SeedFileError`. Every reader
streams (a JSON array too, an element at a time) and holds every row to the same two rules:
at most MAX_ROW_BYTES, and no NUL. The extension
names the format, unless `--format` does; but content beats extension: when the first bytes
plainly are another format (JSON objects in a .txt, a Parquet file named .jsonl, one JSON
value a line in a .json), reading stops and says which `--format` to use.
"""

from __future__ import annotations

import codecs
import csv
import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO, Literal, NoReturn

from evol.errors import SeedFileError

SeedFormat = Literal["jsonl", "json", "csv", "text", "parquet"]
# Every container holds a row to these two rules: a row (a line, an array element, a CSV or
# Parquet row) of at most MAX_ROW_BYTES, and no NUL (the mark of a binary file).
MAX_ROW_BYTES = 1_000_000
NUL_BYTE = "contains a NUL byte (is this a binary file?)"
EXTENSIONS: dict[str, SeedFormat] = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".csv": "csv",
    ".txt": "text",
    ".text": "text",
    ".parquet": "parquet",
}
_PARQUET_MAGIC = b"PAR1"
_SNIFF_BYTES = 1 << 16
_BLOCK_BYTES = 1 << 16
# csv counts a field in characters; a field of up to 4 MB of characters is read whole so that a
# row over MAX_ROW_BYTES is a row error like any other, and only a longer one stops the file.
_CSV_FIELD_CHARS = 4 * MAX_ROW_BYTES
_NOT_WHITESPACE = re.compile(r"[^ \t\n\r]")
_DECODER = json.JSONDecoder()
# A JSON value that ends or fails this close to the end of the text read may go on past it.
_LOOKAHEAD = 64
_ONE_VALUE_A_LINE = "holds one JSON value per line: rename it .jsonl or use --format jsonl"


class RowError(ValueError):
    """A row that is not a valid seed; becomes a `SeedFileError` or a skipped row."""


def detect_format(path: Path, requested: SeedFormat | None = None) -> SeedFormat:
    """The format named by `requested`, else by the file's extension, else JSON Lines."""
    if requested:
        return requested
    return EXTENSIONS.get(path.suffix.lower(), "jsonl")


def check_content(path: Path, seed_format: SeedFormat, requested: SeedFormat | None) -> None:
    """Refuse a file whose first bytes plainly are not the format its extension names."""
    if requested is not None:
        return  # an explicit --format is trusted
    with open_binary(path) as fp:
        head = fp.read(_SNIFF_BYTES)
    is_parquet = head.startswith(_PARQUET_MAGIC)
    if is_parquet and seed_format != "parquet":
        _refuse(path, "this is a Parquet file: name it .parquet or use --format parquet")
    if seed_format == "parquet" and not is_parquet and head.strip():
        kind = "JSON Lines" if head.lstrip().startswith(b"{") else "text"
        _refuse(path, f"this is not a Parquet file (it looks like {kind}): use --format")
    first = next((line for line in head.splitlines() if line.strip()), b"").strip()
    looks_like_object = first.startswith(b"{") and _parses_as_object(first)
    if seed_format in ("text", "csv") and looks_like_object:
        _refuse(path, "each line is a JSON object: this looks like JSON Lines, use --format jsonl")


def rows(
    path: Path, seed_format: SeedFormat, instruction_fields: tuple[str, ...]
) -> Iterator[tuple[int, Any]]:
    """Yield (line, parsed row or RowError) pairs; trailing blank lines are ignored."""
    if seed_format == "csv":
        yield from _csv_rows(path, instruction_fields)
    elif seed_format == "json":
        yield from _json_array_rows(path)
    elif seed_format == "parquet":
        yield from _parquet_rows(path)
    else:
        yield from _line_rows(path, seed_format)


def open_binary(path: Path) -> BinaryIO:
    if path.is_dir():
        raise SeedFileError(str(path), None, "is a directory, not a seed file")
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


def _parses_as_object(line: bytes) -> bool:
    try:
        return isinstance(json.loads(line), dict)
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
            if number == 1 and text.lstrip().startswith("["):
                raise SeedFileError(
                    str(path), number, "this is a JSON array, not JSON Lines: use --format json"
                ) from None
            column = f" (column {error.colno})" if error.pos else ""
            yield number, RowError(f"invalid JSON: {error.msg}{column}")


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
            stream.refuse(_ONE_VALUE_A_LINE)


def _refuse_other_value(stream: _JsonStream) -> NoReturn:
    """A .json file that holds something else than one array: say what it holds."""
    _line, value, _size = stream.value()
    if stream.skip_whitespace():
        stream.refuse(_ONE_VALUE_A_LINE)
    _refuse(stream.path, f"expected a JSON array of seeds, got {json_type(value)}", 1)


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


def _csv_rows(path: Path, instruction_fields: tuple[str, ...]) -> Iterator[tuple[int, Any]]:
    open_binary(path).close()
    # The csv module caps a field at 128 KiB by default (process-wide).
    csv.field_size_limit(max(csv.field_size_limit(), _CSV_FIELD_CHARS))
    with path.open(encoding="utf-8-sig", newline="") as fp:
        reader = csv.DictReader(fp)
        try:
            header = reader.fieldnames
            if not header:
                raise SeedFileError(str(path), 1, "empty CSV file: expected a header row")
            if any("\x00" in name for name in header):  # the header is a row too
                raise SeedFileError(str(path), 1, NUL_BYTE)
            if not set(instruction_fields) & set(header):
                raise SeedFileError(
                    str(path),
                    1,
                    f"the CSV header has no {' / '.join(repr(n) for n in instruction_fields)} "
                    f"column (found {', '.join(repr(h) for h in header[:5])}): the first row "
                    "must name the columns, or pick one with --instruction-field",
                )
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
            raise SeedFileError(str(path), line, f"bad CSV: {error}") from None


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
