"""`evol.run(config)`: the whole run, from seed file to dataset; this module only wires the parts.

seeds -> engine -> (operation prompt -> LLM -> elimination) -> store. Everything that can be
checked before a paid call is checked first (prompts, seeds, the run directory), so a bad
input costs nothing and touches no earlier output. The store reads the run's records once;
the lineage index, the counts and the journal take what they need from that pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, NoReturn, TypeGuard

from evol.config import RunConfig
from evol.engine import Engine, RoleModels
from evol.errors import (
    EvolError,
    Interrupted,
    RunDirError,
    StorageError,
)
from evol.interrupts import until_signalled
from evol.llm import ChatBackend, missing_key_warning, open_backend
from evol.llm.protocol import BatchingBackend, SeveralEndpoints, capabilities_of
from evol.method.prompts import PromptSet
from evol.preflight import (
    batch_settings,
    check_batches,
    check_open_files,
    check_verifiable,
    with_instruction_check,
)
from evol.progress import Progress, ProgressCallback
from evol.run_start import (
    RunStart,
    describe_models,
    finished_as_recorded,
    nothing_to_do,
    summary_of,
)
from evol.rundir.counts import RunCounts
from evol.rundir.fingerprint import Fingerprint
from evol.rundir.journal import CallJournal
from evol.rundir.layout import JOURNAL, MANIFEST
from evol.rundir.lineage import LineageIndex
from evol.rundir.manifest import (
    Manifest,
    RunFacts,
    RunSummary,
    build_manifest,
    check_resume,
    is_finished,
    load_manifest,
    write_manifest,
)
from evol.rundir.store import RunStore
from evol.secrets import display_url
from evol.seeds import SeedScan, file_digest, iter_seeds, scan_seeds

__all__ = ["Progress", "ProgressCallback", "RunSummary", "arun", "run"]


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
    check_verifiable(config)
    # A finished run is not read again: its seed file was checked whole when it ran, and the
    # fingerprint below proves it is the same file.
    seeds_digest = file_digest(config.seeds)
    scan = (
        None
        if finished_as_recorded(config, seeds_digest)
        else scan_seeds(config.seeds, config.seed_options)
    )
    backend_name, backend = open_backend(
        config.backend,
        config.backend_settings(),
        batch=batch_settings(config),
        ray=config.ray_settings(),
    )
    config = with_instruction_check(config, backend_name)
    if warning := missing_key_warning(backend_name, config.base_urls, config.api_key is not None):
        info(f"warning: {warning}")
    try:
        check_open_files(config, backend_name)
        check_batches(config)
        counts, lineages = RunCounts(), LineageIndex(config.generations)
        store = RunStore.open(
            config.out,
            generations=config.generations,
            overwrite=config.overwrite,
            observers=[counts.add],
        )
        journal = None
        try:
            previous = load_manifest(config.out, required=False)
            start = RunStart(config, backend_name, store, previous, scan, started)
            models = await start.resolve_models(backend)
            print_ = Fingerprint.of(config, seeds_digest, prompts, backend_name, vars(models))
            if previous is not None and start.resuming:
                check_resume(config.out, previous, print_, config)
                if previous.summary and is_finished(previous, config, store.output_sizes()):
                    info(f"{config.out} is complete: nothing to do")
                    return nothing_to_do(previous.summary)
            recorded: set[str] = set()
            store.scan(also=[lineages.add, lambda data, _reason: recorded.add(data["id"])])
            journal = CallJournal.open(config.out / JOURNAL, recorded)
            scan = scan or scan_seeds(config.seeds, config.seed_options)
            where = (
                f" at {', '.join(map(display_url, config.base_urls))}" if config.base_urls else ""
            )
            info(f"backend {backend_name}{where}, model {describe_models(models)}")
            parts = _Run(
                config, prompts, scan, backend, backend_name, models, print_, store, journal,
                lineages, counts, previous if start.resuming else None, started, info,
            )  # fmt: skip
            return await parts.execute(on_progress)
        finally:
            if journal is not None:
                journal.close()
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
    fingerprint: Fingerprint
    store: RunStore
    journal: CallJournal
    lineages: LineageIndex
    counts: RunCounts
    previous: Manifest | None
    started: float
    on_info: Callable[[str], None]
    done_at_start: int = 0

    async def execute(self, on_progress: ProgressCallback | None) -> RunSummary:
        config, store = self.config, self.store
        total = self.scan.count * (config.generations + 1)
        done = self.done_at_start = self.lineages.steps_done()
        if self.previous is not None:
            self.on_info(self.resume_line(total))

        def step() -> None:
            nonlocal done
            done += 1
            if on_progress is not None:
                on_progress(self.progress(done, total, engine))

        engine = Engine(
            backend=self.backend,
            prompts=self.prompts,
            store=store,
            journal=self.journal,
            lineages=self.lineages,
            models=self.models,
            config=config,
            pool=self.duplicate_pool(),
            on_step=step,
        )
        if on_progress is not None:
            on_progress(self.progress(done, total, engine))
        self.finish("running", engine)
        status, dataset_records, error = "interrupted", None, None
        try:
            work = engine.run(iter_seeds(config.seeds, config.seed_options))
            async with self.batch_progress():
                await until_signalled(work)
            if (
                engine.stats.deferred
            ):  # files are sorted, and the dataset written, once nothing waits
                status = "pending"
            else:
                status = "failed" if engine.stats.failed else "complete"
                store.sort_outputs(self.seed_order())
                dataset_records = store.write_dataset()
            if status == "complete":
                self.journal.clear()
        except EvolError as stopped:
            if not isinstance(stopped, Interrupted):
                status, error = "failed", str(stopped)
            self.end_with(stopped, status, engine, dataset_records, error)
        except BaseException:
            with contextlib.suppress(EvolError):  # what stopped the run matters more
                self.finish(status, engine, dataset_records, error)
            raise
        return self.finish(status, engine, dataset_records, error)

    def progress(self, done: int, total: int, engine: Engine) -> Progress:
        kept, eliminated = self.counts.kept.values(), self.counts.eliminated.values()
        calls = sum(engine.stats.requests.values())
        return Progress(done, total, calls=calls, kept=sum(kept), eliminated=sum(eliminated))

    @property
    def calls_to_repeat(self) -> int | None:
        """What the run before this one had in flight when it stopped (None when it was
        killed: its run.json still says running); journalled replies are replayed for free."""
        previous = self.previous
        if previous is None:
            return 0
        if previous.status == "running" or previous.summary is None:
            return None
        return previous.summary.calls_cut_off

    def resume_line(self, total: int) -> str:
        repeat = self.calls_to_repeat
        calls = (
            f"{repeat} calls to repeat"
            if repeat is not None
            else "calls to repeat unknown (the last run stopped without recording what it had "
            "in flight)"
        )
        return f"resuming {self.config.out}: {self.done_at_start} of {total} steps done, {calls}"

    def end_with(
        self,
        stopped: EvolError,
        status: str,
        engine: Engine,
        dataset_records: int | None,
        error: str | None,
    ) -> NoReturn:
        """Raise `stopped` once run.json says how the run ended, with the summary for `--json`;
        when run.json cannot be written either (a full disk), an error that says so too."""
        manifest = self.manifest(status, engine, dataset_records, error)
        try:
            write_manifest(self.config.out, manifest)
        except StorageError as also:
            unwritten = RunDirError(
                f"{stopped}; and {MANIFEST} was not updated either ({also.strerror}): it still "
                "says what it said before this run"
            )
            unwritten.exit_code, unwritten.summary = stopped.exit_code, summary_of(manifest)
            raise unwritten from stopped
        stopped.summary = summary_of(manifest)
        raise stopped

    def finish(
        self,
        status: str,
        engine: Engine,
        dataset_records: int | None = None,
        error: str | None = None,
    ) -> RunSummary:
        """Write run.json as things stand; returns its summary."""
        manifest = self.manifest(status, engine, dataset_records, error)
        write_manifest(self.config.out, manifest)
        assert manifest.summary is not None  # build_manifest always writes one
        return manifest.summary

    def manifest(
        self, status: str, engine: Engine, dataset_records: int | None, error: str | None
    ) -> Manifest:
        """run.json as things stand."""
        secrets = self.config.backend_settings().secrets()
        facts = RunFacts(
            config=self.config,
            status=status,
            error=secrets.redact(error) if error else None,
            backend_name=self.backend_name,
            models=vars(self.models),
            fingerprint=self.fingerprint,
            scan=self.scan,
            counts=self.counts,
            outputs=self.store.output_sizes(),
            elapsed=time.monotonic() - self.started,
            dataset_records=dataset_records,
            failed=[
                vars(item) | {"error": secrets.redact(item.error)} for item in engine.stats.failed
            ],
            requests=dict(engine.stats.requests),
            retries=dict(engine.stats.retries),
            judged=dict(engine.stats.judged),
            endpoints=_endpoint_stats(self.backend, self.config.base_urls),
            concurrency={
                "ceiling": self.config.in_flight,
                "cuts_on_429": engine.slots.cuts,
                "lowest": engine.slots.lowest,
                "final": int(engine.slots.limit),
            },
            dedup_method=self.pool_method() if self.config.rules.dedup else None,
            waiting=engine.stats.deferred,
            batches=self.batches(),
            resumed=self.previous is not None,
            steps_done_at_start=self.done_at_start,
            calls_to_repeat=self.calls_to_repeat,
            # A batch row cut off here is collected by the next run, not sent again.
            calls_cut_off=0 if _batching(self.backend) else engine.stats.cut_off,
        )
        return build_manifest(facts, self.previous)

    def batches(self) -> list[dict[str, Any]] | None:
        """With a backend that batches (--batch, or a plugin's): every batch of the run, as
        run.json lists it."""
        backend = self.backend
        return [batch.model_dump() for batch in backend.batches()] if _batching(backend) else None

    @contextlib.asynccontextmanager
    async def batch_progress(self) -> AsyncIterator[None]:
        """With a backend that batches: a line each time the batches' states change, since a
        step can wait hours for one."""
        backend = self.backend
        if not _batching(backend):
            yield
            return
        from evol.llm.batch import describe_batches

        shown = ""

        async def watch() -> None:
            nonlocal shown
            while True:
                await asyncio.sleep(min(1.0, self.config.batch_poll_interval))
                line = describe_batches(backend.batches())
                if line != shown:
                    shown = line
                    self.on_info(line)

        watcher = asyncio.ensure_future(watch())
        try:
            yield
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher

    def seed_order(self) -> dict[str, int]:
        """Each seed id's place in the seed file, for ordering the output files."""
        seeds = iter_seeds(self.config.seeds, self.config.seed_options)
        return {seed.id: place for place, seed in enumerate(seeds)}

    def duplicate_pool(self) -> Any:
        """With --dedup: every kept instruction so far and every seed, ready for lookups."""
        if not self.config.rules.dedup:
            return None
        from evol.method.dedup import largest_pool, load_pool  # numpy: only with the rule on

        seeds = (
            (seed.id, seed.instruction)
            for seed in iter_seeds(self.config.seeds, self.config.seed_options)
        )
        largest = largest_pool(self.scan.count, self.config.generations)
        return load_pool(self.config.rules, largest, self.store.kept_instructions(), seeds)

    def pool_method(self) -> str:
        from evol.method.dedup import largest_pool, resolved_method

        largest = largest_pool(self.scan.count, self.config.generations)
        return resolved_method(self.config.rules.dedup_method, largest)


def _batching(backend: ChatBackend) -> TypeGuard[BatchingBackend]:
    return capabilities_of(backend).batchable and isinstance(backend, BatchingBackend)


def _endpoint_stats(backend: ChatBackend, base_urls: list[str]) -> list[dict[str, object]]:
    """Requests and failures per endpoint when there are several (the router counts them)."""
    if capabilities_of(backend).endpoint_stats and isinstance(backend, SeveralEndpoints):
        return backend.endpoint_stats()
    return [{"url": display_url(url)} for url in base_urls]
