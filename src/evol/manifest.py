"""run.json, the manifest of a run: built in one place, read in one place.

It records the config (no secrets), the fingerprint a resume must match, the counts, usage,
timings and versions, and the summary `--json` prints. `evol stats`, `export` and `report`
read it through `read_manifest`; `evol run` through `load_manifest`, to refuse a resume with
other options (`check_resume`) and to answer a finished run without reading it again
(`is_finished`). Both check it against `Manifest` first: a damaged run.json is one clear error.
"""

from __future__ import annotations

import json
import platform
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, overload

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from evol.config import RunConfig
from evol.counts import RunCounts
from evol.errors import ConfigMismatch, RunDirError
from evol.jsonl import atomic_write
from evol.prompts import PromptSet
from evol.secrets import display_url
from evol.seeds import SeedScan, detect_format
from evol.store import DATASET, MANIFEST


class RunSummary(BaseModel):
    """What a run did, printed by `--json` and kept in run.json."""

    out: str
    status: str = Field(
        description="complete; failed (some steps failed, or `error` stopped the run); "
        "interrupted; pending (--batch-no-wait: steps wait in batches, run again)"
    )
    error: str | None = Field(None, description="what stopped the run, when something did")
    backend: str
    models: dict[str, str]
    seeds: int
    skipped_seeds: int
    generations: int
    kept: int
    kept_per_generation: dict[str, int]
    eliminated: int
    eliminated_per_reason: dict[str, int]
    failed: list[dict[str, Any]] = Field(description="steps that failed after all retries")
    waiting: int = Field(0, description="steps whose request waits in a batch (status pending)")
    requests: dict[str, int] = Field(description="requests sent by this process, per role")
    retries: int
    usage: dict[str, dict[str, int]] = Field(description="tokens of all records on disk, per role")
    dataset: str | None
    dataset_records: int | None
    elapsed_s: float
    resumed: bool = Field(False, description="this run went on from a run already in --out")
    steps: int = Field(0, description="steps in all: each seed's answer, each evolution round")
    steps_done_at_start: int = Field(0, description="steps already on disk when this run began")
    calls_to_repeat: int | None = Field(
        0,
        description="requests the run before had in flight when it stopped, sent again by this "
        "one (their replies were lost); null when it was killed without recording them",
    )
    calls_cut_off: int | None = Field(
        None, description="requests in flight when this run stopped: the next run sends them again"
    )


class _Section(BaseModel):
    """Part of run.json: the fields evol reads back, with their types; others are kept."""

    model_config = ConfigDict(extra="allow", strict=True)


class ManifestConfig(_Section):
    generations: int | None = None
    limit: int | None = None
    prompts_dir: str | None = None
    batch: bool = False
    system_prompt: str | None = None


class ManifestBackend(_Section):
    name: str
    models: dict[str, str] = Field(default_factory=dict)


class ManifestSeeds(_Section):
    path: str
    count: int


class ManifestCounts(_Section):
    kept: int
    eliminated: int


class ManifestTimings(_Section):
    total_elapsed_s: float = 0.0


class Manifest(_Section):
    """run.json as evol reads it back. A part may be missing (a run.json from before evol
    wrote it, or one made by hand, is read as far as it goes); what is there has its type."""

    status: str = "unknown"
    config: ManifestConfig = Field(default_factory=ManifestConfig)
    created_at: str | None = None
    fingerprint: dict[str, Any] = Field(default_factory=dict)
    backend: ManifestBackend | None = None
    seeds: ManifestSeeds | None = None
    counts: ManifestCounts | None = None
    outputs: dict[str, int] = Field(default_factory=dict)
    retries: dict[str, int] = Field(default_factory=dict)
    summary: RunSummary | None = None
    timings: ManifestTimings = Field(default_factory=ManifestTimings)
    batches: list[dict[str, Any]] | None = None


@dataclass
class RunFacts:
    """What a run did and how it was set up: everything run.json records."""

    config: RunConfig
    status: str
    backend_name: str
    models: dict[str, str]
    fingerprint: dict[str, Any]
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
    endpoints: list[dict[str, object]] = field(default_factory=list)
    concurrency: dict[str, int] = field(default_factory=dict)
    dedup_method: str | None = None
    waiting: int = 0
    batches: list[dict[str, Any]] | None = None
    resumed: bool = False
    steps_done_at_start: int = 0
    calls_to_repeat: int | None = 0
    calls_cut_off: int = 0


