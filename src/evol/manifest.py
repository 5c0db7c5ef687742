"""run.json, the manifest of a run: built in one place, read in one place.

It records the config (no secrets), the fingerprint a resume must match, the counts, usage,
timings and versions, and the summary `--json` prints. `evol stats`, `export` and `report`
read it through `read_manifest`; `evol run` through it too, to refuse a resume with other
options (`check_resume`) and to answer a finished run without reading it again (`is_finished`).
"""

from __future__ import annotations

import json
import platform
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from evol.config import RunConfig
from evol.counts import RunCounts
from evol.errors import ConfigMismatch, RunDirError
from evol.prompts import PromptSet
from evol.secrets import display_url
from evol.seeds import SeedScan, detect_format
from evol.store import DATASET, MANIFEST, atomic_write


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
    endpoints: list[dict[str, object]] = field(default_factory=list)
    concurrency: dict[str, int] = field(default_factory=dict)
    dedup_method: str | None = None
    waiting: int = 0
    batches: list[dict[str, Any]] | None = None


def read_manifest(run_dir: Path, *, required: bool = True) -> dict[str, Any] | None:
    """run.json of `run_dir`; None when there is none and none is `required`."""
    path = run_dir / MANIFEST
    if not path.is_file():
        if required:
            raise RunDirError(f"{run_dir}: no run here (run.json is missing)")
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise RunDirError(
            f"{path}: unreadable manifest ({error}); use --overwrite to start afresh"
        ) from None
    if not isinstance(manifest, dict):
        raise RunDirError(f"{path}: not an evol manifest; use --overwrite to start afresh")
    return manifest


def write_manifest(run_dir: Path, manifest: dict[str, Any]) -> None:
    """Replace run.json atomically: a crash leaves the old or the new one, never half."""
    atomic_write(run_dir / MANIFEST, json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")


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
        "--prompts": prompts.digest(),
        "--backend": backend,
        "--model": models,
        "--temperature/--max-tokens": {role: params.to_request() for role, params in config.params},
        "--system-prompt": config.system_prompt,
        "elimination rules": config.rules.model_dump(),
        "--answer-seeds": config.answer_seeds,
        "--shard": str(config.shard) if config.shard else None,
    }


def check_resume(
    out_dir: Path, previous: dict[str, Any], new: dict[str, Any], config: RunConfig
) -> None:
    """Refuse to resume a run made with other options, naming each (paths, not hashes)."""
    old = previous.get("fingerprint", {})
    differences = {
        name: (old.get(name), value) for name, value in new.items() if old.get(name) != value
    }
    shown = {
        "seeds file content": (previous.get("seeds", {}).get("path"), f"{config.seeds} (changed)"),
        "--prompts": (
            previous.get("config", {}).get("prompts_dir") or "the shipped prompts",
            f"{config.prompts_dir or 'the shipped prompts'} (other templates)",
        ),
    }
    for name in differences.keys() & shown.keys():
        differences[name] = shown[name]
    # More generations, or more seeds, extend a run (round k of seed s is the same whatever N
    # is); fewer would hide records.
    old_generations = previous.get("config", {}).get("generations", 0)
    if config.generations < old_generations:
        differences["--generations"] = (old_generations, config.generations)
    old_limit = previous.get("config", {}).get("limit")
    if config.limit is not None and (old_limit is None or config.limit < old_limit):
        differences["--limit"] = (old_limit or "all seeds", config.limit)
    if differences:
        raise ConfigMismatch(str(out_dir), differences)


def is_finished(manifest: dict[str, Any], config: RunConfig, outputs: dict[str, int]) -> bool:
    """The run is complete with these generations and seeds, and its files are as it left them."""
    recorded = manifest.get("config", {})
    return (
        manifest.get("status") == "complete"
        and recorded.get("generations") == config.generations
        and recorded.get("limit") == config.limit
        and manifest.get("outputs") == outputs
    )


def build_manifest(facts: RunFacts, previous: dict[str, Any] | None) -> dict[str, Any]:
    """run.json for `facts`, carrying over what the previous runs of the directory recorded."""
    config, counts, previous = facts.config, facts.counts.as_dict(), previous or {}
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
    )
    return {
        "status": facts.status,
        "created_at": previous.get("created_at") or _now(),
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
        "endpoints": facts.endpoints,
        "dedup": {"method": facts.dedup_method} if facts.dedup_method else None,
        "concurrency": facts.concurrency,
        "batches": facts.batches if facts.batches is not None else previous.get("batches"),
        "summary": summary.model_dump(mode="json"),
        "timings": {
            "this_run_elapsed_s": round(facts.elapsed, 3),
            "total_elapsed_s": round(
                previous.get("timings", {}).get("total_elapsed_s", 0.0) + facts.elapsed, 3
            ),
        },
        "versions": _versions(),
    }


def _public_config(config: RunConfig) -> dict[str, Any]:
    data = config.model_dump(mode="json", exclude={"api_key"})
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
