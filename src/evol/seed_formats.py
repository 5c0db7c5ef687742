"""The containers seed files come in: JSON Lines, a JSON array, CSV with a header, plain text
(one instruction a line), and Parquet (the Hugging Face Hub's storage format).

Each reader yields (line, row) pairs, a row being the parsed object or a `RowError` saying why
that row is no seed; a problem with the file as a whole is a `SeedFileError`. The extension
names the format, unless `--format` does; but content beats extension: when the first bytes
plainly are another format (JSON objects in a .txt, a Parquet file named .jsonl, one JSON
value a line in a .json), reading stops and says which `--format` to use.
"""

from __future__ import annotations

import codecs
import csv
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO, Literal

from evol.errors import SeedFileError

SeedFormat = Literal["jsonl", "json", "csv", "text", "parquet"]
MAX_ROW_BYTES = 1_000_000
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


def _refuse(path: Path, why: str) -> None:
    raise SeedFileError(str(path), None, why)


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
    if len(raw) > MAX_ROW_BYTES:
        return RowError(
            f"row is {len(raw) / 1e6:.1f} MB, over the {MAX_ROW_BYTES // 10**6} MB limit"
        )
    if b"\x00" in raw:
        return RowError("contains a NUL byte (is this a binary file?)")
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
    with open_binary(path) as fp:
        raw = fp.read()
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    if b"\x00" in raw:
        raise SeedFileError(
            str(path), raw[: raw.index(b"\x00")].count(b"\n") + 1, "contains a NUL byte"
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        raise SeedFileError(str(path), line, "not valid UTF-8") from None
    try:
        rows = _loads(text)
    except json.JSONDecodeError as error:
        if error.msg == "Extra data":  # one value, then another: JSON Lines named .json
            raise SeedFileError(
                str(path),
                error.lineno,
                "holds one JSON value per line: rename it .jsonl or use --format jsonl",
            ) from None
        line = error.lineno if error.pos else _failing_element_line(text)
        raise SeedFileError(str(path), line, f"invalid JSON: {error.msg}") from None
    if not isinstance(rows, list):
        raise SeedFileError(str(path), 1, f"expected a JSON array of seeds, got {json_type(rows)}")
    # json.loads keeps no positions; re-scan the top level to give each element its line.
    for line, row in zip(_element_lines(text), rows, strict=True):
        yield line, row


def _element_lines(text: str) -> Iterator[int]:
    decoder = json.JSONDecoder()
    position = text.index("[") + 1
    line = text.count("\n", 0, position) + 1
    while True:
        while position < len(text) and text[position] in " \t\r\n,":
            line += text[position] == "\n"
            position += 1
        if position >= len(text) or text[position] == "]":
            return
        yield line
        _, end = decoder.raw_decode(text, position)
        line += text.count("\n", position, end)
        position = end


def _failing_element_line(text: str) -> int:
    """The line of the array element that Python's parser refuses (1 if it is not one)."""
    lines = _element_lines(text)
    line = 1
    try:
        while True:
            line = next(lines)
    except StopIteration:
        return 1
    except (ValueError, RecursionError):
        return line


def _csv_rows(path: Path, instruction_fields: tuple[str, ...]) -> Iterator[tuple[int, Any]]:
    open_binary(path).close()
    # The csv module caps a field at 128 KiB by default (process-wide); a row may be 1 MB.
    csv.field_size_limit(max(csv.field_size_limit(), MAX_ROW_BYTES))
    with path.open(encoding="utf-8-sig", newline="") as fp:
        reader = csv.DictReader(fp)
        try:
            header = reader.fieldnames
            if not header:
                raise SeedFileError(str(path), 1, "empty CSV file: expected a header row")
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
                    yield line, row
        except UnicodeDecodeError:
            # The text layer decodes ahead of the csv reader, whose line count says nothing here.
            raise SeedFileError(
                str(path), _first_undecodable_line(path), "not valid UTF-8"
            ) from None
        except csv.Error as error:
            # DictReader's own line_num still names the row before the one that failed.
            raise SeedFileError(str(path), reader.reader.line_num, f"bad CSV: {error}") from None


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
                yield number, row
    except (OSError, ValueError) as error:  # pyarrow's ArrowInvalid is a ValueError
        raise SeedFileError(str(path), None, f"unreadable Parquet: {error}") from None


def _csv_width(row: dict[Any, Any]) -> int:
    extra = row.get(None) or []
    return sum(value is not None for key, value in row.items() if key is not None) + len(extra)
