"""run.json, the manifest of a run: built in one place, read in one place.

It records the config (no secrets), the fingerprint a resume must match, the counts, usage,
timings and versions, and the summary `--json` prints; its format is the `Manifest` model of
evol.rundir.runjson. Every command reads it through `load_manifest`: `evol run` to refuse a resume
with other options (`check_resume`) and to answer a finished run without reading it again
(`is_finished`); `stats`, `export`, `show`, `score` and `merge` for what they need of it. A
damaged run.json, or one of a format this evol does not know, is one clear error.
"""

from __future__ import annotations

import json
import platform
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, overload

from evol.config import RunConfig
from evol.errors import ConfigMismatch, RunDirError
from evol.jsonl import atomic_write
from evol.rundir.counts import RunCounts
from evol.rundir.fingerprint import FLAGS, Fingerprint
from evol.rundir.layout import DATASET, MANIFEST
from evol.rundir.runjson import (
    BackendPart,
    CountsPart,
    DedupPart,
    JudgingPart,
    Manifest,
    RecordedConfig,
    RunSummary,
    SeedsPart,
    SkippedSeed,
    TimingsPart,
    parse,
)
from evol.secrets import display_url
from evol.seeds import SeedScan

__all__ = [
    "Manifest",
    "RunFacts",
    "RunSummary",
    "build_manifest",
    "check_resume",
    "format_summary",
    "is_finished",
    "load_manifest",
    "record_failed_restart",
    "write_manifest",
]


@dataclass
class RunFacts:
    """What a run did and how it was set up: everything run.json records."""

    config: RunConfig
    status: str
    backend_name: str
    models: dict[str, str]
    fingerprint: Fingerprint | None  # None: the run stopped before asking its backend
    scan: SeedScan
    counts: RunCounts
    outputs: dict[str, int]
    elapsed: float
    error: str | None = None
    dataset_records: int | None = None
    failed: list[dict[str, Any]] = field(default_factory=list)
    requests: dict[str, int] = field(default_factory=dict)
    retries: dict[str, int] = field(default_factory=dict)
    judged: dict[tuple[str, str], int] = field(default_factory=dict)  # (role, form): replies
    endpoints: list[dict[str, Any]] = field(default_factory=list)
    concurrency: dict[str, int] = field(default_factory=dict)
    dedup_method: str | None = None
    waiting: int = 0
    batches: list[dict[str, Any]] | None = None
    resumed: bool = False
    steps_done_at_start: int = 0
    calls_to_repeat: int | None = 0
    calls_cut_off: int = 0


@overload
def load_manifest(run_dir: Path) -> Manifest: ...
@overload
def load_manifest(run_dir: Path, *, required: bool) -> Manifest | None: ...
def load_manifest(run_dir: Path, *, required: bool = True) -> Manifest | None:
    """run.json of `run_dir` as a `Manifest` (upgraded from the format it was written in);
    None when there is none and none is `required`."""
    path = run_dir / MANIFEST
    if not path.is_file():
        if not required:
            return None
        if not run_dir.is_dir():
            raise RunDirError(
                f"{run_dir}: {_NOT_A_DIRECTORY if run_dir.exists() else _NO_DIRECTORY}"
            )
        raise RunDirError(f"{run_dir}: no run here (run.json is missing)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"), parse_constant=_no_constant)
    except RecursionError:
        raise RunDirError(f"{path}: nested too deep to be a manifest: {_DAMAGED}") from None
    except (OSError, ValueError) as error:
        raise RunDirError(f"{path}: unreadable manifest ({error}): {_DAMAGED}") from None
    return parse(data, str(path))


_NO_DIRECTORY = "the directory does not exist (name the --out of an evol run)"
_NOT_A_DIRECTORY = "not a directory (name the --out of an evol run)"
_DAMAGED = "the run directory is damaged: restore it, or start again with --overwrite"


def write_manifest(run_dir: Path, manifest: Manifest) -> None:
    """Replace run.json atomically: a crash leaves the old or the new one, never half."""
    text = json.dumps(manifest.model_dump(mode="json"), indent=2, ensure_ascii=False) + "\n"
    atomic_write(run_dir / MANIFEST, text)


