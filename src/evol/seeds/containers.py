"""What every seed container shares: the formats and their names, the two rules every row is
held to (at most MAX_ROW_BYTES, no NUL), the error of one row, the CSV/TSV columns known, and
the file opened."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
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


class RowError(ValueError):
    """A row that is not a valid seed; becomes a `SeedFileError` or a skipped row."""


@dataclass(frozen=True)
class ColumnNames:
    """The CSV/TSV columns a reader knows: any of `instruction` must be in the header, and a
    column naming one of `known` (in any case, with spaces around) is read under that name."""

    instruction: tuple[str, ...]
    known: tuple[str, ...] = ()


def column_key(name: str) -> str:
    """How a column name is matched: in any case, spaces around it ignored."""
    return name.strip().lower()


def open_binary(path: Path) -> BinaryIO:
    """The seed file opened to read bytes; a directory, a pipe or a missing file refused."""
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
    """What JSON calls the type of `value` ("an object", "null"), as errors name it."""
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


def refuse(path: Path, why: str, line: int | None = None) -> NoReturn:
    """Refuse the file as a whole: a `SeedFileError` at `line`."""
    raise SeedFileError(str(path), line, why)


def value_rules(row: dict[str, Any]) -> RowError | None:
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
