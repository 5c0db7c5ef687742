"""The `evol` command: parse options, build one config, call one library function.

Every option can also come from the environment as EVOL_<OPTION> (EVOL_GENERATIONS=4, ...);
OPENAI_API_KEY and OPENAI_BASE_URL are read as the OpenAI SDK reads them.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import shutil
import sys
import threading
import time
import tomllib
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import Any, TextIO, TypeVar

import typer
from pydantic import SecretStr, ValidationError
from tqdm import tqdm

from evol.command import (
    BATCH_PANEL,
    LIMITS_PANEL,
    METHOD_PANEL,
    MODEL_PANEL,
    OUTPUT_PANEL,
    RULES_PANEL,
    SAMPLING_PANEL,
    SCORES_PANEL,
    SEEDS_PANEL,
    EvolCommand,
)
from evol.config import RoleParams, RunConfig
from evol.constraints import parse_ids
from evol.elimination import EliminationRules
from evol.errors import OUT_OF_RESOURCES, EvolError, UsageError, storage_failure
from evol.export import (
    export_run,
    format_export,
    parse_generations,
    parse_split,
    status_warning,
)
from evol.manifest import RunSummary
from evol.merge import MergeConfig, merge_runs
from evol.merge import format_summary as format_merge_summary
from evol.operations import parse_weights
from evol.pipeline import arun
from evol.planning import format_plan, plan_run
from evol.progress import Progress, format_progress
from evol.prompts import PROMPT_NAMES, PromptSet
from evol.report import write_report
from evol.scoring import ScoreConfig, plan_scoring, score_run
from evol.scoring import format_plan as format_score_plan
from evol.scoring import format_summary as format_score_summary
from evol.seed_formats import EXTENSIONS
from evol.seeds import SeedOptions, Shard, describe_seeds, format_report
from evol.selection import SelectConfig, select_records
from evol.selection import format_summary as format_select_summary
from evol.show import SHOWN_CHARS, format_lineage, lineage
from evol.stats import format_stats, run_stats
from evol.terminal import json_printable, printable
from evol.verification import format_verify, verify_dataset
from evol.version import __version__

app = typer.Typer(
    help="Evolve seed instructions into a larger, harder instruction dataset (Evol-Instruct).",
    no_args_is_help=True,
    add_completion=False,
    # Click's plain help: a flag reads "--shuffle / --no-shuffle", not "--shuffle <bool>".
    rich_markup_mode=None,
    pretty_exceptions_show_locals=False,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
prompts_app = typer.Typer(
    help="List and show the prompt templates a run uses.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(prompts_app, name="prompts")

T = TypeVar("T")
PENDING_EXIT = 3  # evol run --batch-no-wait: batches are pending; run the same command again


class DedupChoice(StrEnum):
    auto = "auto"
    rouge_l = "rouge-l"
    minhash = "minhash"


class SeedFileFormat(StrEnum):
    jsonl = "jsonl"
    json = "json"
    csv = "csv"
    tsv = "tsv"
    text = "text"
    parquet = "parquet"


def _env(name: str) -> str:
    return f"EVOL_{name.upper().replace('-', '_')}"


# Options that several commands take, declared once.
SEED_FORMAT_OPTION = typer.Option(
    None,
    "--format",
    envvar=_env("format"),
    help="Seed file format (default: by extension).",
    rich_help_panel=SEEDS_PANEL,
)
INSTRUCTION_FIELD_OPTION = typer.Option(
    None,
    "--instruction-field",
    "--field",
    envvar=[_env("instruction_field"), _env("field")],
    help="Dotted path of the instruction, e.g. conversations.0.value (default: by the row's "
    "shape).",
    rich_help_panel=SEEDS_PANEL,
)
INPUT_FIELD_OPTION = typer.Option(
    None,
    "--input-field",
    envvar=_env("input_field"),
    help="Dotted path of the input (default: by the row's shape).",
    rich_help_panel=SEEDS_PANEL,
)
OUTPUT_FIELD_OPTION = typer.Option(
    None,
    "--output-field",
    envvar=_env("output_field"),
    help="Dotted path of the output (default: by the row's shape).",
    rich_help_panel=SEEDS_PANEL,
)
# The connection options `run` and `score` share.
BACKEND_OPTION = typer.Option(
    None,
    envvar=_env("backend"),
    help="openai, local or a plugin (default: openai if configured, else local).",
    rich_help_panel=MODEL_PANEL,
)
API_KEY_OPTION = typer.Option(
    None,
    envvar=[_env("api_key"), "OPENAI_API_KEY"],
    show_default=False,
    help="API key (default: $OPENAI_API_KEY, which is safer than this option).",
    rich_help_panel=MODEL_PANEL,
)
BATCH_OPTION = typer.Option(
    False,
    "--batch",
    envvar=_env("batch"),
    help="Send requests through the OpenAI Batch API: half price, up to 24 h a step; a "
    "rerun re-attaches to its batches.",
    rich_help_panel=BATCH_PANEL,
)
BATCH_MAX_REQUESTS_OPTION = typer.Option(
    50_000,
    min=1,
    envvar=_env("batch_max_requests"),
    help="Requests per batch file (also split at 200 MB).",
    rich_help_panel=BATCH_PANEL,
)
BATCH_POLL_INTERVAL_OPTION = typer.Option(
    60.0,
    min=0.001,
    envvar=_env("batch_poll_interval"),
    help="Seconds between polls.",
    rich_help_panel=BATCH_PANEL,
)
BATCH_NO_WAIT_OPTION = typer.Option(
    False,
    "--batch-no-wait",
    envvar=_env("batch_no_wait"),
    help="Implies --batch: submit what is due, exit 3 while batches are pending; rerun to go on.",
    rich_help_panel=BATCH_PANEL,
)

TIMEOUT_OPTION = typer.Option(
    120.0,
    envvar=_env("timeout"),
    help="Seconds a request may take before a retry.",
    rich_help_panel=LIMITS_PANEL,
)
CONCURRENCY_OPTION = typer.Option(
    16,
    min=1,
    envvar=_env("concurrency"),
    help="Requests in flight at most (halved on 429, then grown back).",
    rich_help_panel=LIMITS_PANEL,
)
MAX_RETRIES_OPTION = typer.Option(
    5,
    min=0,
    envvar=_env("max_retries"),
    help="Retries of a 429, 5xx or timeout.",
    rich_help_panel=LIMITS_PANEL,
)
BASE_URL_OPTION = typer.Option(
    None,
    "--base-url",
    envvar=[_env("base_url"), "OPENAI_BASE_URL"],
    help="OpenAI-compatible endpoint, e.g. http://localhost:8000/v1 (default: "
    "$OPENAI_BASE_URL); repeat it to spread requests over servers.",
    rich_help_panel=MODEL_PANEL,
)
MODEL_PATH_OPTION = typer.Option(
    None,
    envvar=_env("model_path"),
    help="GGUF file for the local backend (default: SmolLM2-135M-Instruct).",
    rich_help_panel=MODEL_PANEL,
)
RETRY_MAX_WAIT_OPTION = typer.Option(
    60.0,
    min=0.001,
    envvar=_env("retry_max_wait"),
    help="Longest wait between retries, in seconds, whatever a Retry-After asks.",
    rich_help_panel=LIMITS_PANEL,
)
MAX_RESPONSE_MB_OPTION = typer.Option(
    16.0,
    min=0.001,
    envvar=_env("max_response_mb"),
    help="Largest reply body (decompressed) or batch row, in MB; a larger one is retried.",
    rich_help_panel=LIMITS_PANEL,
)
PRICE_IN_OPTION = typer.Option(
    None,
    min=0,
    envvar=_env("price_in"),
    help="USD per 1M prompt tokens (default: built-in table).",
    rich_help_panel=OUTPUT_PANEL,
)
PRICE_OUT_OPTION = typer.Option(
    None,
    min=0,
    envvar=_env("price_out"),
    help="USD per 1M completion tokens (default: built-in table).",
    rich_help_panel=OUTPUT_PANEL,
)
RUN_DIR_ARGUMENT = typer.Argument(..., help="A run directory (the --out of evol run).")


def ROLE_TEMPERATURE_OPTION(role: str, default: str) -> Any:  # noqa: N802 (an option, like the others)
    return typer.Option(
        None,
        min=0,
        max=2,
        envvar=_env(f"{role}_temperature"),
        help=f"{role.capitalize()} temperature (default: {default}).",
        rich_help_panel=SAMPLING_PANEL,
    )


def ROLE_MAX_TOKENS_OPTION(role: str, default: str) -> Any:  # noqa: N802
    return typer.Option(
        None,
        min=1,
        envvar=_env(f"{role}_max_tokens"),
        help=f"Token cap per {role} reply (default: {default}).",
        rich_help_panel=SAMPLING_PANEL,
    )


PROMPTS_OPTION = typer.Option(
    None,
    "--prompts",
    envvar=_env("prompts"),
    help="Directory of templates overriding the shipped ones.",
    rich_help_panel=METHOD_PANEL,
)


@contextmanager
def _user_errors(debug: bool, *, as_json: bool = False) -> Iterator[None]:
    """Turn user-facing failures into one line on stderr and the exit code they carry.

    With `as_json`, stdout also gets one JSON object saying so, so that a script reading
    `--json` always has a status to read, whatever the exit code.
    """
    try:
        yield
    except EvolError as error:
        if debug:
            raise
        _fail(str(error), error.exit_code, as_json, summary=getattr(error, "summary", None))
    except ValidationError as error:
        if debug:
            raise
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        _fail(f"{where}: {first['msg']}", 2, as_json)
    except OSError as error:
        # Writes in the run directory say which file; this catches one that got past them.
        if debug or error.errno not in OUT_OF_RESOURCES:
            raise
        where = f"{error.filename}: " if error.filename else ""
        _fail(f"{where}{storage_failure(error)}", 2, as_json)
    except KeyboardInterrupt:
        _fail("interrupted", 130, as_json)


def _fail(message: str, exit_code: int, as_json: bool, summary: dict | None = None) -> None:
    shown = printable(message, lines=False)  # it may quote a server, a seed file, a run
    typer.echo(f"evol: error: {shown}" if exit_code != 130 else f"evol: {shown}", err=True)
    if as_json:
        status = "interrupted" if exit_code == 130 else "failed"
        report = (summary or {"status": status}) | {"error": message, "exit_code": exit_code}
        typer.echo(json_printable(json.dumps(report, ensure_ascii=False)))
    raise typer.Exit(exit_code) from None


def _echo_outside(text: str, *, as_json: bool = False, err: bool = False) -> None:
    """Print what holds text from a server, a seed file, a run or a path, its controls made
    inert."""
    typer.echo(json_printable(text) if as_json else printable(text), err=err)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"evol {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version."
    ),
) -> None:
    """Evolve seed instructions into a larger, harder instruction dataset (Evol-Instruct)."""


def _read_config_file(ctx: typer.Context, path: Path | None) -> Path | None:
    """Make the keys of a TOML file the defaults of `evol run`'s options (eager callback)."""
    if path is None:
        return path
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        _echo_outside(f"evol: error: {path}: {getattr(error, 'strerror', None) or error}", err=True)
        raise typer.Exit(2) from None
    params = {p.name: p for p in ctx.command.params if p.name != "config"}
    by_key = {opt.lstrip("-"): p for p in params.values() for opt in p.opts} | params
    defaults: dict[str, Any] = {}
    for key, value in data.items():
        param = by_key.get(key)
        if param is None:
            typer.echo(
                f"evol: error: {path}: unknown option {key!r}; keys are the long option names of evol run",
                err=True,
            )
            raise typer.Exit(2)
        defaults[param.name] = (
            [value] if getattr(param, "multiple", False) and isinstance(value, str) else value
        )
    ctx.default_map = {**(ctx.default_map or {}), **defaults}
    return path


