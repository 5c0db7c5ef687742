"""`evol merge`: the run directories of `evol run --shard i/N` joined into one run.

Every input must be a complete run of the same options (the resume fingerprint, apart from
`--shard`, and the same `--generations` and `--limit`), each a different shard of the same N,
and all N of them unless `partial`. The record files are concatenated, then put in seed-file
order by the store's own sort, so the merged gen_k.jsonl, eliminated.jsonl and dataset.jsonl
are the files an unsharded run with the same `--seed` writes (a lineage evolves the same in a
shard as in one run: operations depend only on the seed, the id and the round).

The exception is `--dedup`: a shard compares only with its own seeds' instructions. The merge
looks for the kept evolutions that repeat an instruction of another shard, by the run's own
rule, and lists them in run.json (`shards.cross_shard_duplicates`); it keeps them, since the
unsharded run would have evolved that lineage again from the parent, which no merge can do.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from evol.config import RunConfig
from evol.errors import MergeError, RunDirError, SeedFileError
from evol.jsonl import atomic_write
from evol.jsonl import open_to_read as open_record_file
from evol.rundir.counts import RunCounts
from evol.rundir.fingerprint import Fingerprint
from evol.rundir.layout import ELIMINATED, MANIFEST, output_files, output_sizes
from evol.rundir.manifest import RunFacts, build_manifest, load_manifest, write_manifest
from evol.rundir.record_files import iter_records, parse_record
from evol.rundir.records import EliminatedRecord, Record
from evol.rundir.runjson import (
    BackendPart,
    CountsPart,
    CrossShardDuplicate,
    Manifest,
    RunSummary,
    SeedsPart,
    ShardRun,
    ShardsPart,
)
from evol.rundir.store import RunStore
from evol.seeds import SeedScan, Shard, file_digest, iter_seeds

# Fingerprint fields that may differ between shards of one run.
_PER_SHARD = {"shard"}
# What the merged run's fingerprint records instead of a shard: `evol run` refuses to resume
# it (resume the shards and merge again).
MERGED = "merged"


class MergeConfig(BaseModel):
    """What `evol merge` needs."""

    model_config = ConfigDict(extra="forbid")

    run_dirs: list[Path] = Field(min_length=1, description="the shards' run directories")
    out: Path
    partial: bool = Field(False, description="merge even if some of the N shards are missing")
    seeds: Path | None = Field(
        None, description="the seed file, where it is not at the path the shards recorded"
    )
    overwrite: bool = False


class MergeSummary(BaseModel):
    """What `evol merge` wrote, printed by `--json`."""

    out: str
    shards: list[str] = Field(description="i/N of each shard merged, in order")
    missing: list[str] = Field(description="i/N of each shard left out (with --partial)")
    seeds: int
    kept: int
    eliminated: int
    dataset: str
    dataset_records: int
    cross_shard_duplicates: list[CrossShardDuplicate]


@dataclass
class _Shard:
    """A complete shard's run directory, with the parts of its run.json a merge reads."""

    path: Path
    manifest: Manifest
    config: RunConfig
    shard: Shard
    fingerprint: Fingerprint
    backend: BackendPart
    seeds: SeedsPart
    counts: CountsPart
    summary: RunSummary


def merge_runs(config: MergeConfig) -> MergeSummary:
    """Check that `config.run_dirs` are the shards of one run, and write them as one run."""
    shards = [_read_shard(path) for path in config.run_dirs]
    _check_same_run(shards)
    count = shards[0].shard.count
    shards.sort(key=lambda shard: shard.shard.index)
    missing = _check_coverage(shards, count, config.partial)
    _check_out(config, shards)
    first = shards[0].config
    seeds = _seed_file(config.seeds, first, shards[0].fingerprint)
    unsharded = first.model_copy(update={"shard": None, "seeds": seeds, "out": config.out})
    counts = RunCounts()
    store = RunStore.open(
        config.out,
        generations=first.generations,
        overwrite=config.overwrite,
        observers=[counts.add],
    )
    try:
        # run.json first: the store's check on --out knows a run directory by it.
        _write_manifest(config.out, shards, unsharded, counts, missing, "running")
        for name in _record_files(shards):
            atomic_write(config.out / name, _concatenated([shard.path / name for shard in shards]))
        order = {s.id: place for place, s in enumerate(iter_seeds(seeds, unsharded.seed_options))}
        store.sort_outputs(order)
        dataset_records = store.write_dataset()
        store.scan()
        duplicates = _cross_shard_duplicates(shards, unsharded) if first.rules.dedup else []
        written = _write_manifest(
            config.out, shards, unsharded, counts, missing, "complete", dataset_records, duplicates
        )
    finally:
        store.close()
    return MergeSummary(
        out=str(config.out),
        shards=[str(shard.shard) for shard in shards],
        missing=missing,
        seeds=written.seeds,
        kept=written.kept,
        eliminated=written.eliminated,
        dataset=str(written.dataset),
        dataset_records=dataset_records,
        cross_shard_duplicates=duplicates,
    )


