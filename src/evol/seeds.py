"""Reading seed files: JSON Lines, a JSON array, CSV with a header, or plain text.

Seeds are streamed row by row so that a large file never sits in memory. Every problem is a
`SeedFileError` naming the file and the line, unless `skip_invalid` is set, in which case the
row is counted in `SeedScan.skipped` and left out.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import orjson
from pydantic import BaseModel, Field

from evol.errors import SeedFileError
from evol.textstats import Lengths, summarize, word_count

SeedFormat = Literal["jsonl", "json", "csv", "text"]

INSTRUCTION_FIELDS = ("instruction", "prompt", "question")
MAX_ROW_BYTES = 1_000_000
_EXTENSIONS: dict[str, SeedFormat] = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".csv": "csv",
    ".txt": "text",
    ".text": "text",
}
# A child's id is its parent's id plus ".<round>", so a seed id such as "a.3" next to a seed "a"
# would collide with a's evolution in round 3.
_EVOLUTION_SUFFIX = re.compile(r"\.\d+$")


class Seed(BaseModel):
    """One seed instruction, as read from the file."""

    id: str
    line: int = Field(description="1-based line of the row in the seed file")
    instruction: str
    input: str = ""
    output: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)


@dataclass
class SeedScan:
    """What a full pass over a seed file found."""

    path: str
    format: SeedFormat
    count: int = 0
    skipped: list[tuple[int, str]] = field(default_factory=list)


@dataclass(frozen=True)
class SeedOptions:
    """How to read a seed file."""

    format: SeedFormat | None = None
    field: str | None = None
    skip_invalid: bool = False


class SeedReport(BaseModel):
    """What `evol validate` found in a seed file."""

    path: str
    format: SeedFormat
    seeds: int
    skipped: list[tuple[int, str]]
    with_input: int
    with_output: int
    metadata_fields: dict[str, int]
    instruction_words: Lengths | None


def describe_seeds(path: Path, options: SeedOptions = SeedOptions()) -> SeedReport:
    """Check every row of a seed file and summarise what it holds."""
    scan = SeedScan(path=str(path), format=detect_format(path, options.format))
    words: list[int] = []
    with_input = with_output = 0
    fields: Counter[str] = Counter()
    for seed in iter_seeds(path, options, scan):
        words.append(word_count(seed.instruction))
        with_input += bool(seed.input.strip())
        with_output += seed.output is not None
        fields.update(seed.metadata.keys())
    if not words:
        raise SeedFileError(
            str(path), None, "no valid seeds" if scan.skipped else "the file holds no seeds"
        )
    return SeedReport(
        path=str(path),
        format=scan.format,
        seeds=len(words),
        skipped=scan.skipped,
        with_input=with_input,
        with_output=with_output,
        metadata_fields=dict(fields.most_common()),
        instruction_words=summarize(words),
    )


def format_report(report: SeedReport) -> str:
    """The report as a few plain lines."""
    lines = [f"{report.path}: {report.seeds} valid seeds ({report.format})"]
    lines += [f"  skipped line {line}: {why}" for line, why in report.skipped]
    lines.append(f"  with input: {report.with_input}, with output: {report.with_output}")
    if report.metadata_fields:
        fields = ", ".join(f"{name} ({count})" for name, count in report.metadata_fields.items())
        lines.append(f"  metadata fields: {fields}")
    if words := report.instruction_words:
        lines.append(
            f"  instruction words: mean {words.mean:g}, p50 {words.p50:g}, p90 {words.p90:g}, max {words.max}"
        )
    return "\n".join(lines)


def detect_format(path: Path, requested: SeedFormat | None = None) -> SeedFormat:
    """The format named by `requested`, else by the file's extension, else JSON Lines."""
    if requested:
        return requested
    return _EXTENSIONS.get(path.suffix.lower(), "jsonl")