@app.command(cls=EvolCommand)
def run(
    ctx: typer.Context,
    seeds: Path = typer.Argument(
        ...,
        help=f"Seed file: {', '.join(EXTENSIONS)} (any other name: JSON Lines).",
        rich_help_panel=SEEDS_PANEL,
    ),
    out: Path = typer.Option(
        ...,
        "--out",
        "-o",
        envvar=_env("out"),
        help="Run directory (resumed if it exists).",
        rich_help_panel=OUTPUT_PANEL,
    ),
    generations: int = typer.Option(
        4,
        min=0,
        max=100,
        envvar=_env("generations"),
        help="Evolution rounds.",
        rich_help_panel=METHOD_PANEL,
    ),
    seed: int = typer.Option(
        0,
        envvar=_env("seed"),
        help="Random seed: same seed, same operations.",
        rich_help_panel=METHOD_PANEL,
    ),
    operations: str = typer.Option(
        "",
        envvar=_env("operations"),
        help="Weights or subset, e.g. add_constraints=2,breadth=1 (default: all, uniform).",
        rich_help_panel=METHOD_PANEL,
    ),
    verifiable: bool = typer.Option(
        False,
        "--verifiable",
        envvar=_env("verifiable"),
        help="Every evolution adds a constraint code can check.",
        rich_help_panel=METHOD_PANEL,
    ),
    constraint_ids: str = typer.Option(
        None,
        envvar=_env("constraint_ids"),
        help="IFEval ids the constraints are drawn from (default: all).",
        rich_help_panel=METHOD_PANEL,
    ),
    answer_attempts: int = typer.Option(
        3,
        min=0,
        envvar=_env("answer_attempts"),
        help="Extra answers on a failed constraint.",
        rich_help_panel=METHOD_PANEL,
    ),
    seed_format: SeedFileFormat = SEED_FORMAT_OPTION,
    instruction_field: str = INSTRUCTION_FIELD_OPTION,
    input_field: str = INPUT_FIELD_OPTION,
    output_field: str = OUTPUT_FIELD_OPTION,
    skip_invalid: bool = typer.Option(
        False,
        "--skip-invalid/--no-skip-invalid",
        envvar=_env("skip_invalid"),
        help="Skip invalid seed rows instead of stopping.",
        rich_help_panel=SEEDS_PANEL,
    ),
    limit: int = typer.Option(
        None,
        min=1,
        envvar=_env("limit"),
        help="Evolve only the first N seeds (a larger N, or none, later extends the run).",
        rich_help_panel=SEEDS_PANEL,
    ),
    shard: str = typer.Option(
        None,
        envvar=_env("shard"),
        help="i/N: evolve only the seeds that hash to shard i of N (after --limit); join the "
        "shards with evol merge.",
        rich_help_panel=BATCH_PANEL,
    ),
    prompts: Path = PROMPTS_OPTION,
    answer_seeds: bool = typer.Option(
        True,
        "--answer-seeds/--no-answer-seeds",
        envvar=_env("answer_seeds"),
        help="Answer seeds that have no output.",
        rich_help_panel=METHOD_PANEL,
    ),
    judge: bool = typer.Option(
        True,
        "--judge/--no-judge",
        envvar=_env("judge"),
        help="Eliminate evolutions an LLM judges equal to their parent.",
        rich_help_panel=RULES_PANEL,
    ),
    sorry_check: bool = typer.Option(
        True,
        "--sorry-check/--no-sorry-check",
        envvar=_env("sorry_check"),
        help="Eliminate short sorry answers.",
        rich_help_panel=RULES_PANEL,
    ),
    stopword_check: bool = typer.Option(
        True,
        "--stopword-check/--no-stopword-check",
        envvar=_env("stopword_check"),
        help="Eliminate answers of only stop words and punctuation.",
        rich_help_panel=RULES_PANEL,
    ),
    leak_check: bool = typer.Option(
        True,
        "--leak-check/--no-leak-check",
        envvar=_env("leak_check"),
        help="Eliminate instructions that leak the evolving prompt's words.",
        rich_help_panel=RULES_PANEL,
    ),
    growth_check: bool = typer.Option(
        True,
        "--growth-check/--no-growth-check",
        envvar=_env("growth_check"),
        help="Eliminate rewrites that grew far past their parent (an answer, not a rewrite).",
        rich_help_panel=RULES_PANEL,
    ),
    signal_check: bool = typer.Option(
        True,
        "--signal-check/--no-signal-check",
        envvar=_env("signal_check"),
        help="Eliminate rewrites whose answer asks back or only repeats the instruction.",
        rich_help_panel=RULES_PANEL,
    ),
    dedup: bool = typer.Option(
        False,
        "--dedup",
        envvar=_env("dedup"),
        help="Eliminate repeats of another lineage's instruction.",
        rich_help_panel=RULES_PANEL,
    ),
    dedup_method: DedupChoice = typer.Option(
        DedupChoice.auto,
        envvar=_env("dedup_method"),
        help="rouge-l: compare with all; minhash: likely candidates only (large pools).",
        rich_help_panel=RULES_PANEL,
    ),
    dedup_threshold: float = typer.Option(
        0.7,
        min=0.01,
        max=1.0,
        envvar=_env("dedup_threshold"),
        help="ROUGE-L F1 at which two instructions are duplicates.",
        rich_help_panel=RULES_PANEL,
    ),
    backend: str = BACKEND_OPTION,
    base_url: list[str] = BASE_URL_OPTION,
    api_key: str = API_KEY_OPTION,
    model: str = typer.Option(
        None,
        envvar=_env("model"),
        help="Model for every role (default: the server's only model).",
        rich_help_panel=MODEL_PANEL,
    ),
    evolve_model: str = typer.Option(
        None,
        envvar=_env("evolve_model"),
        help="Model that rewrites instructions.",
        rich_help_panel=MODEL_PANEL,
    ),
    answer_model: str = typer.Option(
        None,
        envvar=_env("answer_model"),
        help="Model that answers instructions.",
        rich_help_panel=MODEL_PANEL,
    ),
    judge_model: str = typer.Option(
        None,
        envvar=_env("judge_model"),
        help="Model that judges equality.",
        rich_help_panel=MODEL_PANEL,
    ),
    model_path: Path = MODEL_PATH_OPTION,
    temperature: float = typer.Option(
        None,
        min=0,
        max=2,
        envvar=_env("temperature"),
        help="Temperature of the evolver and the answerer (default: the provider's).",
        rich_help_panel=SAMPLING_PANEL,
    ),
    max_tokens: int = typer.Option(
        None,
        min=1,
        envvar=_env("max_tokens"),
        help="Token cap per evolver and answerer reply (default: the provider's); a reply cut "
        "there is eliminated.",
        rich_help_panel=SAMPLING_PANEL,
    ),
    evolve_temperature: float = ROLE_TEMPERATURE_OPTION("evolve", "the provider's"),
    evolve_max_tokens: int = ROLE_MAX_TOKENS_OPTION("evolve", "--max-tokens"),
    answer_temperature: float = ROLE_TEMPERATURE_OPTION("answer", "the provider's"),
    answer_max_tokens: int = ROLE_MAX_TOKENS_OPTION("answer", "--max-tokens"),
    judge_temperature: float = ROLE_TEMPERATURE_OPTION("judge", "0"),
    judge_max_tokens: int = ROLE_MAX_TOKENS_OPTION("judge", "100"),
    system_prompt: str = typer.Option(
        None,
        envvar=_env("system_prompt"),
        help="A system turn for the answerer (kept in exports).",
        rich_help_panel=METHOD_PANEL,
    ),
    parallel_judge: bool = typer.Option(
        False,
        "--parallel-judge/--no-parallel-judge",
        envvar=_env("parallel_judge"),
        help="Answer and judge at once: faster, but pays for rejected rewrites' answers.",
        rich_help_panel=METHOD_PANEL,
    ),
    instruction_check: bool = typer.Option(
        None,
        "--instruction-check/--no-instruction-check",
        envvar=_env("instruction_check"),
        help="Eliminate rewrites the judge says are no instruction (talk to the user, an "
        "answer, an echoed input, a missing part). Default: on, but for the embedded model.",
        rich_help_panel=METHOD_PANEL,
    ),
    answer_check: bool = typer.Option(
        None,
        "--answer-check/--no-answer-check",
        envvar=_env("answer_check"),
        help="The judge model checks that each answer does its task (one call more per "
        "answer the rules let through). Default: on when --judge-model is set.",
        rich_help_panel=METHOD_PANEL,
    ),
    batch: bool = BATCH_OPTION,
    batch_max_requests: int = BATCH_MAX_REQUESTS_OPTION,
    batch_poll_interval: float = BATCH_POLL_INTERVAL_OPTION,
    batch_no_wait: bool = BATCH_NO_WAIT_OPTION,
    timeout: float = TIMEOUT_OPTION,
    concurrency: int = CONCURRENCY_OPTION,
    rpm: float = typer.Option(
        None,
        min=0.1,
        envvar=_env("rpm"),
        help="Requests per minute at most (default: no cap).",
        rich_help_panel=LIMITS_PANEL,
    ),
    tpm: float = typer.Option(
        None,
        min=1,
        envvar=_env("tpm"),
        help="Tokens (in + out) per minute at most (default: no cap).",
        rich_help_panel=LIMITS_PANEL,
    ),
    max_retries: int = MAX_RETRIES_OPTION,
    retry_max_wait: float = RETRY_MAX_WAIT_OPTION,
    max_response_mb: float = MAX_RESPONSE_MB_OPTION,
    overwrite: bool = typer.Option(
        False,
        envvar=_env("overwrite"),
        help="Delete the run in --out and start afresh.",
        rich_help_panel=OUTPUT_PANEL,
    ),
    quiet: bool = typer.Option(
        False,
        "--quiet",
        "-q",
        envvar=_env("quiet"),
        help="No progress bar or messages.",
        rich_help_panel=OUTPUT_PANEL,
    ),
    as_json: bool = typer.Option(
        False,
        "--json",
        envvar=_env("json"),
        help="Print the summary as one JSON object on stdout.",
        rich_help_panel=OUTPUT_PANEL,
    ),
    debug: bool = typer.Option(
        False, envvar=_env("debug"), help="Show tracebacks.", rich_help_panel=OUTPUT_PANEL
    ),
    dry_run: bool = typer.Option(
        False,
        "--dry-run",
        help="Print the calls per role and an estimated cost; call nothing.",
        rich_help_panel=OUTPUT_PANEL,
    ),
    price_in: float = PRICE_IN_OPTION,
    price_out: float = PRICE_OUT_OPTION,
    config_file: Path = typer.Option(
        None,
        "--config",
        is_eager=True,
        callback=_read_config_file,
        envvar=_env("config"),
        help="TOML file of option defaults (keys: long option names).",
        rich_help_panel=OUTPUT_PANEL,
    ),
) -> None:
    """Evolve SEEDS through N generations into --out (run it again to resume).

    Every option can also be set as EVOL_<OPTION>, e.g. EVOL_GENERATIONS=4.
    """
    with _user_errors(debug, as_json=as_json):
        config = RunConfig(
            seeds=seeds,
            out=out,
            generations=generations,
            seed=seed,
            operations=parse_weights(operations, verifiable=verifiable),
            constraint_ids=parse_ids(constraint_ids),
            answer_attempts=answer_attempts,
            seed_format=seed_format.value if seed_format else None,
            instruction_field=instruction_field,
            input_field=input_field,
            output_field=output_field,
            skip_invalid=skip_invalid,
            limit=limit,
            shard=Shard.parse(shard) if shard is not None else None,
            prompts_dir=prompts,
            answer_seeds=answer_seeds,
            rules=EliminationRules(
                judge=judge,
                instruction_check=instruction_check,
                sorry=sorry_check,
                stopwords=stopword_check,
                leak=leak_check,
                growth=growth_check,
                signals=signal_check,
                dedup=dedup,
                dedup_method=dedup_method.value,
                dedup_threshold=dedup_threshold,
            ),
            backend=backend,
            base_urls=list(base_url or []),
            api_key=SecretStr(api_key) if api_key else None,
            api_key_source=_api_key_source(ctx),
            model=model,
            evolve_model=evolve_model,
            answer_model=answer_model,
            judge_model=judge_model,
            model_path=model_path,
            params=RoleParams.from_options(
                temperature=temperature,
                max_tokens=max_tokens,
                evolve_temperature=evolve_temperature,
                evolve_max_tokens=evolve_max_tokens,
                answer_temperature=answer_temperature,
                answer_max_tokens=answer_max_tokens,
                judge_temperature=judge_temperature,
                judge_max_tokens=judge_max_tokens,
            ),
            system_prompt=system_prompt,
            parallel_judge=parallel_judge,
            answer_check=answer_check,
            batch=batch or batch_no_wait,
            batch_max_requests=batch_max_requests,
            batch_poll_interval=batch_poll_interval,
            batch_no_wait=batch_no_wait,
            timeout=timeout,
            concurrency=concurrency,
            rpm=rpm,
            tpm=tpm,
            max_retries=max_retries,
            retry_max_wait=retry_max_wait,
            max_response_bytes=_megabytes(max_response_mb),
            overwrite=overwrite,
        )
        if dry_run:
            plan = plan_run(config, price_in=price_in, price_out=price_out)
            _echo_outside(plan.model_dump_json() if as_json else format_plan(plan), as_json=as_json)
            return
        summary = _with_progress(
            quiet,
            lambda on_progress, on_info: _tuned_run(
                arun(config, on_progress=on_progress, on_info=on_info)
            ),
        )
    _report(summary, quiet=quiet, as_json=as_json)
    if summary.status == "pending":
        raise typer.Exit(PENDING_EXIT)
    if summary.status != "complete":
        raise typer.Exit(1)