def read_manifest(run_dir: Path, *, required: bool = True) -> dict[str, Any] | None:
    """run.json of `run_dir` as written, checked against `Manifest`; None when there is none
    and none is `required`."""
    found = _read(run_dir, required)
    return found[0] if found else None


@overload
def load_manifest(run_dir: Path) -> Manifest: ...
@overload
def load_manifest(run_dir: Path, *, required: bool) -> Manifest | None: ...
def load_manifest(run_dir: Path, *, required: bool = True) -> Manifest | None:
    """run.json of `run_dir` as a `Manifest`; None when there is none and none is `required`."""
    found = _read(run_dir, required)
    return found[1] if found else None


_NO_DIRECTORY = "the directory does not exist (name the --out of an evol run)"
_NOT_A_DIRECTORY = "not a directory (name the --out of an evol run)"
_DAMAGED = "the run directory is damaged: restore it, or start again with --overwrite"


def _read(run_dir: Path, required: bool) -> tuple[dict[str, Any], Manifest] | None:
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
        data = json.loads(path.read_text(encoding="utf-8"))
    except RecursionError:
        raise RunDirError(f"{path}: nested too deep to be a manifest: {_DAMAGED}") from None
    except (OSError, ValueError) as error:
        raise RunDirError(f"{path}: unreadable manifest ({error}): {_DAMAGED}") from None
    if not isinstance(data, dict):
        raise RunDirError(f"{path}: not an evol manifest (not an object): {_DAMAGED}")
    try:
        return data, Manifest.model_validate(data, strict=True)
    except ValidationError as error:
        raise RunDirError(f"{path}: {_first_problem(error)}: {_DAMAGED}") from None


_TYPE_NAMES = {
    "model_type": "an object",
    "dict_type": "an object",
    "list_type": "a list",
    "string_type": "a string",
    "int_type": "an integer",
    "float_type": "a number",
    "bool_type": "true or false",
}


def _first_problem(error: ValidationError) -> str:
    """The first thing wrong in run.json, in words: "`config` is not an object"."""
    problem = error.errors()[0]
    where = ".".join(str(part) for part in problem["loc"])
    kind = problem["type"]
    if kind == "missing":
        return f"`{where}` is missing"
    if kind in _TYPE_NAMES:
        return f"`{where}` is not {_TYPE_NAMES[kind]}"
    return f"`{where}`: {problem['msg']}"


