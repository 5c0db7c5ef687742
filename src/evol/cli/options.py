"""The options several commands take, each declared once as an `Annotated` type, and the one
mapping of the options `evol run` and `evol score` share onto `evol.config.Connection`.

A command declares `timeout: Timeout = CONNECTION.timeout`: the name, the variable, the help
and the panel come from here, the default from the config model the option fills.
"""

from __future__ import annotations

import os
import tomllib
from enum import Enum, StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import BaseModel, SecretStr

from evol.cli.command import (
    BATCH_PANEL,
    LIMITS_PANEL,
    METHOD_PANEL,
    MODEL_PANEL,
    OUTPUT_PANEL,
    SEEDS_PANEL,
)
from evol.config import Connection
from evol.terminal import printable

MB = 1024 * 1024
# The defaults of the connection options are Connection's own.
CONNECTION = Connection()


def env(name: str) -> str:
    """The environment variable of an option: `max-tokens` -> EVOL_MAX_TOKENS."""
    return f"EVOL_{name.upper().replace('-', '_')}"


class SeedFileFormat(StrEnum):
    jsonl = "jsonl"
    json = "json"
    csv = "csv"
    tsv = "tsv"
    text = "text"
    parquet = "parquet"


class ExportShape(StrEnum):
    alpaca = "alpaca"
    sharegpt = "sharegpt"
    openai_chat = "openai-chat"
    jsonl = "jsonl"
    ifeval = "ifeval"
    rlvr = "rlvr"
    dpo = "dpo"


# -- how a seed file is read: run and validate ------------------------------------------------

SeedFormat = Annotated[
    SeedFileFormat | None,
    typer.Option(
        "--format",
        envvar=env("format"),
        help="Seed file format (default: by extension).",
        rich_help_panel=SEEDS_PANEL,
    ),
]
InstructionField = Annotated[
    str | None,
    typer.Option(
        "--instruction-field",
        "--field",
        envvar=[env("instruction_field"), env("field")],
        help="Dotted path of the instruction, e.g. conversations.0.value (default: by the row's "
        "shape).",
        rich_help_panel=SEEDS_PANEL,
    ),
]
InputField = Annotated[
    str | None,
    typer.Option(
        "--input-field",
        envvar=env("input_field"),
        help="Dotted path of the input (default: by the row's shape).",
        rich_help_panel=SEEDS_PANEL,
    ),
]
OutputField = Annotated[
    str | None,
    typer.Option(
        "--output-field",
        envvar=env("output_field"),
        help="Dotted path of the output (default: by the row's shape).",
        rich_help_panel=SEEDS_PANEL,
    ),
]
Prompts = Annotated[
    Path | None,
    typer.Option(
        "--prompts",
        envvar=env("prompts"),
        help="Directory of templates overriding the shipped ones.",
        rich_help_panel=METHOD_PANEL,
    ),
]
RunDir = Annotated[Path, typer.Argument(help="A run directory (the --out of evol run).")]
# What `export` and `select` write: a file, in a trainer's record shape.
OutFile = Annotated[
    Path,
    typer.Option(
        "--out",
        "-o",
        help="File to write: .parquet for Parquet, .json for one JSON array, else JSON Lines.",
    ),
]
Shape = Annotated[ExportShape, typer.Option("--format", help="Record shape for the trainer.")]

# -- the connection, limits and batch options: run, score and optimize -----------------------

Backend = Annotated[
    str | None,
    typer.Option(
        envvar=env("backend"),
        help="openai, local or a plugin (default: openai if configured, else local).",
        rich_help_panel=MODEL_PANEL,
    ),
]
BaseUrl = Annotated[
    list[str] | None,
    typer.Option(
        "--base-url",
        envvar=[env("base_url"), "OPENAI_BASE_URL"],
        help="OpenAI-compatible endpoint, e.g. http://localhost:8000/v1 (default: "
        "$OPENAI_BASE_URL); repeat it to spread requests over servers.",
        rich_help_panel=MODEL_PANEL,
    ),
]
ApiKey = Annotated[
    str | None,
    typer.Option(
        envvar=[env("api_key"), "OPENAI_API_KEY"],
        show_default=False,
        help="API key (default: $OPENAI_API_KEY, which is safer than this option).",
        rich_help_panel=MODEL_PANEL,
    ),
]
ModelPath = Annotated[
    Path | None,
    typer.Option(
        envvar=env("model_path"),
        help="GGUF file for the local backend (default: SmolLM2-135M-Instruct).",
        rich_help_panel=MODEL_PANEL,
    ),
]


def _limit(name: str, help: str, **bounds: float) -> Any:
    """An option of the limits panel, read from EVOL_<NAME> too."""
    return typer.Option(envvar=env(name), help=help, rich_help_panel=LIMITS_PANEL, **bounds)