@app.command(cls=EvolCommand)
def merge(
    run_dirs: list[Path] = typer.Argument(
        ..., help="The run directories of evol run --shard i/N, one per shard."
    ),
    out: Path = typer.Option(
        ..., "--out", "-o", help="Run directory to write: new or empty (or --overwrite)."
    ),
    partial: bool = typer.Option(
        False, "--partial", help="Merge even if shards are missing (run.json lists them)."
    ),
    seeds: Path = typer.Option(
        None,
        "--seeds",
        help="The seed file, if it is no longer where the shards read it (it gives the order).",
    ),
    overwrite: bool = typer.Option(False, help="Replace the run that --out holds."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as one JSON object."),
) -> None:
    """Join the shards of one run (evol run --shard i/N) into one run directory."""
    with _user_errors(False, as_json=as_json):
        summary = merge_runs(
            MergeConfig(
                run_dirs=run_dirs, out=out, partial=partial, seeds=seeds, overwrite=overwrite
            )
        )
    _echo_outside(
        summary.model_dump_json() if as_json else format_merge_summary(summary), as_json=as_json
    )


@app.command(cls=EvolCommand)
def validate(
    seeds: Path = typer.Argument(..., help="Seed file to check."),
    seed_format: SeedFileFormat = SEED_FORMAT_OPTION,
    instruction_field: str = INSTRUCTION_FIELD_OPTION,
    input_field: str = INPUT_FIELD_OPTION,
    output_field: str = OUTPUT_FIELD_OPTION,
    skip_invalid: bool = typer.Option(
        False,
        "--skip-invalid/--no-skip-invalid",
        envvar=_env("skip_invalid"),
        help="Report invalid rows instead of stopping at the first.",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the report as one JSON object."),
) -> None:
    """Check a seed file the way evol run reads it, and say what it holds."""
    options = SeedOptions(
        format=seed_format.value if seed_format else None,
        instruction_field=instruction_field,
        input_field=input_field,
        output_field=output_field,
        skip_invalid=skip_invalid,
    )
    with _user_errors(False):
        report = describe_seeds(seeds, options)
    _echo_outside(report.model_dump_json() if as_json else format_report(report), as_json=as_json)


class ExportShape(StrEnum):
    alpaca = "alpaca"
    sharegpt = "sharegpt"
    openai_chat = "openai-chat"
    jsonl = "jsonl"
    ifeval = "ifeval"
    rlvr = "rlvr"
    dpo = "dpo"


class ExportFileFormat(StrEnum):
    jsonl = "jsonl"
    json = "json"
    parquet = "parquet"


@app.command(cls=EvolCommand)
def export(
    run_dir: Path = RUN_DIR_ARGUMENT,
    out: Path = typer.Option(
        ...,
        "--out",
        "-o",
        help="File to write: .parquet for Parquet, .json for one JSON array, else JSON Lines.",
    ),
    shape: ExportShape = typer.Option(
        ExportShape.alpaca, "--format", help="Record shape for the trainer."
    ),
    file_format: ExportFileFormat = typer.Option(
        None, "--file-format", help="File format (default: by the extension of --out)."
    ),
    generations: str = typer.Option(
        None, help="Generations to include, e.g. 1-4 or 0,2 (default: all)."
    ),
    split: str = typer.Option(
        None,
        help="Parts and fractions, e.g. train=0.9,test=0.1; each lineage stays in one part.",
    ),
    shuffle: bool = typer.Option(
        False, "--shuffle/--no-shuffle", help="Shuffle the records within each part."
    ),
    seed: int = typer.Option(0, help="Random seed of --split and --shuffle."),
    system_prompt: str = typer.Option(
        None,
        "--system-prompt",
        help="System turn to write (default: the run's --system-prompt; '' for none).",
    ),
    as_json: bool = typer.Option(
        False, "--json/--no-json", help="Print what was written as one JSON object."
    ),
) -> None:
    """Write a run's dataset as Alpaca, ShareGPT, OpenAI chat, IFEval, RLVR, DPO pairs or evol's
    records."""
    with _user_errors(False, as_json=as_json):
        result = export_run(
            run_dir,
            out,
            shape=shape.value,
            file_format=file_format.value if file_format else None,
            generations=parse_generations(generations),
            split=parse_split(split),
            shuffle=shuffle,
            seed=seed,
            system_prompt=system_prompt,
        )
    warning = status_warning(result)
    if warning:
        typer.echo(f"evol: warning: {printable(warning, lines=False)}", err=True)
    if result.left_out_without_output:
        typer.echo(
            f"evol: left out {result.left_out_without_output} records without an output", err=True
        )
    if result.left_out_without_constraints:
        typer.echo(
            f"evol: left out {result.left_out_without_constraints} records without verifiable "
            "constraints",
            err=True,
        )
    if result.left_out_without_pair:
        typer.echo(
            f"evol: left out {result.left_out_without_pair} records whose first answer met their "
            "constraints (no rejected answer to pair with)",
            err=True,
        )
    _echo_outside(result.model_dump_json() if as_json else format_export(result), as_json=as_json)


@app.command(cls=EvolCommand)
def verify(
    dataset: Path = typer.Argument(
        ...,
        metavar="FILE",
        help="IFEval or RLVR rows (JSON Lines, a JSON array or Parquet), evol's records, or a "
        "run directory.",
    ),
    response_field: str = typer.Option(
        None,
        "--response-field",
        help="The answer's field (default: response for IFEval, the last assistant message for "
        "RLVR, output for evol's records).",
    ),
    as_json: bool = typer.Option(
        False, "--json/--no-json", help="Print the pass rates as one JSON object."
    ),
) -> None:
    """Check each answer against its verifiable constraints; pass rates per constraint id."""
    with _user_errors(False, as_json=as_json):
        result = verify_dataset(dataset, response_field)
    _echo_outside(result.model_dump_json() if as_json else format_verify(result), as_json=as_json)


@app.command(cls=EvolCommand)
def show(
    run_dir: Path = RUN_DIR_ARGUMENT,
    record_id: str = typer.Argument(
        ..., metavar="ID", help="A record id; its whole lineage is shown, from the seed."
    ),
    as_json: bool = typer.Option(
        False, "--json/--no-json", help="Print the lineage as one JSON object."
    ),
    full: bool = typer.Option(
        False,
        "--full",
        help=f"Print every text whole (the tree cuts one over {SHOWN_CHARS:,} characters).",
    ),
) -> None:
    """Show one lineage as a tree: each rewrite, what it changed, and the attempts eliminated."""
    with _user_errors(False, as_json=as_json):
        found = lineage(run_dir, record_id)
    if as_json:
        _echo_outside(found.model_dump_json(), as_json=True)
        return
    _echo_outside(format_lineage(found, width=shutil.get_terminal_size().columns, full=full))


@app.command(cls=EvolCommand)
def report(
    run_dir: Path = RUN_DIR_ARGUMENT,
    out: Path = typer.Option(..., "--out", "-o", help="The HTML file to write."),
    png: Path = typer.Option(
        None, "--png", help="Also write each plot as a PNG into this directory."
    ),
) -> None:
    """Write a self-contained HTML page of plots about a run (and, with --png, the plots alone)."""
    with _user_errors(False):
        plots, status = write_report(run_dir, out, png_dir=png)
    _warn_unfinished(run_dir, status)
    _echo_outside(f"{out}: {len(plots)} plots" + (f"; PNG files in {png}" if png else ""))


@app.command(cls=EvolCommand)
def stats(
    run_dir: Path = RUN_DIR_ARGUMENT,
    price_in: float = PRICE_IN_OPTION,
    price_out: float = PRICE_OUT_OPTION,
    as_json: bool = typer.Option(False, "--json", help="Print the figures as one JSON object."),
) -> None:
    """Show what a run kept and eliminated per generation and operation, and what it cost."""
    with _user_errors(False, as_json=as_json):
        result = run_stats(run_dir, price_in=price_in, price_out=price_out)
    _warn_unfinished(run_dir, result.status)
    if as_json:
        _echo_outside(result.model_dump_json(), as_json=True)
        return
    _echo_outside(format_stats(result))


@app.command(cls=EvolCommand)
def score(
    ctx: typer.Context,
    run_dir: Path = RUN_DIR_ARGUMENT,
    difficulty: bool = typer.Option(
        True,
        "--difficulty/--no-difficulty",
        envvar=_env("difficulty"),
        help="Rate each instruction's difficulty, 1 to 10.",
        rich_help_panel=SCORES_PANEL,
    ),
    complexity: bool = typer.Option(
        True,
        "--complexity/--no-complexity",
        envvar=_env("complexity"),
        help="Rank each lineage's versions against each other in one call, 1 to N.",
        rich_help_panel=SCORES_PANEL,
    ),
    answers: bool = typer.Option(
        False,
        "--answers",
        envvar=_env("answers"),
        help="Also rate each answer 1 to 10 (helpfulness, relevance, accuracy, depth).",
        rich_help_panel=SCORES_PANEL,
    ),
    retry_missing: bool = typer.Option(
        False,
        "--retry-missing",
        help="Ask again for the scores recorded as missing.",
        rich_help_panel=SCORES_PANEL,
    ),
    metrics: bool = typer.Option(
        True,
        "--metrics/--no-metrics",
        help="Measure diversity and drift per generation (CPU only, no model).",
        rich_help_panel=SCORES_PANEL,
    ),
    against: list[Path] = typer.Option(
        None,
        "--against",
        help="Evaluation set (JSONL, JSON or CSV of prompts) to check for contamination; "
        "repeatable; needs no model.",
        rich_help_panel=SCORES_PANEL,
    ),
    ngram: int = typer.Option(
        13,
        min=1,
        max=1000,
        help="Words in a row a record must share with an evaluation item.",
        rich_help_panel=SCORES_PANEL,
    ),
    prompts: Path = typer.Option(
        None,
        "--prompts",
        envvar=_env("prompts"),
        help="Directory of templates overriding the shipped ones (score_*.txt).",
        rich_help_panel=SCORES_PANEL,
    ),
    backend: str = BACKEND_OPTION,
    base_url: list[str] = BASE_URL_OPTION,
    api_key: str = API_KEY_OPTION,
    model: str = typer.Option(
        None,
        envvar=_env("score_model"),
        help="Scoring model, also EVOL_SCORE_MODEL (default: the server's only model).",
        rich_help_panel=MODEL_PANEL,
    ),
    model_path: Path = MODEL_PATH_OPTION,
    timeout: float = TIMEOUT_OPTION,
    concurrency: int = CONCURRENCY_OPTION,
    max_retries: int = MAX_RETRIES_OPTION,
    retry_max_wait: float = RETRY_MAX_WAIT_OPTION,
    max_response_mb: float = MAX_RESPONSE_MB_OPTION,
    batch: bool = BATCH_OPTION,
    batch_max_requests: int = BATCH_MAX_REQUESTS_OPTION,
    batch_poll_interval: float = BATCH_POLL_INTERVAL_OPTION,
    batch_no_wait: bool = BATCH_NO_WAIT_OPTION,
    price_in: float = PRICE_IN_OPTION,
    price_out: float = PRICE_OUT_OPTION,
    dry_run: bool = typer.Option(
        False,
        "--dry-run",
        help="Print the calls to make and an estimated cost; call nothing.",
        rich_help_panel=OUTPUT_PANEL,
    ),
    quiet: bool = typer.Option(
        False,
        "--quiet",
        "-q",
        help="No progress bar or messages.",
        rich_help_panel=OUTPUT_PANEL,
    ),
    as_json: bool = typer.Option(
        False,
        "--json",
        help="Print the summary as one JSON object.",
        rich_help_panel=OUTPUT_PANEL,
    ),
    debug: bool = typer.Option(
        False, envvar=_env("debug"), help="Show tracebacks.", rich_help_panel=OUTPUT_PANEL
    ),
) -> None:
    """Rate a run's records with an LLM, measure diversity and drift, check contamination.

    The model, connection and score options can also be set as EVOL_<OPTION>.
    """
    with _user_errors(debug, as_json=as_json):
        config = ScoreConfig(
            run_dir=run_dir,
            difficulty=difficulty,
            complexity=complexity,
            quality=answers,
            retry_missing=retry_missing,
            metrics=metrics,
            against=list(against or []),
            ngram=ngram,
            prompts_dir=prompts,
            backend=backend,
            base_urls=list(base_url or []),
            api_key=SecretStr(api_key) if api_key else None,
            api_key_source=_api_key_source(ctx),
            model=model,
            model_path=model_path,
            timeout=timeout,
            concurrency=concurrency,
            max_retries=max_retries,
            retry_max_wait=retry_max_wait,
            max_response_bytes=_megabytes(max_response_mb),
            batch=batch or batch_no_wait,
            batch_max_requests=batch_max_requests,
            batch_poll_interval=batch_poll_interval,
            batch_no_wait=batch_no_wait,
        )
        if dry_run:
            plan = plan_scoring(config, price_in=price_in, price_out=price_out)
            _echo_outside(
                plan.model_dump_json() if as_json else format_score_plan(plan), as_json=as_json
            )
            return
        summary = _with_progress(
            quiet,
            lambda on_progress, on_info: score_run(
                config, on_progress=on_progress, on_info=on_info
            ),
        )
    _echo_outside(
        summary.model_dump_json() if as_json else format_score_summary(summary), as_json=as_json
    )
    if summary.status == "pending":
        raise typer.Exit(PENDING_EXIT)
    if summary.status != "complete":
        raise typer.Exit(1)


@app.command(cls=EvolCommand)
def select(
    run_dir: Path = RUN_DIR_ARGUMENT,
    budget: int = typer.Option(..., min=1, help="Records to pick at most."),
    out: Path = typer.Option(
        ...,
        "--out",
        "-o",
        help="File to write: .parquet for Parquet, .json for one JSON array, else JSON Lines.",
    ),
    shape: ExportShape = typer.Option(
        ExportShape.alpaca, "--format", help="Record shape for the trainer."
    ),
    similarity: float = typer.Option(
        0.7,
        min=0.01,
        max=1.0,
        help="ROUGE-L F1 to an instruction already picked at which a record is passed over.",
    ),
    drop_contaminated: bool = typer.Option(
        False,
        "--drop-contaminated",
        help="Leave out the records that evol score --against flagged.",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as one JSON object."),
) -> None:
    """Pick the best N records of a scored run (complexity x quality), skipping near repeats."""
    with _user_errors(False, as_json=as_json):
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
    _echo_outside(
        summary.model_dump_json() if as_json else format_select_summary(summary), as_json=as_json
    )


@prompts_app.command("list", cls=EvolCommand)
def prompts_list(
    prompts: Path = PROMPTS_OPTION,
) -> None:
    """List the templates and the file each one comes from."""
    with _user_errors(False):
        loaded = PromptSet.load(prompts)
    for name in PROMPT_NAMES:
        _echo_outside(f"{name:<20} {loaded[name].source}")


@prompts_app.command("show", cls=EvolCommand)
def prompts_show(
    name: str = typer.Argument(..., help=f"One of: {', '.join(PROMPT_NAMES)}."),
    prompts: Path = PROMPTS_OPTION,
) -> None:
    """Print one template as a run would use it."""
    with _user_errors(False):
        if name not in PROMPT_NAMES:
            raise UsageError(f"unknown template {name!r}; known: {', '.join(PROMPT_NAMES)}")
        typer.echo(PromptSet.load(prompts)[name].text, nl=False)


def _warn_unfinished(run_dir: Path, status: str) -> None:
    if status != "complete":
        typer.echo(
            f"evol: warning: {run_dir} is {printable(status, lines=False)}, not complete: these "
            "figures cover what was written so far",
            err=True,
        )


def _megabytes(mb: float) -> int:
    return round(mb * 1024 * 1024)


def _api_key_source(ctx: typer.Context) -> str:
    """The name to blame in an authentication error: the option, or the variable it came from."""
    source = ctx.get_parameter_source("api_key")
    # Compared by name: Typer and Click each define their own ParameterSource enum.
    if getattr(source, "name", None) == "COMMANDLINE":
        return "--api-key"
    if getattr(source, "name", None) == "DEFAULT_MAP":
        return f"api-key in --config {ctx.params.get('config_file')}"
    return _env("api_key") if os.environ.get(_env("api_key")) else "OPENAI_API_KEY"


def _with_progress(quiet: bool, work: Callable[[Any, Any], T]) -> T:
    """`work(on_progress, on_info)` with its progress shown on stderr: a bar on a terminal,
    else (CI, nohup, a pipe) a line every EVOL_PROGRESS_INTERVAL seconds and one at the end;
    nothing with --quiet."""
    if quiet:
        return work(lambda _progress: None, lambda _message: None)
    if sys.stderr.isatty():
        return _with_bar(work)
    lines = _ProgressLines(_progress_interval(), sys.stderr)
    try:
        result = work(lines.update, lines.info)
    except BaseException:
        lines.close(last=lines.moved)  # where a long run stopped; not a stop at start
        raise
    lines.close(last=True)
    return result


def _with_bar(work: Callable[[Any, Any], T]) -> T:
    bar = tqdm(total=0, unit="step", file=sys.stderr, dynamic_ncols=True)

    def on_progress(progress: Progress) -> None:
        bar.unit, bar.total, bar.n = progress.unit, progress.total, progress.done
        bar.refresh()

    def on_info(message: str) -> None:  # a model's name, as a server gave it, may be in it
        tqdm.write(f"evol: {printable(message, lines=False)}", file=sys.stderr)

    try:
        return work(on_progress, on_info)
    finally:
        bar.close()


PROGRESS_INTERVAL = 30.0  # seconds between two progress lines when stderr is not a terminal


def _progress_interval() -> float:
    text = os.environ.get(_env("progress_interval"), "")
    if not text:
        return PROGRESS_INTERVAL
    try:
        seconds = float(text)
    except ValueError:
        seconds = 0.0
    if not 0 < seconds < float("inf"):
        raise UsageError(f"{_env('progress_interval')} must be a number of seconds above 0")
    return min(seconds, threading.TIMEOUT_MAX)  # a longer wait overflows: only the last line


class _ProgressLines:
    """Progress as one line at a steady interval, from a thread of its own (a step may take
    minutes), and one line at the end."""

    def __init__(self, interval: float, stream: TextIO):
        self.interval, self.stream = interval, stream
        self.first: Progress | None = None
        self.latest: Progress | None = None
        self.since = 0.0
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.ticker = threading.Thread(target=self.tick, daemon=True)
        self.ticker.start()

    def update(self, progress: Progress) -> None:
        if self.first is None:
            self.since = time.monotonic()
            self.first = progress
        self.latest = progress

    def info(self, message: str) -> None:
        self.say(f"evol: {message}")

    def tick(self) -> None:
        while not self.stopped.wait(self.interval):
            try:
                self.show(ended=False)
            except (OSError, ValueError):  # stderr went away (a pipe whose reader left)
                return

    def show(self, *, ended: bool) -> None:
        first, latest = self.first, self.latest
        if first is not None and latest is not None:
            elapsed = time.monotonic() - self.since
            self.say(f"evol: {format_progress(latest, first, elapsed, ended=ended)}")

    def say(self, line: str) -> None:
        with self.lock:
            self.stream.write(printable(line, lines=False) + "\n")
            self.stream.flush()

    @property
    def moved(self) -> bool:
        """Some step was done since the first report."""
        return self.latest is not self.first

    def close(self, *, last: bool) -> None:
        self.stopped.set()
        self.ticker.join()
        if last:
            self.show(ended=True)


def _report(summary: RunSummary, *, quiet: bool, as_json: bool) -> None:
    if as_json:
        _echo_outside(json.dumps(summary.model_dump(mode="json"), ensure_ascii=False), as_json=True)
    if quiet:
        return
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
    for line in lines:
        _echo_outside(line, err=True)


def _tuned_run(work: Coroutine[Any, Any, T]) -> T:
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


def main() -> None:
    """Console-script entry point."""
    app(prog_name="evol")