def record_failed_restart(run_dir: Path, error: str) -> dict[str, Any] | None:
    """Say in the run.json of a run that could not go on (its server unreachable at start, its
    key refused) that it failed and why, keeping all else; a complete run stays complete, as
    its files are. Returns the summary written (None where nothing was)."""
    manifest = load_manifest(run_dir, required=False)
    if manifest is None or manifest.status == "complete":
        return None
    summary = manifest.summary
    if summary is not None:
        summary = summary.model_copy(update={"status": "failed", "error": error})
    update = {"status": "failed", "updated_at": _now(), "summary": summary}
    write_manifest(run_dir, manifest.model_copy(update=update))
    return summary.model_dump(mode="json") if summary is not None else None


def check_resume(out_dir: Path, previous: Manifest, new: Fingerprint, config: RunConfig) -> None:
    """Refuse to resume a run made with other options, naming each (paths, not hashes)."""
    old = previous.fingerprint or Fingerprint()
    differences = old.differences(new)
    shown = {
        "seeds_digest": (
            previous.seeds.path if previous.seeds else None,
            f"{config.seeds} (changed)",
        ),
        "prompts_digest": (
            previous.config.prompts_dir or "the shipped prompts",
            f"{config.prompts_dir or 'the shipped prompts'} (other templates)",
        ),
    }
    for name, values in shown.items():
        if FLAGS[name] in differences:
            differences[FLAGS[name]] = values
    # More generations, or more seeds, extend a run (round k of seed s is the same whatever N
    # is); fewer would hide records.
    old_generations = previous.config.generations or 0
    if config.generations < old_generations:
        differences["--generations"] = (old_generations, config.generations)
    old_limit = previous.config.limit
    if config.limit is not None and (old_limit is None or config.limit < old_limit):
        differences["--limit"] = (old_limit or "all seeds", config.limit)
    if differences:
        raise ConfigMismatch(str(out_dir), differences)


def is_finished(manifest: Manifest, config: RunConfig, outputs: dict[str, int]) -> bool:
    """The run is complete with these generations and seeds, and its files are as it left them."""
    return (
        manifest.status == "complete"
        and manifest.config.generations == config.generations
        and manifest.config.limit == config.limit
        and manifest.outputs == outputs
    )


def build_manifest(facts: RunFacts, previous: Manifest | None) -> Manifest:
    """run.json for `facts`, carrying over what the previous runs of the directory recorded."""
    config, counts = facts.config, facts.counts.as_dict()
    total_before = previous.timings.total_elapsed_s if previous else 0.0
    summary = RunSummary(
        out=str(config.out),
        status=facts.status,
        error=facts.error,
        backend=facts.backend_name,
        models=facts.models,
        seeds=facts.scan.count,
        skipped_seeds=len(facts.scan.skipped),
        generations=config.generations,
        kept=counts["kept"],
        kept_per_generation=counts["kept_per_generation"],
        eliminated=counts["eliminated"],
        eliminated_per_reason=counts["eliminated_per_reason"],
        failed=facts.failed,
        waiting=facts.waiting,
        requests=facts.requests,
        retries=sum(facts.retries.values()),
        usage=counts["usage"],
        dataset=str(config.out / DATASET) if facts.dataset_records is not None else None,
        dataset_records=facts.dataset_records,
        elapsed_s=round(facts.elapsed, 3),
        resumed=facts.resumed,
        steps=facts.scan.count * (config.generations + 1),
        steps_done_at_start=facts.steps_done_at_start,
        calls_to_repeat=facts.calls_to_repeat,
        calls_cut_off=facts.calls_cut_off,
    )
    return Manifest(
        status=facts.status,
        created_at=(previous.created_at if previous else None) or _now(),
        updated_at=_now(),
        config=RecordedConfig.model_validate(_public_config(config)),
        fingerprint=facts.fingerprint,
        backend=BackendPart(
            name=facts.backend_name,
            base_urls=[display_url(url) for url in config.base_urls],
            models=facts.models,
            model_path=str(config.model_path) if config.model_path else None,
        ),
        seeds=SeedsPart(
            path=str(config.seeds),
            format=facts.scan.format,
            count=facts.scan.count,
            skipped=[SkippedSeed(line=line, why=why) for line, why in facts.scan.skipped],
        ),
        counts=CountsPart.model_validate(counts),
        outputs=facts.outputs,
        retries=facts.retries,
        judging=_judging(facts, previous),
        endpoints=facts.endpoints,
        dedup=DedupPart(method=facts.dedup_method) if facts.dedup_method else None,
        concurrency=facts.concurrency,
        batches=facts.batches if facts.batches is not None else _previous_batches(previous),
        summary=summary,
        timings=TimingsPart(
            this_run_elapsed_s=round(facts.elapsed, 3),
            total_elapsed_s=round(total_before + facts.elapsed, 3),
        ),
        versions=_versions(),
    )


