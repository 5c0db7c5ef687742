"""What a run checks before its first paid call.

The options that verifiable constraints and --batch need, the batches a resume or --overwrite
would pay for again, the open-file limit, and whether the judge checks for an instruction: a
bad input costs nothing and touches no earlier output.
"""

from __future__ import annotations

import os
from typing import Any

from evol.config import RunConfig
from evol.errors import UsageError
from evol.llm.registry import instruction_check_default, runs_in_process
from evol.method.ifeval_library import instruction_classes
from evol.method.operations import VERIFIABLE
from evol.oslimits import open_file_limit
from evol.rundir.layout import BATCH_DIR, SCORE_BATCH_DIR


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


def batch_settings(config: RunConfig) -> Any:
    """With --batch, how the batch backend groups and waits; its state lives in the run."""
    return config.batch_settings_in(config.out / BATCH_DIR)


def check_batches(config: RunConfig) -> None:
    """Refuse what would pay again for rows that the run's batches hold or still run: a live
    resume of a run that has batches, and --overwrite while some (or some of `evol score
    --batch`) have not ended."""
    if not any(os.path.lexists(config.out / name) for name in (BATCH_DIR, SCORE_BATCH_DIR)):
        return  # none recorded; a live run need not load the Batch API's client (~0.4 s)
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


def with_instruction_check(config: RunConfig, backend_name: str) -> RunConfig:
    """`config` with the judge's instruction check decided: on unless the user said, or the
    backend's class says otherwise for its settings (the local backend's embedded default
    model, SmolLM2-135M, calls every rewrite no instruction)."""
    if config.rules.instruction_check is not None:
        return config
    checks = instruction_check_default(backend_name, config.backend_settings())
    rules = config.rules.model_copy(update={"instruction_check": checks})
    return config.model_copy(update={"rules": rules})


def check_open_files(config: RunConfig, backend_name: str) -> None:
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