def write_manifest(run_dir: Path, manifest: dict[str, Any]) -> None:
    """Replace run.json atomically: a crash leaves the old or the new one, never half."""
    atomic_write(run_dir / MANIFEST, json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")


def record_failed_restart(run_dir: Path, error: str) -> dict[str, Any] | None:
    """Say in the run.json of a run that could not go on (its server unreachable at start, its
    key refused) that it failed and why, keeping all else; a complete run stays complete, as
    its files are. Returns the summary written (None where nothing was)."""
    data = read_manifest(run_dir, required=False)
    if data is None or data.get("status") == "complete":
        return None
    summary = data.get("summary")
    data["status"], data["updated_at"] = "failed", _now()
    if isinstance(summary, dict):
        summary |= {"status": "failed", "error": error}
    write_manifest(run_dir, data)
    return summary


def fingerprint(
    config: RunConfig, seeds_digest: str, prompts: PromptSet, backend: str, models: dict[str, str]
) -> dict[str, Any]:
    """What must stay the same for a resumed run to give the dataset a fresh run would.

    Keys are the options a user changes, so a mismatch can name them. `--generations` may grow.
    """
    return {
        "seeds file content": seeds_digest,
        "--format": detect_format(config.seeds, config.seed_format),
        "--instruction-field/--input-field/--output-field": [
            config.instruction_field,
            config.input_field,
            config.output_field,
        ],
        "--seed": config.seed,
        "--operations": dict(sorted(config.operations.items())),
        "--prompts": prompts.digest(config.operations),
        "--backend": backend,
        "--model": models,
        "--temperature/--max-tokens": {role: params.to_request() for role, params in config.params},
        "--system-prompt": config.system_prompt,
        "elimination rules": config.rules.model_dump(),
        "--answer-check": config.checks_answers,
        "--answer-seeds": config.answer_seeds,
        "--shard": str(config.shard) if config.shard else None,
    } | _verifiable_options(config)


def _verifiable_options(config: RunConfig) -> dict[str, Any]:
    """The options of verifiable constraints, for a run that draws them (a run that does not
    keeps the fingerprint it had before they existed, so it still resumes)."""
    if not config.verifiable:
        return {}
    return {"--constraint-ids": config.constraint_ids, "--answer-attempts": config.answer_attempts}


def check_resume(out_dir: Path, previous: Manifest, new: dict[str, Any], config: RunConfig) -> None:
    """Refuse to resume a run made with other options, naming each (paths, not hashes)."""
    old = previous.fingerprint
    differences = {
        name: (old.get(name), value) for name, value in new.items() if old.get(name) != value
    }
    shown = {
        "seeds file content": (
            previous.seeds.path if previous.seeds else None,
            f"{config.seeds} (changed)",
        ),
        "--prompts": (
            previous.config.prompts_dir or "the shipped prompts",
            f"{config.prompts_dir or 'the shipped prompts'} (other templates)",
        ),
    }
    for name in differences.keys() & shown.keys():
        differences[name] = shown[name]
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


def build_manifest(facts: RunFacts, previous: Manifest | None) -> dict[str, Any]:
    """run.json for `facts`, carrying over what the previous runs of the directory recorded."""
    config, counts = facts.config, facts.counts.as_dict()
    created_at = previous.created_at if previous else None
    total_before = previous.timings.total_elapsed_s if previous else 0.0
    batches = previous.batches if previous else None
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
    return {
        "status": facts.status,
        "created_at": created_at or _now(),
        "updated_at": _now(),
        "config": _public_config(config),
        "fingerprint": facts.fingerprint,
        "backend": {
            "name": facts.backend_name,
            "base_urls": [display_url(url) for url in config.base_urls],
            "models": facts.models,
            "model_path": str(config.model_path) if config.model_path else None,
        },
        "seeds": {
            "path": str(config.seeds),
            "format": facts.scan.format,
            "count": facts.scan.count,
            "skipped": [{"line": line, "why": why} for line, why in facts.scan.skipped],
        },
        "counts": counts,
        "outputs": facts.outputs,
        "retries": facts.retries,
        "judging": _judging(facts, previous),
        "endpoints": facts.endpoints,
        "dedup": {"method": facts.dedup_method} if facts.dedup_method else None,
        "concurrency": facts.concurrency,
        "batches": facts.batches if facts.batches is not None else batches,
        "summary": summary.model_dump(mode="json"),
        "timings": {
            "this_run_elapsed_s": round(facts.elapsed, 3),
            "total_elapsed_s": round(total_before + facts.elapsed, 3),
        },
        "versions": _versions(),
    }


def _judging(facts: RunFacts, previous: Manifest | None) -> dict[str, Any]:
    """How the judge model's replies were read, per role, by this run and the runs of the
    directory before it: as the JSON schema asked for, as prose (a server that refused or
    ignored the schema), or not at all ("unread" answer checks); and whether answers were
    checked."""
    counts: Counter[tuple[str, str]] = Counter()
    before = (previous.model_extra or {}).get("judging") if previous else None
    if isinstance(before, dict) and isinstance(read := before.get("replies_read_as"), dict):
        for role, forms in read.items():
            if isinstance(forms, dict):
                for form, count in forms.items():
                    if type(count) is int and count > 0:
                        counts[role, form] += count
    counts.update(facts.judged)
    read_as: dict[str, dict[str, int]] = {}
    for (role, form), count in sorted(counts.items()):
        read_as.setdefault(role, {})[form] = count
    return {"answer_check": facts.config.checks_answers, "replies_read_as": read_as}


# The config fields of verifiable constraints: in run.json for a run that draws them only.
VERIFIABLE_CONFIG = {"constraint_ids", "answer_attempts"}


def _public_config(config: RunConfig) -> dict[str, Any]:
    hidden = {"api_key"} | (set() if config.verifiable else VERIFIABLE_CONFIG)
    data = config.model_dump(mode="json", exclude=hidden)
    data["base_urls"] = [display_url(url) for url in config.base_urls]
    return data


def _versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {"python": platform.python_version()}
    for package in ("evol", "openai", "llama-cpp-python"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = None
    return found


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