def _previous_batches(previous: Manifest | None) -> list[dict[str, Any]] | None:
    return previous.batches if previous else None


def _judging(facts: RunFacts, previous: Manifest | None) -> JudgingPart:
    """How the judge model's replies were read, per role, by this run and the runs of the
    directory before it: as the JSON schema asked for, as prose (a server that refused or
    ignored the schema), or not at all ("unread" answer checks); and whether answers were
    checked."""
    counts: Counter[tuple[str, str]] = Counter()
    before = previous.judging if previous else None
    for role, forms in (before.replies_read_as if before else {}).items():
        counts.update({(role, form): count for form, count in forms.items() if count > 0})
    counts.update(facts.judged)
    read_as: dict[str, dict[str, int]] = {}
    for (role, form), count in sorted(counts.items()):
        read_as.setdefault(role, {})[form] = count
    return JudgingPart(answer_check=facts.config.checks_answers, replies_read_as=read_as)


# The config fields of verifiable constraints: in run.json for a run that draws them only.
VERIFIABLE_CONFIG = {"constraint_ids", "answer_attempts", "answer_n"}
# The fields of --engine ray: in run.json for a run through Ray only (a live run's run.json
# stays as it was before there was a choice of engine).
RAY_CONFIG = {"engine", "ray_address", "ray_model", "ray_tp", "ray_replicas", "ray_batch_size"}


def _public_config(config: RunConfig) -> dict[str, Any]:
    hidden = {"api_key"} | (set() if config.verifiable else VERIFIABLE_CONFIG)
    hidden |= set() if config.engine == "ray" else RAY_CONFIG
    data = config.model_dump(mode="json", exclude=hidden)
    data["base_urls"] = [display_url(url) for url in config.base_urls]
    return data


def _versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {"python": platform.python_version()}
    for package in ("evol", "openai", "llama-cpp-python"):
        found[package] = _installed(package)
    return found


@cache  # run.json is written at the start and the end: each read parses a METADATA file
def _installed(package: str) -> str | None:
    try:
        return version(package)
    except PackageNotFoundError:
        return None


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def format_summary(summary: RunSummary) -> str:
    """What `evol run` says at its end (on stderr): the records kept and eliminated, and what
    is left to do."""
    per_generation = ", ".join(f"gen {g}: {n}" for g, n in summary.kept_per_generation.items())
    reasons = ", ".join(f"{r}: {n}" for r, n in summary.eliminated_per_reason.items()) or "none"
    lines = [
        f"evol: {summary.status}: {summary.kept} records kept ({per_generation})",
        f"evol: eliminated {summary.eliminated} ({reasons})",
    ]
    if summary.skipped_seeds:
        lines.append(
            f"evol: skipped {summary.skipped_seeds} invalid seed rows (listed in run.json)"
        )
    if summary.failed:
        lines.append(
            f"evol: {len(summary.failed)} steps failed after retries (listed in run.json); run again to retry them"
        )
    if summary.waiting:
        lines.append(
            f"evol: {summary.waiting} steps wait in batches (listed in run.json); run the same "
            "command again to collect them"
        )
    if summary.dataset:
        lines.append(f"evol: dataset: {summary.dataset} ({summary.dataset_records} records)")
    return "\n".join(lines)


def _no_constant(name: str) -> Any:
    """NaN and Infinity are no JSON: a run.json holding one is damaged."""
    raise ValueError(f"{name} is not a JSON value")