def file_digest(path: Path) -> str:
    """sha256 of the seed file, so that a resumed run can tell its seeds have not changed."""
    digest = hashlib.sha256()
    with _open_binary(path) as fp:
        for block in iter(lambda: fp.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def scan_seeds(path: Path, options: SeedOptions = SeedOptions()) -> SeedScan:
    """Read the whole file once to check every row, without keeping the rows."""
    scan = SeedScan(path=str(path), format=detect_format(path, options.format))
    for _ in iter_seeds(path, options, scan):
        scan.count += 1
    if scan.count == 0:
        why = "no valid seeds" if scan.skipped else "the file holds no seeds"
        raise SeedFileError(str(path), None, why)
    return scan


def iter_seeds(
    path: Path, options: SeedOptions = SeedOptions(), scan: SeedScan | None = None
) -> Iterator[Seed]:
    """Yield the seeds of `path` in file order; invalid rows raise or, if skipped, go to `scan`."""
    scan = scan or SeedScan(path=str(path), format=detect_format(path, options.format))
    seen_ids: set[str] = set()
    for line, row in _rows(path, scan.format, options.field):
        try:
            seed = _to_seed(row, line, options.field)
            _check_id(seed.id, seen_ids)
        except _RowError as error:
            if not options.skip_invalid:
                raise SeedFileError(str(path), line, str(error)) from None
            scan.skipped.append((line, str(error)))
            continue
        seen_ids.add(seed.id)
        yield seed


class _RowError(ValueError):
    """A row that is not a valid seed; becomes a `SeedFileError` or a skipped row."""


def _check_id(seed_id: str, seen_ids: set[str]) -> None:
    if seed_id in seen_ids:
        raise _RowError(f"duplicate id {seed_id!r}")
    stem = seed_id
    while _EVOLUTION_SUFFIX.search(stem):
        stem = _EVOLUTION_SUFFIX.sub("", stem)
        if stem in seen_ids:
            raise _RowError(f"id {seed_id!r} collides with the evolution ids of seed {stem!r}")


def _to_seed(row: Any, line: int, field_name: str | None) -> Seed:
    if isinstance(row, _RowError):
        raise row
    if isinstance(row, str):
        row = {"instruction": row}
    if not isinstance(row, dict):
        raise _RowError(f"expected an object with an instruction, got {_json_type(row)}")
    names = (field_name,) if field_name else INSTRUCTION_FIELDS
    key = next((name for name in names if name in row), None)
    if key is None:
        hint = "" if field_name else "; name the field with --field"
        raise _RowError(f"no {' / '.join(repr(n) for n in names)} field{hint}")
    instruction = row[key]
    if not isinstance(instruction, str):
        raise _RowError(f"{key!r} must be a string, got {_json_type(instruction)}")
    if not instruction.strip():
        raise _RowError(f"{key!r} is empty")
    extra = {k: v for k, v in row.items() if k not in (key, "id", "input", "output")}
    _check_encodable(row)
    return Seed(
        id=_seed_id(row.get("id"), line),
        line=line,
        instruction=instruction,
        input=_optional_text(row, "input") or "",
        output=_optional_text(row, "output"),
        metadata=extra,
    )


def _check_encodable(row: dict[str, Any]) -> None:
    """Reject a lone surrogate escape (\\ud800 in JSON): no UTF-8 file or request can carry it."""
    try:
        orjson.dumps(row)
    except TypeError as error:
        raise _RowError(f"cannot be written back as JSON ({error})") from None


def _seed_id(value: Any, line: int) -> str:
    if value is None:
        return f"s{line}"
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise _RowError(f"'id' must be a string or an integer, got {_json_type(value)}")
    text = str(value)
    if not text.strip():
        raise _RowError("'id' is empty")
    return text


def _optional_text(row: dict[str, Any], key: str) -> str | None:
    value = row.get(key)
    if value is None or isinstance(value, str):
        return value
    raise _RowError(f"{key!r} must be a string, got {_json_type(value)}")


def _json_type(value: Any) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}
    if value is None:
        return "null"
    if isinstance(value, int | float) and not isinstance(value, bool):
        return "a number"
    return names.get(type(value), type(value).__name__)


def _open_binary(path: Path):
    if path.is_dir():
        raise SeedFileError(str(path), None, "is a directory, not a seed file")
    try:
        return path.open("rb")
    except FileNotFoundError:
        raise SeedFileError(str(path), None, "no such file") from None
    except OSError as error:
        raise SeedFileError(str(path), None, f"cannot be read: {error.strerror}") from None


