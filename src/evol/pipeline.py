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
    BackendError,
    EvolError,
    Interrupted,
    RunDirError,
    StorageError,
    TransientBackendError,
    UsageError,
)
from evol.interrupts import until_signalled
from evol.llm import ChatBackend, missing_key_warning, open_backend
from evol.llm.protocol import BatchingBackend, SeveralEndpoints, capabilities_of
from evol.llm.registry import runs_in_process
from evol.method.ifeval_library import instruction_classes
from evol.method.operations import VERIFIABLE
from evol.method.prompts import PromptSet
from evol.oslimits import open_file_limit
from evol.progress import Progress, ProgressCallback
from evol.rundir.counts import RunCounts
from evol.rundir.fingerprint import Fingerprint
from evol.rundir.journal import CallJournal
from evol.rundir.lineage import LineageIndex
from evol.rundir.manifest import (
    Manifest,
    RunFacts,
    RunSummary,
    build_manifest,
    check_resume,
    is_finished,
    load_manifest,
    record_failed_restart,
    write_manifest,
)
from evol.rundir.store import BATCH_DIR, JOURNAL, MANIFEST, SCORE_BATCH_DIR, RunStore, output_sizes
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
        if _finished_as_recorded(config, seeds_digest)
        else scan_seeds(config.seeds, config.seed_options)
    )
    backend_name, backend = open_backend(
        config.backend,
        config.backend_settings(),
        batch=batch_settings(config),
        ray=config.ray_settings(),
    )
    config = _with_instruction_check(config, backend_name)
    if warning := missing_key_warning(backend_name, config.base_urls, config.api_key is not None):
        info(f"warning: {warning}")
    try:
        _check_open_files(config, backend_name)
        _check_batches(config)
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
            start = _Start(config, backend_name, store, previous, scan, started)
            models = await start.resolve_models(backend)
            print_ = Fingerprint.of(config, seeds_digest, prompts, backend_name, vars(models))
            if previous is not None and start.resuming:
                check_resume(config.out, previous, print_, config)
                if previous.summary and is_finished(previous, config, store.output_sizes()):
                    info(f"{config.out} is complete: nothing to do")
                    return _nothing_to_do(previous.summary)
            recorded: set[str] = set()
            store.scan(also=[lineages.add, lambda data, _reason: recorded.add(data["id"])])
            journal = CallJournal.open(config.out / JOURNAL, recorded)
            scan = scan or scan_seeds(config.seeds, config.seed_options)
            where = (
                f" at {', '.join(map(display_url, config.base_urls))}" if config.base_urls else ""
            )
            info(f"backend {backend_name}{where}, model {_describe(models)}")
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
class _Start:
    """A run directory, locked, before the first question to the backend: what a stop there
    leaves in run.json."""

    config: RunConfig
    backend_name: str
    store: RunStore
    previous: Manifest | None
    scan: SeedScan | None
    started: float

    @property
    def resuming(self) -> bool:
        """The directory holds a run that got as far as asking its backend (a run.json whose
        only news is a stop before that, over no records, holds nothing to go on from)."""
        previous = self.previous
        return previous is not None and (
            previous.fingerprint is not None or any(self.store.output_sizes().values())
        )

    async def resolve_models(self, backend: ChatBackend) -> RoleModels:
        """The model of each role; when the backend cannot say (unreachable, key refused),
        run.json says the run failed and why before the error goes on."""
        try:
            return await _resolve_models(self.config, backend)
        except EvolError as stopped:
            if isinstance(stopped, Interrupted):
                raise
            error = self.config.backend_settings().secrets().redact(str(stopped))
            with contextlib.suppress(StorageError):  # what stopped the run matters more
                stopped.summary = self.record_failure(error)
            raise

    def record_failure(self, error: str) -> dict[str, Any] | None:
        if self.resuming:
            return record_failed_restart(self.config.out, error)
        config = self.config
        facts = RunFacts(
            config=config,
            status="failed",
            error=error,
            backend_name=self.backend_name,
            models=_configured_models(config),
            fingerprint=None,  # no model yet: the next run starts afresh, refusing nothing
            scan=self.scan or scan_seeds(config.seeds, config.seed_options),
            counts=RunCounts(),
            outputs=self.store.output_sizes(),
            elapsed=time.monotonic() - self.started,
        )
        manifest = build_manifest(facts, self.previous)
        write_manifest(config.out, manifest)
        return _summary_of(manifest)


