"""`evol score` and `evol select`: rate a run's records, then pick the best of them."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from evol.cli import options as shared
from evol.cli.command import MODEL_PANEL, OUTPUT_PANEL, SCORES_PANEL
from evol.cli.options import CONNECTION, config_fields, env
from evol.cli.output import echo_outside, exit_for, user_errors
from evol.cli.progress_display import with_progress

if TYPE_CHECKING:
    from evol.quality.score_plan import ScorePlan
    from evol.quality.scoring import ScoreConfig

# Each command imports the library code it calls when it runs: `evol run`, which needs none of
# it, then starts without it (imports are most of the CPU a run spends before its first request).


def plan_scoring(
    config: ScoreConfig, *, price_in: float | None = None, price_out: float | None = None
) -> ScorePlan:
    """`evol.quality.score_plan.plan_scoring`, loaded when a dry run asks for it."""
    from evol.quality.score_plan import plan_scoring as plan

    return plan(config, price_in=price_in, price_out=price_out)


def score(
    ctx: typer.Context,
    # Typer parses each option into ctx.params; config_fields turns them into the ScoreConfig.
    run_dir: shared.RunDir,
    difficulty: Annotated[
        bool,
        typer.Option(
            "--difficulty/--no-difficulty",
            envvar=env("difficulty"),
            help="Rate each instruction's difficulty, 1 to 10.",
            rich_help_panel=SCORES_PANEL,
        ),
    ] = True,
    complexity: Annotated[
        bool,
        typer.Option(
            "--complexity/--no-complexity",
            envvar=env("complexity"),
            help="Rank each lineage's versions against each other in one call, 1 to N.",
            rich_help_panel=SCORES_PANEL,
        ),
    ] = True,
    answers: Annotated[
        bool,
        typer.Option(
            "--answers",
            envvar=env("answers"),
            help="Also rate each answer 1 to 10 (helpfulness, relevance, accuracy, depth).",
            rich_help_panel=SCORES_PANEL,
        ),
    ] = False,
    retry_missing: Annotated[
        bool,
        typer.Option(
            "--retry-missing",
            help="Ask again for the scores recorded as missing.",
            rich_help_panel=SCORES_PANEL,
        ),
    ] = False,
    metrics: Annotated[
        bool,
        typer.Option(
            "--metrics/--no-metrics",
            help="Measure diversity and drift per generation (CPU only, no model).",
            rich_help_panel=SCORES_PANEL,
        ),
    ] = True,
    against: Annotated[
        list[Path] | None,
        typer.Option(
            "--against",
            help="Evaluation set (JSONL, JSON or CSV of prompts) to check for contamination; "
            "repeatable; needs no model.",
            rich_help_panel=SCORES_PANEL,
        ),
    ] = None,
    ngram: Annotated[
        int,
        typer.Option(
            min=1,
            max=1000,
            help="Words in a row a record must share with an evaluation item.",
            rich_help_panel=SCORES_PANEL,
        ),
    ] = 13,
    prompts: Annotated[
        Path | None,
        typer.Option(
            "--prompts",
            envvar=env("prompts"),
            help="Directory of templates overriding the shipped ones (score_*.txt).",
            rich_help_panel=SCORES_PANEL,
        ),
    ] = None,
    backend: shared.Backend = CONNECTION.backend,
    base_url: shared.BaseUrl = None,
    api_key: shared.ApiKey = None,
    model: Annotated[
        str | None,
        typer.Option(
            envvar=env("score_model"),
            help="Scoring model, also EVOL_SCORE_MODEL (default: the server's only model).",
            rich_help_panel=MODEL_PANEL,
        ),
    ] = None,
    model_path: shared.ModelPath = CONNECTION.model_path,
    timeout: shared.Timeout = CONNECTION.timeout,
    concurrency: shared.Concurrency = CONNECTION.concurrency,
    rpm: shared.Rpm = CONNECTION.rpm,
    tpm: shared.Tpm = CONNECTION.tpm,
    max_retries: shared.MaxRetries = CONNECTION.max_retries,
    retry_max_wait: shared.RetryMaxWait = CONNECTION.retry_max_wait,
    max_response_mb: shared.MaxResponseMb = CONNECTION.max_response_bytes / shared.MB,
    batch: shared.Batch = CONNECTION.batch,
    batch_max_requests: shared.BatchMaxRequests = CONNECTION.batch_max_requests,
    batch_poll_interval: shared.BatchPollInterval = CONNECTION.batch_poll_interval,
    batch_no_wait: shared.BatchNoWait = CONNECTION.batch_no_wait,
    price_in: shared.PriceIn = None,
    price_out: shared.PriceOut = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Print the calls to make and an estimated cost; call nothing.",
            rich_help_panel=OUTPUT_PANEL,
        ),
    ] = False,
    quiet: Annotated[
        bool,
        typer.Option(
            "--quiet", "-q", help="No progress bar or messages.", rich_help_panel=OUTPUT_PANEL
        ),
    ] = False,
    as_json: shared.Json = False,
    debug: shared.Debug = False,
) -> None:
    """Rate a run's records with an LLM, measure diversity and drift, check contamination.

    The model, connection and score options can also be set as EVOL_<OPTION>.
    """
    from evol.quality.score_plan import format_plan as format_score_plan
    from evol.quality.score_summary import format_summary as format_score_summary
    from evol.quality.scoring import ScoreConfig, score_run

    with user_errors(debug, as_json=as_json):
        config = ScoreConfig(
            **config_fields(
                ctx,
                ScoreConfig,
                quality=answers,
                against=list(against or []),
                prompts_dir=prompts,
            )
        )
        if dry_run:
            plan = plan_scoring(config, price_in=price_in, price_out=price_out)
            echo_outside(
                plan.model_dump_json() if as_json else format_score_plan(plan), as_json=as_json
            )
            return
        summary = with_progress(
            quiet,
            lambda on_progress, on_info: score_run(
                config, on_progress=on_progress, on_info=on_info
            ),
        )
    echo_outside(
        summary.model_dump_json() if as_json else format_score_summary(summary), as_json=as_json
    )
    exit_for(summary.status)


def select(
    run_dir: shared.RunDir,
    budget: Annotated[int, typer.Option(min=1, help="Records to pick at most.")],
    out: shared.OutFile,
    shape: shared.Shape = shared.ExportShape.alpaca,
    similarity: Annotated[
        float,
        typer.Option(
            min=0.01,
            max=1.0,
            help="ROUGE-L F1 to an instruction already picked at which a record is passed over.",
        ),
    ] = 0.7,
    drop_contaminated: Annotated[
        bool,
        typer.Option(
            "--drop-contaminated", help="Leave out the records that evol score --against flagged."
        ),
    ] = False,
    as_json: shared.Json = False,
) -> None:
    """Pick the best N records of a scored run (complexity x quality), skipping near repeats."""
    from evol.quality.selection import SelectConfig, select_records
    from evol.quality.selection import format_summary as format_select_summary

    with user_errors(False, as_json=as_json):
        summary = select_records(
            SelectConfig(
                run_dir=run_dir,
                out=out,
                budget=budget,
                similarity=similarity,
                shape=shape.value,
                drop_contaminated=drop_contaminated,
            )
        )
    echo_outside(
        summary.model_dump_json() if as_json else format_select_summary(summary), as_json=as_json
    )