def format_summary(summary: MergeSummary) -> str:
    """What `evol merge` prints: what it joined, and what it found."""
    lines = [
        f"{summary.out}: merged {len(summary.shards)} shards ({', '.join(summary.shards)}): "
        f"{summary.seeds} seeds, {summary.kept} records kept, {summary.eliminated} eliminated",
        f"dataset: {summary.dataset} ({summary.dataset_records} records)",
    ]
    if summary.missing:
        lines.append(f"missing shards (--partial): {', '.join(summary.missing)}")
    if summary.cross_shard_duplicates:
        lines.append(
            f"{len(summary.cross_shard_duplicates)} kept evolutions repeat an instruction of "
            "another shard (kept; listed in run.json under shards.cross_shard_duplicates)"
        )
    return "\n".join(lines)


def _read_shard(path: Path) -> _Shard:
    manifest = load_manifest(path)  # a missing directory or run.json: the one message
    status = manifest.status
    if status != "complete":
        raise MergeError(
            f"{path}: the run is {status}, not complete; run its evol run command again to "
            "finish it, then merge"
        )
    unreadable = MergeError(f"{path}: run.json is not one this evol can read")
    try:
        config = manifest.config.run_config()
    except ValueError:
        raise unreadable from None
    if config.shard is None:
        raise MergeError(f"{path}: not a shard (it ran without --shard): nothing to merge it with")
    parts = (manifest.fingerprint, manifest.backend, manifest.seeds, manifest.counts)
    fingerprint, backend, seeds, counts = parts
    if fingerprint is None or backend is None or seeds is None or counts is None:
        raise unreadable  # a complete run records them all
    if manifest.summary is None:
        raise unreadable
    return _Shard(
        path, manifest, config, config.shard, fingerprint, backend, seeds, counts, manifest.summary
    )


def _check_same_run(shards: list[_Shard]) -> None:
    """Every shard made with the options of the first, and the same N."""
    first = shards[0]
    base = _shared_fingerprint(first)
    for shard in shards[1:]:
        differences = list(base.differences(_shared_fingerprint(shard)))
        for option in ("generations", "limit"):
            if getattr(first.config, option) != getattr(shard.config, option):
                differences.append(f"--{option}")
        if shard.shard.count != first.shard.count:
            differences.append("--shard N")
        if differences:
            raise MergeError(
                f"{shard.path} and {first.path} are not shards of one run: they differ in "
                f"{', '.join(sorted(differences))}"
            )


def _shared_fingerprint(shard: _Shard) -> Fingerprint:
    """The shard's fingerprint with what may differ between shards left out."""
    return shard.fingerprint.model_copy(update=dict.fromkeys(_PER_SHARD))


def _check_coverage(shards: list[_Shard], count: int, partial: bool) -> list[str]:
    """No shard twice; every shard present unless `partial`. Returns the missing ones."""
    by_index: dict[int, Path] = {}
    for shard in shards:
        index = shard.shard.index
        if index in by_index:
            raise MergeError(
                f"shards overlap: {by_index[index]} and {shard.path} are both shard {index}/{count}"
            )
        by_index[index] = shard.path
    missing = [f"{index}/{count}" for index in range(count) if index not in by_index]
    if missing and not partial:
        raise MergeError(
            f"missing shard{'s' if len(missing) > 1 else ''} {', '.join(missing)}: pass every "
            "shard's run directory, or --partial to merge these alone"
        )
    return missing


def _check_out(config: MergeConfig, shards: list[_Shard]) -> None:
    """--out is a new or empty directory, or (with --overwrite) a run that is not an input."""
    out = config.out.resolve()
    for shard in shards:
        if shard.path.resolve() == out:
            raise MergeError(f"{config.out}: is one of the shards; choose another --out")
    if (config.out / MANIFEST).exists() and not config.overwrite:
        raise RunDirError(
            f"{config.out}: holds a run already; choose a new or empty --out, or --overwrite "
            "to replace it"
        )