def check_verifiable(config: RunConfig) -> None:
    """Refuse, before any call, what verifiable constraints need and lack: --constraint-ids
    or --answer-n without the operation that draws them, the operation without the `verify`
    extra."""
    if config.constraint_ids is not None and not config.verifiable:
        raise UsageError(
            f"--constraint-ids: only {VERIFIABLE} draws constraints: add --verifiable, or name "
            f"{VERIFIABLE} in --operations"
        )
    if config.answer_n and not config.verifiable:
        raise UsageError(
            f"--answer-n: only records of {VERIFIABLE} draw further answers: add --verifiable, "
            f"or name {VERIFIABLE} in --operations"
        )
    if config.verifiable:
        instruction_classes()  # loads the checkers, or says which extra to install


def _configured_models(config: RunConfig) -> dict[str, str]:
    """The models named by the options, by role (a role left to the server is left out)."""
    named = {
        "evolve": config.evolve_model or config.model,
        "answer": config.answer_model or config.model,
        "judge": config.judge_model or config.model,
    }
    return {role: name for role, name in named.items() if name}


def _summary_of(manifest: Manifest) -> dict[str, Any] | None:
    """The summary of `manifest` as `--json` prints it with an error."""
    return manifest.summary.model_dump(mode="json") if manifest.summary else None


def _nothing_to_do(summary: RunSummary) -> RunSummary:
    """A finished run's summary, as a rerun that found it finished reports it."""
    steps = summary.seeds * (summary.generations + 1)
    return summary.model_copy(
        update={
            "resumed": True,
            "steps": steps,
            "steps_done_at_start": steps,
            "calls_to_repeat": 0,
            "calls_cut_off": 0,
        }
    )


def batch_settings(config: RunConfig) -> Any:
    """With --batch, how the batch backend groups and waits; its state lives in the run.
    Refuses the options a --batch run cannot honour (its dry run asks too)."""
    if not config.batch:
        return None
    if config.rpm or config.tpm:
        raise UsageError(
            "--rpm and --tpm pace live requests; the Batch API has limits of its own: "
            "drop them with --batch"
        )
    return config.batch_settings_in(config.out / BATCH_DIR)


def _check_batches(config: RunConfig) -> None:
    """Refuse what would pay again for rows that the run's batches hold or still run: a live
    resume of a run that has batches, and --overwrite while some (or some of `evol score
    --batch`) have not ended."""
    from evol.llm.batch import RecordedBatches

    if config.overwrite:
        scoring = RecordedBatches.of(config.out / SCORE_BATCH_DIR)
        if scoring.running:
            raise UsageError(
                f"{config.out}: batches of `evol score --batch` on this run are still running "
                f"({scoring.some_running()}) and are paid for: collect them with `evol score "
                "--batch` before --overwrite"
            )
    if config.batch and not config.overwrite:
        return
    batches = RecordedBatches.of(config.out / BATCH_DIR)
    if config.overwrite:
        if batches.running:
            raise UsageError(
                f"{config.out}: batches of this run are still running "
                f"({batches.some_running()}) and are paid for: collect them with --batch (or "
                "cancel them with the provider, then run once with --batch to see them end) "
                "before --overwrite"
            )
        return
    if batches:
        held = (
            f"batches of it are still running ({batches.some_running()})"
            if batches.running
            else "its batches hold answers the run may not have used yet"
        )
        raise UsageError(
            f"{config.out}: this run sends its requests through the Batch API and {held}: "
            "resume it with --batch (without it they would be paid again), or start afresh "
            "with --overwrite"
        )


