"""Reading seed files: any container (evol.seeds.formats), any shape (evol.seeds.shapes).

Seeds are streamed row by row so that a large file never sits in memory. Every problem is a
`SeedFileError` naming the file and the line, unless `skip_invalid` is set, in which case the
row is counted in `SeedScan.skipped` and left out. `limit` reads only the first valid seeds;
`shard` then keeps the seeds whose id hashes to it (so the shards of a limited run cover the
same seeds as the unsharded run).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import orjson
from pydantic import BaseModel, ConfigDict, Field, model_validator

from evol.errors import SeedFileError, UsageError
from evol.method.textstats import Lengths, summarize, word_count
from evol.rundir.records import MAX_GENERATIONS
from evol.seeds.containers import ColumnNames, RowError, SeedFormat, json_type, open_binary
from evol.seeds.formats import detect_format, rows
from evol.seeds.shapes import FIELD_NAMES, INSTRUCTION_FIELDS, FieldPaths, extract
from evol.seeds.sniffing import check_content, with_format_hint

__all__ = [
    "Seed",
    "SeedFormat",
    "SeedOptions",
    "SeedScan",
    "Shard",
    "detect_format",
    "iter_seeds",
]

# A child's id is its parent's id plus ".<round>", so a seed id such as "a.3" next to a seed "a"
# would collide with a's evolution in round 3, whichever of the two comes first in the file.
# An id names a record in every file and message: longer than this, it is no id but data.
MAX_ID_CHARS = 1000


class Seed(BaseModel):
    """One seed instruction, as read from the file."""

    id: str
    line: int = Field(description="1-based line (row, for Parquet) in the seed file")
    instruction: str
    input: str = ""
    output: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    shape: str = Field("alpaca", description="how the row was read: alpaca, sharegpt, ...")


class Shard(BaseModel):
    """Shard `index` of `count`: the seeds whose id hashes to `index` (`evol run --shard i/N`).

    The hash is blake2b of the id, never Python's `hash()` (salted per process), so every
    machine of a cluster job puts a seed in the same shard.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    index: int = Field(ge=0)
    count: int = Field(ge=1)

    @model_validator(mode="after")
    def _index_below_count(self) -> Shard:
        if self.index >= self.count:
            raise ValueError(
                f"shard {self} does not exist: the index runs from 0 to {self.count - 1}"
            )
        return self

    @classmethod
    def parse(cls, text: str) -> Shard:
        """`"3/8"` -> Shard(index=3, count=8), with a one-line `UsageError` for anything else."""
        index, slash, count = text.strip().partition("/")
        if not slash or not index.strip().isdigit() or not count.strip().isdigit():
            raise UsageError(f"--shard {text!r}: give i/N with whole numbers, e.g. 0/8")
        index_, count_ = int(index), int(count)
        if count_ < 1:
            raise UsageError(f"--shard {text!r}: N must be at least 1")
        if index_ >= count_:
            raise UsageError(f"--shard {text!r}: i must be below N (0 to {count_ - 1})")
        return cls(index=index_, count=count_)

    def holds(self, seed_id: str) -> bool:
        """Whether the seed with this id belongs to this shard."""
        return shard_of(seed_id, self.count) == self.index

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def shard_of(seed_id: str, count: int) -> int:
    """The shard (0 to count - 1) a seed id hashes to, the same on every machine and run."""
    digest = hashlib.blake2b(seed_id.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % count


@dataclass
class SeedScan:
    """What a full pass over a seed file found."""

    path: str
    format: SeedFormat
    count: int = 0
    skipped: list[tuple[int, str]] = field(default_factory=list)
    other_shards: int = 0  # valid seeds left to the other shards
    shapes: Counter[str] = field(default_factory=Counter)


@dataclass(frozen=True)
class SeedOptions:
    """How to read a seed file; the fields are dotted paths (`instances.0.input`)."""

    format: SeedFormat | None = None
    instruction_field: str | None = None
    input_field: str | None = None
    output_field: str | None = None
    skip_invalid: bool = False
    limit: int | None = None
    shard: Shard | None = None

    @property
    def paths(self) -> FieldPaths:
        return FieldPaths(self.instruction_field, self.input_field, self.output_field)

    @property
    def columns(self) -> ColumnNames:
        """The CSV/TSV columns to look for: the instruction's, and every field a shape reads."""
        instruction = (self.instruction_field,) if self.instruction_field else INSTRUCTION_FIELDS
        given = [path.split(".")[0] for path in (self.input_field, self.output_field) if path]
        return ColumnNames(instruction, (*FIELD_NAMES, *given))


class SeedReport(BaseModel):
    """What `evol validate` found in a seed file."""

    path: str
    format: SeedFormat
    shapes: dict[str, int]
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
        _refuse_empty(path, scan, options)
    return SeedReport(
        path=str(path),
        format=scan.format,
        shapes=dict(scan.shapes.most_common()),
        seeds=len(words),
        skipped=scan.skipped,
        with_input=with_input,
        with_output=with_output,
        metadata_fields=dict(fields.most_common()),
        instruction_words=summarize(words),
    )


def format_report(report: SeedReport) -> str:
    """The report as a few plain lines."""
    shapes = ", ".join(f"{shape} ({count} rows)" for shape, count in report.shapes.items())
    lines = [f"{report.path}: {report.seeds} valid seeds ({report.format}); shape: {shapes}"]
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


def file_digest(path: Path) -> str:
    """sha256 of the seed file, so that a resumed run can tell its seeds have not changed."""
    digest = hashlib.sha256()
    with open_binary(path) as fp:
        for block in iter(lambda: fp.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def scan_seeds(path: Path, options: SeedOptions = SeedOptions()) -> SeedScan:
    """Read the whole file once to check every row, without keeping the rows."""
    scan = SeedScan(path=str(path), format=detect_format(path, options.format))
    for _ in iter_seeds(path, options, scan):
        scan.count += 1
    if scan.count == 0 and not scan.other_shards:  # an empty shard of a small file is fine
        _refuse_empty(path, scan, options)
    return scan


def _refuse_empty(path: Path, scan: SeedScan, options: SeedOptions) -> NoReturn:
    why = "no valid seeds" if scan.skipped else "the file holds no seeds"
    raise with_format_hint(SeedFileError(str(path), None, why), scan.format, options.columns)


def iter_seeds(
    path: Path, options: SeedOptions = SeedOptions(), scan: SeedScan | None = None
) -> Iterator[Seed]:
    """Yield the seeds of `path` in file order; invalid rows raise or, if skipped, go to `scan`.
    An error in a file that looks like another format says which (`with_format_hint`)."""
    scan = scan or SeedScan(path=str(path), format=detect_format(path, options.format))
    check_content(path, scan.format, options.format, options.columns)
    try:
        yield from _read_seeds(path, options, scan)
    except SeedFileError as error:
        raise with_format_hint(error, scan.format, options.columns) from None


def _read_seeds(path: Path, options: SeedOptions, scan: SeedScan) -> Iterator[Seed]:
    ids = _Ids()
    valid = 0
    previous_line = on_line = 0
    for line, row in rows(path, scan.format, options.columns):
        if options.limit is not None and valid >= options.limit:
            return
        # A JSON array may hold several rows on one line (json.dump writes it all on one).
        on_line = on_line + 1 if line == previous_line else 1
        previous_line = line
        try:
            seed = _to_seed(row, line, on_line, options)
            ids.claim(seed.id)
        except RowError as error:
            if not options.skip_invalid:
                raise SeedFileError(str(path), line, str(error)) from None
            scan.skipped.append((line, str(error)))
            continue
        valid += 1  # every shard reads and checks every row, so all see the same seeds
        if options.shard is not None and not options.shard.holds(seed.id):
            scan.other_shards += 1
            continue
        scan.shapes[seed.shape] += 1
        yield seed


class _Ids:
    """The ids seen so far, and every id they would share a lineage with."""

    def __init__(self) -> None:
        self.seen: set[str] = set()
        self.stems: set[str] = set()  # the ids a seen id would be a descendant of

    def claim(self, seed_id: str) -> None:
        if seed_id in self.seen:
            raise RowError(f"duplicate id {seed_id!r}")
        if seed_id in self.stems:  # an earlier seed's id looks like one of this seed's evolutions
            earlier = next(seen for seen in self.seen if seed_id in _stems(seen))
            raise RowError(
                f"id {seed_id!r} collides with the evolution ids of seed {seed_id!r}: an earlier "
                f"seed has the id {earlier!r}"
            )
        for stem in _stems(seed_id):
            if stem in self.seen:
                raise RowError(f"id {seed_id!r} collides with the evolution ids of seed {stem!r}")
        self.seen.add(seed_id)
        self.stems.update(_stems(seed_id))


def _stems(seed_id: str) -> list[str]:
    """The ids of which `seed_id` looks like an evolution: "a.1.2" -> "a.1", "a". No
    evolution has more than MAX_GENERATIONS suffixes, so no more stems are looked for (an id
    of ".1" repeated would otherwise cost time and memory quadratic in its length)."""
    stems, stem = [], seed_id
    while len(stems) < MAX_GENERATIONS:
        head, dot, tail = stem.rpartition(".")
        if not dot or not tail.isdecimal():  # isdecimal: what the regex's \d meant
            return stems
        stems.append(stem := head)
    return stems


def _to_seed(row: Any, line: int, on_line: int, options: SeedOptions) -> Seed:
    if isinstance(row, RowError):
        raise row
    found = extract(row, options.paths)
    instruction = found.instruction
    if not isinstance(instruction, str):
        raise RowError(f"{found.where!r} must be a string, got {json_type(instruction)}")
    if not instruction.strip():
        raise RowError(f"{found.where!r} is empty")
    if isinstance(row, dict):
        _check_encodable(row)
    return Seed(
        id=_seed_id(row.get("id") if isinstance(row, dict) else None, line, on_line),
        line=line,
        instruction=instruction,
        input=_text(found.input, "'input'") or "",
        output=_text(found.output, "'output'"),
        metadata=found.metadata,
        shape=found.shape,
    )


def _check_encodable(row: dict[str, Any]) -> None:
    """Reject a lone surrogate escape (\\ud800 in JSON): no UTF-8 file or request can carry it."""
    try:
        orjson.dumps(row)
    except TypeError as error:
        raise RowError(f"cannot be written back as JSON ({error})") from None


def _seed_id(value: Any, line: int, on_line: int) -> str:
    """The row's own id, else `s<line>`, and `s<line>-<n>` for the n-th row of a shared line."""
    if value is None:
        return f"s{line}" if on_line == 1 else f"s{line}-{on_line}"
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise RowError(f"'id' must be a string or an integer, got {json_type(value)}")
    text = str(value)
    if not text.strip():
        raise RowError("'id' is empty")
    if len(text) > MAX_ID_CHARS:
        raise RowError(f"'id' is {len(text):,} characters long, over the {MAX_ID_CHARS:,} limit")
    return text


def _text(value: Any, name: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise RowError(f"{name} must be a string, got {json_type(value)}")