Timeout = Annotated[float, _limit("timeout", "Seconds a request may take before a retry.")]
Concurrency = Annotated[
    int,
    _limit("concurrency", "Requests in flight at most (halved on 429, then grown back).", min=1),
]
Rpm = Annotated[
    float | None, _limit("rpm", "Requests per minute at most (default: no cap).", min=0.1)
]
Tpm = Annotated[
    float | None, _limit("tpm", "Tokens (in + out) per minute at most (default: no cap).", min=1)
]
MaxRetries = Annotated[int, _limit("max_retries", "Retries of a 429, 5xx or timeout.", min=0)]
RetryMaxWait = Annotated[
    float,
    _limit(
        "retry_max_wait",
        "Longest wait between retries, in seconds, whatever a Retry-After asks.",
        min=0.001,
    ),
]
MaxResponseMb = Annotated[
    float,
    _limit(
        "max_response_mb",
        "Largest reply body (decompressed) or batch row, in MB; a larger one is retried.",
        min=0.001,
    ),
]
Batch = Annotated[
    bool,
    typer.Option(
        "--batch",
        envvar=env("batch"),
        help="OpenAI Batch API: half price, up to 24 h a step.",
        rich_help_panel=BATCH_PANEL,
    ),
]
BatchMaxRequests = Annotated[
    int,
    typer.Option(
        min=1,
        envvar=env("batch_max_requests"),
        help="Requests per file (200 MB at most).",
        rich_help_panel=BATCH_PANEL,
    ),
]
BatchPollInterval = Annotated[
    float,
    typer.Option(
        min=0.001,
        envvar=env("batch_poll_interval"),
        help="Seconds between polls.",
        rich_help_panel=BATCH_PANEL,
    ),
]
BatchNoWait = Annotated[
    bool,
    typer.Option(
        "--batch-no-wait",
        envvar=env("batch_no_wait"),
        help="As --batch, but exit 3 while batches run; rerun to go on.",
        rich_help_panel=BATCH_PANEL,
    ),
]


class EngineChoice(StrEnum):
    live = "live"
    ray = "ray"


Engine = Annotated[
    EngineChoice,
    typer.Option(
        envvar=env("engine"),
        show_default=False,
        help="live (default), or ray: through Ray Data LLM.",
        rich_help_panel=BATCH_PANEL,
    ),
]
RayAddress = Annotated[
    str | None,
    typer.Option(
        envvar=[env("ray_address"), "RAY_ADDRESS"],
        help="Ray cluster (default: $RAY_ADDRESS, else a local Ray).",
        rich_help_panel=BATCH_PANEL,
    ),
]
RayModel = Annotated[
    str | None,
    typer.Option(
        envvar=env("ray_model"),
        help="vLLM model on the cluster (default: HTTP to --base-url).",
        rich_help_panel=BATCH_PANEL,
    ),
]
RayTp = Annotated[
    int,
    typer.Option(
        min=1,
        envvar=env("ray_tp"),
        help="GPUs per vLLM engine (tensor parallel).",
        rich_help_panel=BATCH_PANEL,
    ),
]
RayReplicas = Annotated[
    int,
    typer.Option(
        min=1,
        envvar=env("ray_replicas"),
        help="Ray HTTP actors, or vLLM engines.",
        rich_help_panel=BATCH_PANEL,
    ),
]
RayBatchSize = Annotated[
    int,
    typer.Option(
        min=1,
        envvar=env("ray_batch_size"),
        help="Rows per batch of the Ray stage.",
        rich_help_panel=BATCH_PANEL,
    ),
]

# -- output: run, score and stats --------------------------------------------------------------

PriceIn = Annotated[
    float | None,
    typer.Option(
        min=0,
        envvar=env("price_in"),
        help="USD per 1M prompt tokens (default: built-in table).",
        rich_help_panel=OUTPUT_PANEL,
    ),
]
PriceOut = Annotated[
    float | None,
    typer.Option(
        min=0,
        envvar=env("price_out"),
        help="USD per 1M completion tokens (default: built-in table).",
        rich_help_panel=OUTPUT_PANEL,
    ),
]
Debug = Annotated[
    bool,
    typer.Option(envvar=env("debug"), help="Show tracebacks.", rich_help_panel=OUTPUT_PANEL),
]
# Every command that can print JSON takes this one option; --no-json undoes EVOL_JSON for one call.
Json = Annotated[
    bool,
    typer.Option(
        "--json/--no-json",
        envvar=env("json"),
        help="Print the result as one JSON object on stdout.",
        rich_help_panel=OUTPUT_PANEL,
    ),
]


# -- from options to a config -----------------------------------------------------------------


def config_fields(ctx: typer.Context, model: type[BaseModel], **parsed: Any) -> dict[str, Any]:
    """The fields of `model` that the command's options give: those of the same name as they
    are (a choice as its value), the connection options as `Connection`'s fields, then
    `parsed`, the options that need more than a copy."""
    fields = {
        name: value.value if isinstance(value, Enum) else value
        for name, value in ctx.params.items()
        if name in model.model_fields
    }
    if issubclass(model, Connection):
        fields |= connection_fields(ctx)
    return fields | parsed


def connection_fields(ctx: typer.Context) -> dict[str, Any]:
    """The options declared above that `Connection` names or counts differently."""
    given = ctx.params
    return {
        "base_urls": list(given["base_url"] or []),
        "api_key": SecretStr(given["api_key"]) if given["api_key"] else None,
        "api_key_source": api_key_source(ctx),
        "max_response_bytes": round(given["max_response_mb"] * MB),
        "batch": given["batch"] or given["batch_no_wait"],
    }


def api_key_source(ctx: typer.Context) -> str:
    """The name to blame in an authentication error: the option, or the variable it came from."""
    source = ctx.get_parameter_source("api_key")
    # Compared by name: Typer and Click each define their own ParameterSource enum.
    if getattr(source, "name", None) == "COMMANDLINE":
        return "--api-key"
    if getattr(source, "name", None) == "DEFAULT_MAP":
        return f"api-key in --config {ctx.params.get('config_file')}"
    return env("api_key") if os.environ.get(env("api_key")) else "OPENAI_API_KEY"


def read_config_file(ctx: typer.Context, path: Path | None) -> Path | None:
    """Make the keys of a TOML file the defaults of the command's options (an eager callback):
    Click then takes an option given, else its variable, else the file, else the default."""
    if path is None:
        return path
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        message = f"evol: error: {path}: {getattr(error, 'strerror', None) or error}"
        typer.echo(printable(message), err=True)
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
