"""The first pass of `evol export`: where every exported record lies (file, offset, length)
and which lineage it is of, read without holding the records; each part's members."""

from __future__ import annotations

import random
from array import array
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import orjson
from pydantic import ValidationError

from evol.errors import RunDirError, UsageError
from evol.jsonl import link_refusal, open_to_read
from evol.method.constraints import from_record
from evol.rundir.layout import generation_files, refuse_run_state
from evol.rundir.record_files import read_records


def assign_lineages(
    sizes: dict[str, int], fractions: dict[str, float], seed: int
) -> dict[str, str]:
    """Deal whole lineages (root id -> its records) to the parts of a split: root id -> part.

    The lineages, sorted then shuffled by `seed`, go one at a time to the part furthest below
    its target (fraction x all records; the first part listed on a tie). A part gets a lineage
    only while it is below its target, so it ends less than one lineage above it.
    """
    total = sum(sizes.values())
    targets = {name: fraction * total for name, fraction in fractions.items()}
    filled = dict.fromkeys(fractions, 0)
    order = sorted(sizes)
    random.Random(seed).shuffle(order)
    assignment = {}
    for root in order:
        part = max(filled, key=lambda name: targets[name] - filled[name])
        filled[part] += sizes[root]
        assignment[root] = part
    return assignment


# -- the two passes ---------------------------------------------------------------------------


@dataclass
class ExportScan:
    """Where every exported record lies (file, offset, length) and which lineage it is of.

    Arrays of machine integers rather than the records: about 100 bytes a record in all.
    """

    files: list[BinaryIO] = field(default_factory=list)
    where: array = field(default_factory=lambda: array("l"))
    offsets: array = field(default_factory=lambda: array("q"))
    lengths: array = field(default_factory=lambda: array("q"))
    lineage: array = field(default_factory=lambda: array("l"))
    roots: dict[str, int] = field(default_factory=dict)  # root id -> lineage number
    sizes: list[int] = field(default_factory=list)  # records per lineage
    left_out: int = 0
    left_out_unconstrained: int = 0
    left_out_unpaired: int = 0
    # evol's records to Parquet: the top-level fields in order, and each (field, type) seen.
    fields: dict[str, None] | None = None
    field_types: set[tuple[str, type]] = field(default_factory=set)

    def add(self, file: int, offset: int, length: int, record: dict[str, Any]) -> None:
        number = self.roots.setdefault(record["root_id"], len(self.roots))
        if number == len(self.sizes):
            self.sizes.append(0)
        self.sizes[number] += 1
        self.where.append(file)
        self.offsets.append(offset)
        self.lengths.append(length)
        self.lineage.append(number)
        if self.fields is not None:
            self.field_types.update(zip(record, map(type, record.values()), strict=True))
            if not self.fields.keys() >= record.keys():
                self.fields.update(dict.fromkeys(record))

    def chunks(
        self,
        indices: Iterable[int],
        make_row: Callable[[dict[str, Any]], dict[str, Any]],
        size: int,
    ) -> Iterator[list[dict[str, Any]]]:
        """The rows of the records at `indices`, read again from disk, `size` at a time."""
        chunk: list[dict[str, Any]] = []
        for index in indices:
            fp = self.files[self.where[index]]
            fp.seek(self.offsets[index])
            chunk.append(make_row(orjson.loads(fp.read(self.lengths[index]))))
            if len(chunk) == size:
                yield chunk
                chunk = []
        if chunk:
            yield chunk


def scan_export(
    run_dir: Path,
    generations: set[int] | None,
    stack: ExitStack,
    *,
    fields: bool,
    constrained: bool = False,
    paired: bool = False,
) -> ExportScan:
    """First pass: check every kept record and note where the exported ones lie (with
    `constrained`, only those with verifiable constraints, which are checked here; with
    `paired`, only those with a failed answer beside the kept one)."""
    scan = ExportScan(fields={} if fields else None)
    for path in generation_files(run_dir):
        fp = stack.enter_context(open_to_read(path))
        scan.files.append(fp)
        for number, offset, length, record in read_records(fp, path):
            if generations is not None and record["generation"] not in generations:
                continue
            if record["output"] is None:
                scan.left_out += 1
                continue
            if constrained and not _has_constraints(record, path, number):
                scan.left_out_unconstrained += 1
                continue
            if paired and not isinstance(record.get("rejected_output"), str):
                scan.left_out_unpaired += 1
                continue
            scan.add(len(scan.files) - 1, offset, length, record)
    return scan


def _has_constraints(record: dict[str, Any], path: Path, number: int) -> bool:
    """Whether a record carries verifiable constraints; a damaged list is a RunDirError."""
    if not record.get("constraints"):
        return False
    try:
        from_record(record["constraints"])
    except ValueError as error:
        why = error.errors()[0]["msg"] if isinstance(error, ValidationError) else str(error)
        raise RunDirError(f"{path}:{number}: not an evol record (constraints: {why})") from None
    return True


def members_of(scan: ExportScan, fractions: dict[str, float], seed: int) -> dict[str | None, array]:
    """The record numbers of each part, in dataset order."""
    everything = array("l", range(len(scan.lineage)))
    if not fractions:
        return {None: everything}
    assignment = assign_lineages(dict(zip(scan.roots, scan.sizes, strict=True)), fractions, seed)
    names = list(fractions)
    part_of = [names.index(assignment[root]) for root in scan.roots]
    members: dict[str | None, array] = {name: array("l") for name in names}
    for index in everything:
        members[names[part_of[scan.lineage[index]]]].append(index)
    return members


def part_file(out: Path, name: str) -> Path:
    return out.with_name(f"{out.stem}.{name}{out.suffix}")


def check_target(target: Path) -> None:
    refuse_run_state(target, "--out")
    if target.is_dir():
        raise UsageError(f"{target}: is a directory; give --out a file name")
    if target.is_symlink():
        raise UsageError(link_refusal(target))