# Open files a live run holds beside its connections: Python's own, the event loop's, the lock,
# the journal, eliminated.jsonl (a run with one connection and 3 record files needs ~20).
_FILES_BESIDE_CONNECTIONS = 16


def _with_instruction_check(config: RunConfig, backend_name: str) -> RunConfig:
    """`config` with the judge's instruction check decided: on unless the user said, or the
    judge is the embedded default model (SmolLM2-135M calls every rewrite no instruction)."""
    if config.rules.instruction_check is not None:
        return config
    embedded_default = runs_in_process(backend_name) and config.model_path is None
    rules = config.rules.model_copy(update={"instruction_check": not embedded_default})
    return config.model_copy(update={"rules": rules})


def _check_open_files(config: RunConfig, backend_name: str) -> None:
    """Refuse, before any call, a run that would reach the open-file limit: every live request
    in flight holds a connection, and each generation's record file stays open."""
    limit = open_file_limit()
    # No connection per request: a batch, Ray, or a model in this process.
    if limit is None or config.batch or config.engine == "ray" or runs_in_process(backend_name):
        return
    needed = config.concurrency + config.generations + _FILES_BESIDE_CONNECTIONS
    if limit < needed:
        raise UsageError(
            f"too many open files: the limit is {limit} (ulimit -n) and --concurrency "
            f"{config.concurrency} needs about {needed}: lower --concurrency or raise the limit"
        )


def _finished_as_recorded(config: RunConfig, seeds_digest: str) -> bool:
    """run.json says this seed file's run is complete and its files are as it left them
    (checked again under the lock)."""
    if config.overwrite:
        return False
    try:
        previous = load_manifest(config.out, required=False)
    except RunDirError:
        return False
    return (
        previous is not None
        and previous.fingerprint is not None
        and previous.fingerprint.seeds_digest == seeds_digest
        and is_finished(previous, config, output_sizes(config.out))
    )


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
            unwritten.exit_code, unwritten.summary = stopped.exit_code, _summary_of(manifest)
            raise unwritten from stopped
        stopped.summary = _summary_of(manifest)
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
            calls_cut_off=0 if self.config.batch else engine.stats.cut_off,
        )
        return build_manifest(facts, self.previous)

    def batches(self) -> list[dict[str, Any]] | None:
        """With --batch: every batch of the run, as run.json lists it."""
        if not self.config.batch:
            return None
        backend = self.backend
        return [batch.model_dump() for batch in backend.batches()] if _batching(backend) else []

    @contextlib.asynccontextmanager
    async def batch_progress(self) -> AsyncIterator[None]:
        """With --batch: a line each time the batches' states change, since a step can
        wait hours for one."""
        backend = self.backend
        if not self.config.batch or not _batching(backend):
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
        from evol.method.dedup import load_pool  # numpy loads only when the rule is on

        seeds = (
            (seed.id, seed.instruction)
            for seed in iter_seeds(self.config.seeds, self.config.seed_options)
        )
        largest = self.scan.count * (self.config.generations + 1)
        return load_pool(self.config.rules, largest, self.store.kept_instructions(), seeds)

    def pool_method(self) -> str:
        from evol.method.dedup import resolved_method

        largest = self.scan.count * (self.config.generations + 1)
        return resolved_method(self.config.rules.dedup_method, largest)


def _batching(backend: ChatBackend) -> TypeGuard[BatchingBackend]:
    return capabilities_of(backend).batchable and isinstance(backend, BatchingBackend)


def _endpoint_stats(backend: ChatBackend, base_urls: list[str]) -> list[dict[str, object]]:
    """Requests and failures per endpoint when there are several (the router counts them)."""
    if capabilities_of(backend).endpoint_stats and isinstance(backend, SeveralEndpoints):
        return backend.endpoint_stats()
    return [{"url": display_url(url)} for url in base_urls]


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
