"""`evol.run(config)`: the whole run, from seed file to dataset.

seeds -> engine -> (operation prompt -> LLM -> elimination) -> store. Everything that can be
checked before a paid call is checked first (prompts, seeds, the run directory), so a bad
input costs nothing and touches no earlier output.
"""

from __future__ import annotations

import asyncio
import contextlib
import platform
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from evol.config import RunConfig
from evol.engine import Engine, FailedItem, RoleModels
from evol.errors import BackendError, EvolError, Interrupted, TransientBackendError
from evol.llm import (
    BackendSettings,
    ChatBackend,
    choose_backend,
    create_backend,
    missing_key_warning,
)
from evol.llm.routing import EndpointRouter
from evol.prompts import PromptSet
from evol.secrets import display_url, redact
from evol.seeds import SeedScan, detect_format, file_digest, iter_seeds, scan_seeds
from evol.store import DATASET, RunStore

if TYPE_CHECKING:
    from evol.dedup import DuplicateIndex


class RunSummary(BaseModel):
    """What a run did, printed by `--json` and kept in run.json."""

    out: str
    status: str = Field(
        description="complete; failed (some steps failed, or `error` stopped the run); interrupted"
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
    failed: list[FailedItem] = Field(description="steps that failed after all retries")
    requests: dict[str, int] = Field(description="requests sent by this process, per role")
    retries: int
    usage: dict[str, dict[str, int]] = Field(description="tokens of all records on disk, per role")
    dataset: str | None
    dataset_records: int | None
    elapsed_s: float


ProgressCallback = Callable[[int, int], None]
"""Called with (steps done, steps in all); a step is a seed's answer or one evolution round."""


def run(
    config: RunConfig,
    *,
    on_progress: ProgressCallback | None = None,
    on_info: Callable[[str], None] | None = None,
) -> RunSummary:
    """Run `config` to the end (or resume it) and return its summary."""
    return asyncio.run(arun(config, on_progress=on_progress, on_info=on_info))


async def arun(
    config: RunConfig,
    *,
    on_progress: ProgressCallback | None = None,
    on_info: Callable[[str], None] | None = None,
) -> RunSummary:
    """The async body of `run`, for callers that already have an event loop."""
    started = time.monotonic()
    info = on_info or (lambda _message: None)
    prompts = PromptSet.load(config.prompts_dir)
    # A finished run is not read again: its seed file was checked whole when it ran, and the
    # fingerprint below proves it is the same file.
    seeds_digest = file_digest(config.seeds)
    finished = not config.overwrite and RunStore.finished_as_recorded(
        config.out, config.generations, seeds_digest
    )
    scan = None if finished else scan_seeds(config.seeds, config.seed_options)
    backend_name = choose_backend(
        config.backend, base_urls=config.base_urls, has_api_key=config.api_key is not None
    )
    backend = create_backend(
        backend_name,
        BackendSettings(
            base_urls=config.base_urls,
            api_key=config.api_key,
            api_key_source=config.api_key_source,
            timeout=config.timeout,
            max_response_bytes=config.max_response_bytes,
            model_path=config.model_path,
        ),
    )
    if warning := missing_key_warning(backend_name, config.base_urls, config.api_key is not None):
        info(f"warning: {warning}")
    try:
        models = await _resolve_models(config, backend)
        fingerprint = _fingerprint(config, seeds_digest, prompts, backend_name, models)
        store = RunStore.open(
            config.out,
            fingerprint=fingerprint,
            generations=config.generations,
            overwrite=config.overwrite,
        )
        if store.finished:
            store.close()
            info(f"{config.out} is complete: nothing to do")
            assert store.previous_manifest is not None
            return RunSummary.model_validate(store.previous_manifest["summary"])
        scan = scan or scan_seeds(config.seeds, config.seed_options)
        where = f" at {', '.join(map(display_url, config.base_urls))}" if config.base_urls else ""
        info(f"backend {backend_name}{where}, model {_describe(models)}")
        run_parts = _Run(
            config,
            prompts,
            scan,
            backend,
            backend_name,
            models,
            fingerprint,
            store,
            started,
        )
        try:
            return await run_parts.execute(on_progress)
        finally:
            store.close()
    finally:
        await backend.aclose()


@dataclass
class _Run:
    """A run whose inputs are all checked: it drives the engine and writes run.json."""

    config: RunConfig
    prompts: PromptSet
    scan: SeedScan
    backend: ChatBackend
    backend_name: str
    models: RoleModels
    fingerprint: dict[str, Any]
    store: RunStore
    started: float

    async def execute(self, on_progress: ProgressCallback | None) -> RunSummary:
        config, store = self.config, self.store
        total = self.scan.count * (config.generations + 1)
        done = store.steps_done()
        report = on_progress or (lambda _done, _total: None)
        report(done, total)

        def step() -> None:
            nonlocal done
            done += 1
            report(done, total)

        engine = Engine(
            backend=self.backend,
            prompts=self.prompts,
            store=store,
            models=self.models,
            config=config,
            pool=self.duplicate_pool(),
            on_step=step,
        )
        store.write_manifest(self.manifest("running", engine, None))
        status, dataset_records, error = "interrupted", None, None
        try:
            await _until_signalled(engine.run(iter_seeds(config.seeds, config.seed_options)))
            status = "failed" if engine.stats.failed else "complete"
            store.sort_outputs(self.seed_order())
            dataset_records = store.write_dataset()
            if status == "complete":
                store.clear_journal()
        except EvolError as stopped:
            if not isinstance(stopped, Interrupted):
                status, error = "failed", str(stopped)
            stopped.summary = self.finish(status, engine, dataset_records, error)  # for --json
            raise
        except BaseException:
            self.finish(status, engine, dataset_records, error)
            raise
        return RunSummary.model_validate(self.finish(status, engine, dataset_records, error))

    def finish(
        self, status: str, engine: Engine, dataset_records: int | None, error: str | None
    ) -> dict[str, Any]:
        """Write the final run.json; returns its summary."""
        manifest = self.manifest(status, engine, dataset_records, error)
        self.store.write_manifest(manifest)
        return manifest["summary"]

    def _redact(self, text: str) -> str:
        key = self.config.api_key.get_secret_value() if self.config.api_key else None
        return redact(text, key)

    def seed_order(self) -> dict[str, int]:
        """Each seed id's place in the seed file, for ordering the output files."""
        seeds = iter_seeds(self.config.seeds, self.config.seed_options)
        return {seed.id: place for place, seed in enumerate(seeds)}

    def duplicate_pool(self) -> DuplicateIndex | None:
        """With --dedup: every kept instruction so far and every seed, ready for lookups."""
        if not self.config.rules.dedup:
            return None
        from evol.dedup import load_pool

        seeds = (
            (seed.id, seed.instruction)
            for seed in iter_seeds(self.config.seeds, self.config.seed_options)
        )
        largest = self.scan.count * (self.config.generations + 1)
        return load_pool(self.config.rules, largest, self.store.kept_instructions(), seeds)

    def pool_method(self) -> str:
        from evol.dedup import resolved_method

        largest = self.scan.count * (self.config.generations + 1)
        return resolved_method(self.config.rules.dedup_method, largest)

    def manifest(
        self, status: str, engine: Engine, dataset_records: int | None, error: str | None = None
    ) -> dict[str, Any]:
        """run.json: config without secrets, counts, usage, timings, versions, the summary."""
        config, counts = self.config, self.store.counts.as_dict()
        previous = self.store.previous_manifest or {}
        elapsed = time.monotonic() - self.started
        summary = {
            "out": str(config.out),
            "status": status,
            "error": self._redact(error) if error else None,
            "backend": self.backend_name,
            "models": vars(self.models),
            "seeds": self.scan.count,
            "skipped_seeds": len(self.scan.skipped),
            "generations": config.generations,
            "kept": counts["kept"],
            "kept_per_generation": counts["kept_per_generation"],
            "eliminated": counts["eliminated"],
            "eliminated_per_reason": counts["eliminated_per_reason"],
            "failed": [
                vars(item) | {"error": self._redact(item.error)} for item in engine.stats.failed
            ],
            "requests": dict(engine.stats.requests),
            "retries": sum(engine.stats.retries.values()),
            "usage": counts["usage"],
            "dataset": str(config.out / DATASET) if dataset_records is not None else None,
            "dataset_records": dataset_records,
            "elapsed_s": round(elapsed, 3),
        }
        return {
            "status": status,
            "created_at": previous.get("created_at") or _now(),
            "updated_at": _now(),
            "config": _public_config(config),
            "fingerprint": self.fingerprint,
            "backend": {
                "name": self.backend_name,
                "base_urls": [display_url(url) for url in config.base_urls],
                "models": vars(self.models),
                "model_path": str(config.model_path) if config.model_path else None,
            },
            "seeds": {
                "path": str(config.seeds),
                "format": self.scan.format,
                "count": self.scan.count,
                "skipped": [{"line": line, "why": why} for line, why in self.scan.skipped],
            },
            "counts": counts,
            "outputs": self.store.output_sizes(),
            "retries": dict(engine.stats.retries),
            "endpoints": _endpoint_stats(self.backend, self.config.base_urls),
            "dedup": {"method": self.pool_method()} if config.rules.dedup else None,
            "concurrency": {
                "ceiling": config.concurrency,
                "cuts_on_429": engine.slots.cuts,
                "lowest": engine.slots.lowest,
                "final": int(engine.slots.limit),
            },
            "summary": summary,
            "timings": {
                "this_run_elapsed_s": round(elapsed, 3),
                "total_elapsed_s": round(
                    previous.get("timings", {}).get("total_elapsed_s", 0.0) + elapsed, 3
                ),
            },
            "versions": _versions(),
        }


def _endpoint_stats(backend: ChatBackend, base_urls: list[str]) -> list[dict[str, object]]:
    """Requests and failures per endpoint when there are several (the router counts them)."""
    if isinstance(backend, EndpointRouter):
        return backend.endpoint_stats()
    return [{"url": display_url(url)} for url in base_urls]


async def _until_signalled(work: Any) -> None:
    """Await `work`; SIGINT or SIGTERM cancels it (no new calls) and raises `Interrupted`."""
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(work)
    signals = (signal.SIGINT, signal.SIGTERM)
    installed = []
    for number in signals:
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(number, task.cancel)
            installed.append(number)
    try:
        await task
    except asyncio.CancelledError:
        raise Interrupted(
            "interrupted: everything finished so far is saved; run the same command to resume"
        ) from None
    finally:
        for number in installed:
            loop.remove_signal_handler(number)


async def _resolve_models(config: RunConfig, backend: ChatBackend) -> RoleModels:
    model = config.model
    roles = (config.evolve_model, config.answer_model, config.judge_model)
    if model is None and not all(roles):
        try:
            model = await backend.default_model()
        except TransientBackendError as error:
            raise BackendError(f"{error} (asking it which model it serves)") from None
    return RoleModels(
        evolve=config.evolve_model or model,
        answer=config.answer_model or model,
        judge=config.judge_model or model,
    )


def _describe(models: RoleModels) -> str:
    names = {models.evolve, models.answer, models.judge}
    if len(names) == 1:
        return models.evolve
    return f"evolve {models.evolve}, answer {models.answer}, judge {models.judge}"


def _fingerprint(
    config: RunConfig,
    seeds_digest: str,
    prompts: PromptSet,
    backend: str,
    models: RoleModels,
) -> dict[str, Any]:
    """What must stay the same for a resumed run to give the dataset a fresh run would.

    Keys are the options a user changes, so a mismatch can name them. `--generations` may grow.
    """
    return {
        "seeds file content": seeds_digest,
        "--format": detect_format(config.seeds, config.seed_format),
        "--field": config.field,
        "--seed": config.seed,
        "--operations": dict(sorted(config.operations.items())),
        "--prompts": prompts.digest(),
        "--backend": backend,
        "--model": {"evolve": models.evolve, "answer": models.answer, "judge": models.judge},
        "--temperature/--max-tokens": {role: params.to_request() for role, params in config.params},
        "--system-prompt": config.system_prompt,
        "elimination rules": config.rules.model_dump(),
        "--answer-seeds": config.answer_seeds,
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
