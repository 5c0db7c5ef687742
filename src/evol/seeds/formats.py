"""The containers seed files come in: JSON Lines, a JSON array, CSV or TSV with a header, plain
text (one instruction a line), and Parquet (the Hugging Face Hub's storage format).

Each reader yields (line, row) pairs, a row being the parsed object or a `RowError` saying why
that row is no seed; a problem with the file as a whole is a `SeedFileError`. Every reader
streams (a JSON array too, an element at a time) and holds every row to the same two rules:
at most MAX_ROW_BYTES, and no NUL. The extension names the format, unless `--format` does.

Here: the line formats and the JSON array; CSV, TSV and Parquet are in `evol.seeds.tables`,
what every container shares in `evol.seeds.containers`, and the sniffer that says what a file
looks like in `evol.seeds.sniffing`.
"""

from __future__ import annotations

import codecs
import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO, NoReturn

from evol.errors import SeedFileError
from evol.seeds.containers import (
    NUL_BYTE,
    ColumnNames,
    RowError,
    SeedFormat,
    json_type,
    open_binary,
    refuse,
    row_too_large,
)
from evol.seeds.tables import parquet_rows, table_rows

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
_BLOCK_BYTES = 1 << 16
_NOT_WHITESPACE = re.compile(r"[^ \t\n\r]")
_DECODER = json.JSONDecoder()
# A JSON value that ends or fails this close to the end of the text read may go on past it.
_LOOKAHEAD = 64
_MORE_AFTER_THE_ARRAY = "more JSON after the array: a seed file holds one JSON array"


def detect_format(path: Path, requested: SeedFormat | None = None) -> SeedFormat:
    """The format named by `requested`, else by the file's extension, else JSON Lines."""
    if requested:
        return requested
    return EXTENSIONS.get(path.suffix.lower(), "jsonl")


def rows(path: Path, seed_format: SeedFormat, columns: ColumnNames) -> Iterator[tuple[int, Any]]:
    """Yield (line, parsed row or RowError) pairs; trailing blank lines are ignored."""
    if seed_format in ("csv", "tsv"):
        yield from table_rows(path, seed_format, columns)
    elif seed_format == "json":
        yield from _json_array_rows(path)
    elif seed_format == "parquet":
        yield from parquet_rows(path)
    else:
        yield from _line_rows(path, seed_format)


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
    refuse(stream.path, f"expected a JSON array of seeds, got {json_type(value)}", line)


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
            refuse(self.path, NUL_BYTE, self.lines_read + block.count(b"\n", 0, nul) + 1)
        try:
            self.text += self.decoder.decode(block, final=self.at_end)
        except UnicodeDecodeError as error:
            # error.object: bytes held back from the block before (never a newline), then this one.
            line = self.lines_read + error.object[: error.start].count(b"\n") + 1
            refuse(self.path, "not valid UTF-8", line)
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
                refuse(self.path, f"invalid JSON: {error.msg}", line)
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
        refuse(self.path, why, self.line)


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
