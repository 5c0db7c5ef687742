"""A run's start, before the engine: the model of each role resolved, a stop before the first
call recorded in run.json, a finished run found finished."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Any

from evol.config import RunConfig
from evol.engine import RoleModels
from evol.errors import (
    BackendError,
    EvolError,
    Interrupted,
    RunDirError,
    StorageError,
    TransientBackendError,
)
from evol.llm import ChatBackend
from evol.rundir.counts import RunCounts
from evol.rundir.layout import output_sizes
from evol.rundir.manifest import (
    Manifest,
    RunFacts,
    RunSummary,
    build_manifest,
    is_finished,
    load_manifest,
    record_failed_restart,
    write_manifest,
)
from evol.rundir.store import RunStore
from evol.seeds import SeedScan, scan_seeds


@dataclass
class RunStart:
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
            return await role_models(self.config, backend)
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
        return summary_of(manifest)


def _configured_models(config: RunConfig) -> dict[str, str]:
    """The models named by the options, by role (a role left to the server is left out)."""
    named = {
        "evolve": config.evolve_model or config.model,
        "answer": config.answer_model or config.model,
        "judge": config.judge_model or config.model,
    }
    return {role: name for role, name in named.items() if name}


def summary_of(manifest: Manifest) -> dict[str, Any] | None:
    """The summary of `manifest` as `--json` prints it with an error."""
    return manifest.summary.model_dump(mode="json") if manifest.summary else None


def nothing_to_do(summary: RunSummary) -> RunSummary:
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


def finished_as_recorded(config: RunConfig, seeds_digest: str) -> bool:
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


async def role_models(config: RunConfig, backend: ChatBackend) -> RoleModels:
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


def describe_models(models: RoleModels) -> str:
    names = {models.evolve, models.answer, models.judge}
    if len(names) == 1:
        return models.evolve
    return f"evolve {models.evolve}, answer {models.answer}, judge {models.judge}"
