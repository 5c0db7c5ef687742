"""`evol run`, `evol merge` and `evol validate`: make a run, join its shards, check its seeds."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Coroutine
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from evol.cli import options as shared
from evol.cli import rule_options as rules
from evol.cli import run_options as own
from evol.cli.options import CONNECTION
from evol.cli.output import echo_outside, end_with, user_errors
from evol.cli.progress_display import with_progress
from evol.pipeline import arun
from evol.planning import format_plan, plan_run
from evol.rundir.manifest import format_summary
from evol.seeds import SeedOptions, describe_seeds, format_report

T = TypeVar("T")


def run(
    ctx: typer.Context,
    # Typer parses each option into ctx.params; run_config turns them into the RunConfig.
    seeds: own.Seeds,
    out: own.Out,
    generations: own.Generations = 4,
    seed: own.Seed = 0,
    operations: own.Operations = "",
    verifiable: own.Verifiable = False,
    constraint_ids: own.ConstraintIds = None,
    answer_attempts: own.AnswerAttempts = 3,
    answer_n: own.AnswerN = False,
    seed_format: shared.SeedFormat = None,
    instruction_field: shared.InstructionField = None,
    input_field: shared.InputField = None,
    output_field: shared.OutputField = None,
    skip_invalid: own.SkipInvalid = False,
    limit: own.Limit = None,
    shard: own.ShardSpec = None,
    prompts: shared.Prompts = None,
    answer_seeds: own.AnswerSeeds = True,
    judge: rules.Judge = True,
    sorry_check: rules.SorryCheck = True,
    stopword_check: rules.StopwordCheck = True,
    leak_check: rules.LeakCheck = True,
    growth_check: rules.GrowthCheck = True,
    signal_check: rules.SignalCheck = True,
    dedup: rules.Dedup = False,
    dedup_method: rules.DedupMethod = rules.DedupChoice.auto,
    dedup_threshold: rules.DedupThreshold = 0.7,
    backend: shared.Backend = CONNECTION.backend,
    base_url: shared.BaseUrl = None,
    api_key: shared.ApiKey = None,
    model: own.Model = None,
    evolve_model: own.EvolveModel = None,
    answer_model: own.AnswerModel = None,
    judge_model: own.JudgeModel = None,
    model_path: shared.ModelPath = CONNECTION.model_path,
    temperature: own.Temperature = None,
    max_tokens: own.MaxTokens = None,
    evolve_temperature: own.EvolveTemperature = None,
    evolve_max_tokens: own.EvolveMaxTokens = None,
    answer_temperature: own.AnswerTemperature = None,
    answer_max_tokens: own.AnswerMaxTokens = None,
    judge_temperature: own.JudgeTemperature = None,
    judge_max_tokens: own.JudgeMaxTokens = None,
    system_prompt: own.SystemPrompt = None,
    parallel_judge: own.ParallelJudge = False,
    instruction_check: own.InstructionCheck = None,
    answer_check: own.AnswerCheck = None,
    batch: shared.Batch = CONNECTION.batch,
    batch_max_requests: shared.BatchMaxRequests = CONNECTION.batch_max_requests,
    batch_poll_interval: shared.BatchPollInterval = CONNECTION.batch_poll_interval,
    batch_no_wait: shared.BatchNoWait = CONNECTION.batch_no_wait,
    engine: shared.Engine = shared.EngineChoice.live,
    ray_address: shared.RayAddress = CONNECTION.ray_address,
    ray_model: shared.RayModel = CONNECTION.ray_model,
    ray_tp: shared.RayTp = CONNECTION.ray_tp,
    ray_replicas: shared.RayReplicas = CONNECTION.ray_replicas,
    ray_batch_size: shared.RayBatchSize = CONNECTION.ray_batch_size,
    timeout: shared.Timeout = CONNECTION.timeout,
    concurrency: shared.Concurrency = CONNECTION.concurrency,
    rpm: shared.Rpm = CONNECTION.rpm,
    tpm: shared.Tpm = CONNECTION.tpm,
    max_retries: shared.MaxRetries = CONNECTION.max_retries,
    retry_max_wait: shared.RetryMaxWait = CONNECTION.retry_max_wait,
    max_response_mb: shared.MaxResponseMb = CONNECTION.max_response_bytes / shared.MB,
    overwrite: own.Overwrite = False,
    quiet: own.Quiet = False,
    as_json: shared.Json = False,
    debug: shared.Debug = False,
    dry_run: own.DryRun = False,
    price_in: shared.PriceIn = None,
    price_out: shared.PriceOut = None,
    config_file: own.ConfigFile = None,
) -> None:
    """Evolve SEEDS through N generations into --out (run it again to resume).

    Every option can also be set as EVOL_<OPTION>, e.g. EVOL_GENERATIONS=4.
    """
    with user_errors(debug, as_json=as_json):
        config = own.run_config(ctx)
        if dry_run:
            plan = plan_run(config, price_in=price_in, price_out=price_out)
            echo_outside(plan.model_dump_json() if as_json else format_plan(plan), as_json=as_json)
            return
        summary = with_progress(
            quiet,
            lambda on_progress, on_info: run_tuned(
                arun(config, on_progress=on_progress, on_info=on_info)
            ),
        )
    end_with(summary, format_summary(summary), quiet=quiet, as_json=as_json)


def merge(
    run_dirs: Annotated[
        list[Path],
        typer.Argument(help="The run directories of evol run --shard i/N, one per shard."),
    ],
    out: Annotated[
        Path,
        typer.Option("--out", "-o", help="Run directory to write: new or empty (or --overwrite)."),
    ],
    partial: Annotated[
        bool,
        typer.Option("--partial", help="Merge even if shards are missing (run.json lists them)."),
    ] = False,
    seeds: Annotated[
        Path | None,
        typer.Option(
            "--seeds",
            help="The seed file, if it is no longer where the shards read it (it gives the order).",
        ),
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace the run that --out holds.")] = False,
    as_json: shared.Json = False,
) -> None:
    """Join the shards of one run (evol run --shard i/N) into one run directory."""
    from evol.dataset.merge import MergeConfig, merge_runs
    from evol.dataset.merge import format_summary as format_merge_summary

    with user_errors(False, as_json=as_json):
        summary = merge_runs(
            MergeConfig(
                run_dirs=run_dirs, out=out, partial=partial, seeds=seeds, overwrite=overwrite
            )
        )
    echo_outside(
        summary.model_dump_json() if as_json else format_merge_summary(summary), as_json=as_json
    )


def validate(
    seeds: Annotated[Path, typer.Argument(help="Seed file to check.")],
    seed_format: shared.SeedFormat = None,
    instruction_field: shared.InstructionField = None,
    input_field: shared.InputField = None,
    output_field: shared.OutputField = None,
    skip_invalid: Annotated[
        bool,
        typer.Option(
            "--skip-invalid/--no-skip-invalid",
            envvar=shared.env("skip_invalid"),
            help="Report invalid rows instead of stopping at the first.",
        ),
    ] = False,
    as_json: shared.Json = False,
) -> None:
    """Check a seed file the way evol run reads it, and say what it holds."""
    options = SeedOptions(
        format=seed_format.value if seed_format else None,
        instruction_field=instruction_field,
        input_field=input_field,
        output_field=output_field,
        skip_invalid=skip_invalid,
    )
    with user_errors(False):
        report = describe_seeds(seeds, options)
    echo_outside(report.model_dump_json() if as_json else format_report(report), as_json=as_json)


def run_tuned(work: Coroutine[Any, Any, T]) -> T:
    """Run the pipeline with this process tuned for it (the library leaves the process alone).

    A run makes ~10 short-lived objects a call; the default GC thresholds would run a full
    collection over the long-lived index every few thousand calls. uvloop, where it is built
    (not on Windows), costs less CPU a call than asyncio's loop.
    """
    thresholds = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(100_000, 50, 100)
    try:
        try:
            import uvloop
        except ImportError:
            return asyncio.run(work)
        return uvloop.run(work)
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()
