"""`evol optimize`: tune the evolving method to your model and seeds (Auto Evol-Instruct)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from evol.cli import options as shared
from evol.cli import run_options as own
from evol.cli.command import METHOD_PANEL, MODEL_PANEL, OUTPUT_PANEL
from evol.cli.options import CONNECTION, config_fields, env
from evol.cli.output import echo_outside, end_with, user_errors
from evol.cli.progress_display import with_progress
from evol.cli.run import run_tuned
from evol.method.operations import parse_weights

# The optimizer loads when `evol optimize` runs, not when any other command starts.


def _loop_option(help: str, **limits: float) -> typer.models.OptionInfo:
    return typer.Option(help=help, rich_help_panel=METHOD_PANEL, **limits)


DevSize = Annotated[int, _loop_option("Seeds drawn (reproducibly, from --seed) to test on.", min=1)]
Rounds = Annotated[int, _loop_option("Generations of each evaluation run.", min=1, max=100)]
Steps = Annotated[int, _loop_option("Optimization steps at most.", min=1)]
Candidates = Annotated[int, _loop_option("Methods the optimizer proposes per step (m).", min=1)]
AnalysisBatch = Annotated[
    int, _loop_option("Failed evolutions per analysis call of the optimizer.", min=1)
]
Confidence = Annotated[
    float,
    _loop_option(
        "A candidate is accepted when its failure rate is lower at this confidence "
        "(Bonferroni-corrected over the step's candidates).",
        min=0.5,
        max=0.9999,
    ),
]
OptimizerModel = Annotated[
    str | None,
    typer.Option(
        envvar=env("optimizer_model"),
        help="Model that analyses failures and rewrites the method (default: --model).",
        rich_help_panel=MODEL_PANEL,
    ),
]


def optimize(
    ctx: typer.Context,
    seeds: own.Seeds,
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            "-o",
            envvar=env("out"),
            help="Directory of the optimization (resumed if it exists).",
            rich_help_panel=OUTPUT_PANEL,
        ),
    ],
    dev_size: DevSize = 100,
    rounds: Rounds = 1,
    steps: Steps = 10,
    candidates: Candidates = 3,
    analysis_batch: AnalysisBatch = 10,
    confidence: Confidence = 0.95,
    seed: own.Seed = 0,
    operations: own.Operations = "",
    prompts: shared.Prompts = None,
    seed_format: shared.SeedFormat = None,
    instruction_field: shared.InstructionField = None,
    input_field: shared.InputField = None,
    output_field: shared.OutputField = None,
    skip_invalid: own.SkipInvalid = False,
    backend: shared.Backend = CONNECTION.backend,
    base_url: shared.BaseUrl = None,
    api_key: shared.ApiKey = None,
    model: own.Model = None,
    evolve_model: own.EvolveModel = None,
    answer_model: own.AnswerModel = None,
    judge_model: own.JudgeModel = None,
    optimizer_model: OptimizerModel = None,
    model_path: shared.ModelPath = CONNECTION.model_path,
    batch: shared.Batch = CONNECTION.batch,
    batch_max_requests: shared.BatchMaxRequests = CONNECTION.batch_max_requests,
    batch_poll_interval: shared.BatchPollInterval = CONNECTION.batch_poll_interval,
    batch_no_wait: shared.BatchNoWait = CONNECTION.batch_no_wait,
    timeout: shared.Timeout = CONNECTION.timeout,
    concurrency: shared.Concurrency = CONNECTION.concurrency,
    rpm: shared.Rpm = CONNECTION.rpm,
    tpm: shared.Tpm = CONNECTION.tpm,
    max_retries: shared.MaxRetries = CONNECTION.max_retries,
    retry_max_wait: shared.RetryMaxWait = CONNECTION.retry_max_wait,
    max_response_mb: shared.MaxResponseMb = CONNECTION.max_response_bytes / shared.MB,
    quiet: own.Quiet = False,
    as_json: shared.Json = False,
    debug: shared.Debug = False,
    dry_run: own.DryRun = False,
    price_in: shared.PriceIn = None,
    price_out: shared.PriceOut = None,
) -> None:
    """Tune the evolving method to your model and seeds (Auto Evol-Instruct); run it again to
    resume. The best method is written to OUT/prompts, for evol run --prompts.

    Every option can also be set as EVOL_<OPTION>, e.g. EVOL_DEV_SIZE=50.
    """
    from evol.optimize.config import OptimizeConfig, format_optimize_summary
    from evol.optimize.loop import aoptimize
    from evol.optimize.plan import format_optimize_plan, plan_optimize

    with user_errors(debug, as_json=as_json):
        config = OptimizeConfig(
            **config_fields(
                ctx,
                OptimizeConfig,
                operations=parse_weights(ctx.params["operations"]),
                prompts_dir=ctx.params["prompts"],
            )
        )
        if dry_run:
            plan = plan_optimize(config, price_in=price_in, price_out=price_out)
            shown = plan.model_dump_json() if as_json else format_optimize_plan(plan)
            echo_outside(shown, as_json=as_json)
            return
        summary = with_progress(
            quiet,
            lambda on_progress, on_info: run_tuned(
                aoptimize(config, on_progress=on_progress, on_info=on_info)
            ),
        )
    end_with(summary, format_optimize_summary(summary), quiet=quiet, as_json=as_json)