def _seed_file(given: Path | None, config: RunConfig, fingerprint: Fingerprint) -> Path:
    """The shards' seed file, checked against their fingerprint: it gives the records' order."""
    path = given or config.seeds
    expected = fingerprint.seeds_digest
    try:
        same = file_digest(path) == expected
    except (OSError, SeedFileError):
        raise MergeError(
            f"{path}: the shards' seed file cannot be read; pass it with --seeds (merge reads "
            "it to put the records in seed-file order)"
        ) from None
    if not same:
        raise MergeError(f"{path}: not the seed file the shards ran on (its content differs)")
    return path


def _record_files(shards: list[_Shard]) -> list[str]:
    names = {path.name for shard in shards for path in output_files(shard.path)}
    return sorted(names, key=lambda name: (name == ELIMINATED, len(name), name))


def _concatenated(paths: list[Path]) -> Any:
    """The shards' files one after the other, each line checked as a record on the way: a
    damaged one is named in its shard, not in the merged copy. Not
    `record_files.read_records`: a finished shard's last line is whole even without its
    newline (the store's reader drops such a line as torn, which here would lose a record)."""

    def write(out: Any) -> None:
        for path in paths:
            if path.exists():
                model = EliminatedRecord if path.name == ELIMINATED else Record
                with open_record_file(path) as source:
                    for number, line in enumerate(source, start=1):
                        parse_record(line, path, number, model)
                        out.write(line if line.endswith(b"\n") else line + b"\n")

    return write


def _cross_shard_duplicates(shards: list[_Shard], config: RunConfig) -> list[CrossShardDuplicate]:
    """Kept evolutions that repeat an earlier instruction of another shard, by the run's rule.

    The pool starts with every seed, then takes the evolutions generation by generation; an
    index keyed by shard rather than lineage makes its search skip the shard's own records
    (which the shard's run already compared, the same lineage among them).
    """
    from evol.method.dedup import (  # numpy loads only for --dedup
        DuplicateIndex,
        largest_pool,
        resolved_method,
    )

    records = []
    for shard in shards:
        label = str(shard.shard)
        records += [(r["generation"], label, r) for r in iter_records(shard.path)]
        # A seed whose answer failed is still in the run's pool (see dedup.load_pool).
        records += [
            (0, label, r) for r in iter_records(shard.path, eliminated=True) if r["generation"] == 0
        ]
    seeds = sum(shard.seeds.count for shard in shards)
    pool = DuplicateIndex(
        method=resolved_method(config.rules.dedup_method, largest_pool(seeds, config.generations)),
        threshold=config.rules.dedup_threshold,
    )
    found = []
    for generation, label, record in sorted(records, key=lambda item: item[0]):
        if generation > 0 and (original := pool.find(record["instruction"], label)):
            found.append(CrossShardDuplicate(id=record["id"], duplicate_of=original))
        pool.add(record["id"], label, record["instruction"])
    return found


def _write_manifest(
    out: Path,
    shards: list[_Shard],
    config: RunConfig,
    counts: RunCounts,
    missing: list[str],
    status: str,
    dataset_records: int | None = None,
    duplicates: list[CrossShardDuplicate] | None = None,
) -> RunSummary:
    """run.json of the merged run: the shards' own shape, with their figures summed. Returns
    its summary."""
    first = shards[0]
    scan = SeedScan(
        path=str(config.seeds),
        format=first.seeds.format,
        count=sum(shard.seeds.count for shard in shards),
        # Every shard reads every row, so each lists the same skipped ones.
        skipped=[(row.line, row.why) for row in first.seeds.skipped],
    )
    dedup = first.manifest.dedup
    facts = RunFacts(
        config=config,
        status=status,
        backend_name=first.backend.name,
        models=first.backend.models,
        fingerprint=first.fingerprint.model_copy(update={"shard": MERGED}),
        scan=scan,
        counts=counts,
        outputs=output_sizes(out),
        elapsed=sum(shard.manifest.timings.total_elapsed_s for shard in shards),
        dataset_records=dataset_records,
        requests=dict(_summed(shard.summary.requests for shard in shards)),
        retries=dict(_summed(shard.manifest.retries for shard in shards)),
        dedup_method=dedup.method if dedup else None,
    )
    manifest = build_manifest(facts, None)
    summary = manifest.summary
    assert summary is not None  # build_manifest always writes one
    manifest.shards = ShardsPart(
        runs=[
            ShardRun(
                path=str(shard.path),
                shard=str(shard.shard),
                seeds=shard.seeds.count,
                kept=shard.counts.kept,
                eliminated=shard.counts.eliminated,
            )
            for shard in shards
        ],
        missing=missing,
        cross_shard_duplicates=duplicates or [],
    )
    write_manifest(out, manifest)
    return summary


def _summed(tables: Any) -> Counter[str]:
    total: Counter[str] = Counter()
    for table in tables:
        total.update(table or {})
    return total