def _rows(path: Path, seed_format: SeedFormat, field_name: str | None) -> Iterator[tuple[int, Any]]:
    """Yield (line, parsed row or _RowError) pairs; trailing blank lines are ignored."""
    if seed_format == "csv":
        yield from _csv_rows(path, field_name)
    elif seed_format == "json":
        yield from _json_array_rows(path)
    else:
        yield from _line_rows(path, seed_format)


def _decoded_lines(path: Path) -> Iterator[tuple[int, str | _RowError]]:
    with _open_binary(path) as fp:
        pending_blank: list[int] = []
        for number, raw in enumerate(fp, start=1):
            if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            text = _decode(raw)
            if isinstance(text, str) and not text.strip():
                pending_blank.append(number)
                continue
            for blank in pending_blank:
                yield blank, _RowError("blank line")
            pending_blank.clear()
            yield number, text


def _decode(raw: bytes) -> str | _RowError:
    if len(raw) > MAX_ROW_BYTES:
        return _RowError(
            f"row is {len(raw) / 1e6:.1f} MB, over the {MAX_ROW_BYTES // 10**6} MB limit"
        )
    if b"\x00" in raw:
        return _RowError("contains a NUL byte (is this a binary file?)")
    try:
        return raw.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError as error:
        return _RowError(
            f"not valid UTF-8 (byte 0x{raw[error.start]:02x} at column {error.start + 1})"
        )


def _line_rows(path: Path, seed_format: SeedFormat) -> Iterator[tuple[int, Any]]:
    for number, text in _decoded_lines(path):
        if isinstance(text, _RowError) or seed_format == "text":
            yield number, text
            continue
        try:
            yield number, json.loads(text)
        except json.JSONDecodeError as error:
            if number == 1 and text.lstrip().startswith("["):
                raise SeedFileError(
                    str(path), number, "this is a JSON array, not JSON Lines: use --format json"
                ) from None
            yield number, _RowError(f"invalid JSON: {error.msg} (column {error.colno})")


def _json_array_rows(path: Path) -> Iterator[tuple[int, Any]]:
    with _open_binary(path) as fp:
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
        rows = json.loads(text)
    except json.JSONDecodeError as error:
        raise SeedFileError(str(path), error.lineno, f"invalid JSON: {error.msg}") from None
    if not isinstance(rows, list):
        raise SeedFileError(str(path), 1, f"expected a JSON array of seeds, got {_json_type(rows)}")
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


def _csv_rows(path: Path, field_name: str | None) -> Iterator[tuple[int, Any]]:
    _open_binary(path).close()
    with path.open(encoding="utf-8-sig", newline="") as fp:
        reader = csv.DictReader(fp)
        try:
            header = reader.fieldnames
            if not header:
                raise SeedFileError(str(path), 1, "empty CSV file: expected a header row")
            names = (field_name,) if field_name else INSTRUCTION_FIELDS
            if not set(names) & set(header):
                raise SeedFileError(
                    str(path),
                    1,
                    f"the CSV header has no {' / '.join(repr(n) for n in names)} column "
                    f"(found {', '.join(repr(h) for h in header[:5])}): the first row must "
                    "name the columns, or pick one with --field",
                )
            for row in reader:
                line = reader.line_num
                if any(value is None for value in row.values()) or None in row:
                    yield (
                        line,
                        _RowError(f"has {_csv_width(row)} columns, the header has {len(header)}"),
                    )
                elif not any((value or "").strip() for value in row.values()):
                    yield line, _RowError("blank row")
                else:
                    yield line, row
        except UnicodeDecodeError:
            raise SeedFileError(str(path), reader.line_num + 1, "not valid UTF-8") from None
        except csv.Error as error:
            raise SeedFileError(str(path), reader.line_num, f"bad CSV: {error}") from None


def _csv_width(row: dict[Any, Any]) -> int:
    extra = row.get(None) or []
    return sum(value is not None for key, value in row.items() if key is not None) + len(extra)
