"""`evol run`'s own options, each declared once as an `Annotated` type, and `run_config`, which
turns all of them into the `RunConfig` the run is given."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from evol.cli.command import (
    BATCH_PANEL,
    METHOD_PANEL,
    MODEL_PANEL,
    OUTPUT_PANEL,
    SAMPLING_PANEL,
    SEEDS_PANEL,
)
from evol.cli.options import config_fields, env, read_config_file
from evol.config import RoleParams, RunConfig
from evol.method.drawing import parse_ids
from evol.method.elimination import EliminationRules
from evol.method.operations import parse_weights
from evol.seeds import Shard
from evol.seeds.formats import EXTENSIONS

# -- seeds and output --------------------------------------------------------------------------

Seeds = Annotated[
    Path,
    typer.Argument(
        help=f"Seed file: {', '.join(EXTENSIONS)} (any other name: JSON Lines).",
        rich_help_panel=SEEDS_PANEL,
    ),
]
SkipInvalid = Annotated[
    bool,
    typer.Option(
        "--skip-invalid/--no-skip-invalid",
        envvar=env("skip_invalid"),
        help="Skip invalid seed rows instead of stopping.",
        rich_help_panel=SEEDS_PANEL,
    ),
]
Limit = Annotated[
    int | None,
    typer.Option(
        min=1,
        envvar=env("limit"),
        help="Evolve only the first N seeds (a larger N, or none, later extends the run).",
        rich_help_panel=SEEDS_PANEL,
    ),
]
Out = Annotated[
    Path,
    typer.Option(
        "--out",
        "-o",
        envvar=env("out"),
        help="Run directory (resumed if it exists).",
        rich_help_panel=OUTPUT_PANEL,
    ),
]
Overwrite = Annotated[
    bool,
    typer.Option(
        envvar=env("overwrite"),
        help="Delete the run in --out and start afresh.",
        rich_help_panel=OUTPUT_PANEL,
    ),
]
Quiet = Annotated[
    bool,
    typer.Option(
        "--quiet",
        "-q",
        envvar=env("quiet"),
        help="No progress bar or messages.",
        rich_help_panel=OUTPUT_PANEL,
    ),
]
DryRun = Annotated[
    bool,
    typer.Option(
        "--dry-run",
        help="Print the calls per role and an estimated cost; call nothing.",
        rich_help_panel=OUTPUT_PANEL,
    ),
]
ConfigFile = Annotated[
    Path | None,
    typer.Option(
        "--config",
        is_eager=True,
        callback=read_config_file,
        envvar=env("config"),
        help="TOML file of option defaults (keys: long option names).",
        rich_help_panel=OUTPUT_PANEL,
    ),
]
ShardSpec = Annotated[
    str | None,
    typer.Option(
        envvar=env("shard"),
        help="i/N: evolve only shard i of N; evol merge joins the shards.",
        rich_help_panel=BATCH_PANEL,
    ),
]

# -- the method ------------------------------------------------------------------------------

Generations = Annotated[
    int,
    typer.Option(
        min=0,
        max=100,
        envvar=env("generations"),
        help="Evolution rounds.",
        rich_help_panel=METHOD_PANEL,
    ),
]
Seed = Annotated[
    int,
    typer.Option(
        envvar=env("seed"),
        help="Random seed: same seed, same operations.",
        rich_help_panel=METHOD_PANEL,
    ),
]
Operations = Annotated[
    str,
    typer.Option(
        envvar=env("operations"),
        help="Weights or subset, e.g. add_constraints=2,breadth=1 (default: all, uniform).",
        rich_help_panel=METHOD_PANEL,
    ),
]
# Verifiable constraints (#26).
Verifiable = Annotated[
    bool,
    typer.Option(
        "--verifiable",
        envvar=env("verifiable"),
        help="Every evolution adds a constraint code can check.",
        rich_help_panel=METHOD_PANEL,
    ),
]
ConstraintIds = Annotated[
    str | None,
    typer.Option(
        envvar=env("constraint_ids"),
        help="IFEval ids the constraints are drawn from (default: all).",
        rich_help_panel=METHOD_PANEL,
    ),
]
AnswerAttempts = Annotated[
    int,
    typer.Option(
        min=0,
        envvar=env("answer_attempts"),
        help="Extra answers on a failed constraint.",
        rich_help_panel=METHOD_PANEL,
    ),
]
AnswerN = Annotated[
    bool,
    typer.Option(
        "--answer-n",
        envvar=env("answer_n"),
        help="Ask for the extra answers in one request (OpenAI's n).",
        rich_help_panel=METHOD_PANEL,
    ),
]
AnswerSeeds = Annotated[
    bool,
    typer.Option(
        "--answer-seeds/--no-answer-seeds",
        envvar=env("answer_seeds"),
        help="Answer seeds that have no output.",
        rich_help_panel=METHOD_PANEL,
    ),
]
SystemPrompt = Annotated[
    str | None,
    typer.Option(
        envvar=env("system_prompt"),
        help="A system turn for the answerer (kept in exports).",
        rich_help_panel=METHOD_PANEL,
    ),
]
ParallelJudge = Annotated[
    bool,
    typer.Option(
        "--parallel-judge/--no-parallel-judge",
        envvar=env("parallel_judge"),
        help="Answer and judge at once; pays for rejected rewrites.",
        rich_help_panel=METHOD_PANEL,
    ),
]
InstructionCheck = Annotated[
    bool | None,
    typer.Option(
        "--instruction-check/--no-instruction-check",
        envvar=env("instruction_check"),
        help="Eliminate non-instructions (default: on; off for SmolLM2).",
        rich_help_panel=METHOD_PANEL,
    ),
]
AnswerCheck = Annotated[
    bool | None,
    typer.Option(
        "--answer-check/--no-answer-check",
        envvar=env("answer_check"),
        help="The judge model checks each answer does its task (one call more per "
        "answer). Default: on when --judge-model is set.",
        rich_help_panel=METHOD_PANEL,
    ),
]

# -- the models and their sampling -----------------------------------------------------------


def _model(role: str, help: str) -> Any:
    """The model of one role (or, with `role` "", of all)."""
    name = f"{role}_model" if role else "model"
    return typer.Option(envvar=env(name), help=help, rich_help_panel=MODEL_PANEL)


def _temperature(role: str, default: str) -> Any:
    return typer.Option(
        min=0,
        max=2,
        envvar=env(f"{role}_temperature"),
        help=f"{role.capitalize()} temperature (default: {default}).",
        rich_help_panel=SAMPLING_PANEL,
    )


def _max_tokens(role: str, default: str) -> Any:
    return typer.Option(
        min=1,
        envvar=env(f"{role}_max_tokens"),
        help=f"Token cap per {role} reply (default: {default}).",
        rich_help_panel=SAMPLING_PANEL,
    )


Model = Annotated[
    str | None, _model("", "Model for every role (default: the server's only model).")
]
EvolveModel = Annotated[str | None, _model("evolve", "Model that rewrites instructions.")]
AnswerModel = Annotated[str | None, _model("answer", "Model that answers instructions.")]
JudgeModel = Annotated[str | None, _model("judge", "Model that judges equality.")]
Temperature = Annotated[
    float | None,
    typer.Option(
        min=0,
        max=2,
        envvar=env("temperature"),
        help="Temperature of the evolver and the answerer (default: the provider's).",
        rich_help_panel=SAMPLING_PANEL,
    ),
]
MaxTokens = Annotated[
    int | None,
    typer.Option(
        min=1,
        envvar=env("max_tokens"),
        help="Token cap per evolver and answerer reply (default: the provider's); a reply cut "
        "there is eliminated.",
        rich_help_panel=SAMPLING_PANEL,
    ),
]
EvolveTemperature = Annotated[float | None, _temperature("evolve", "the provider's")]
EvolveMaxTokens = Annotated[int | None, _max_tokens("evolve", "--max-tokens")]
AnswerTemperature = Annotated[float | None, _temperature("answer", "the provider's")]
AnswerMaxTokens = Annotated[int | None, _max_tokens("answer", "--max-tokens")]
JudgeTemperature = Annotated[float | None, _temperature("judge", "0")]
JudgeMaxTokens = Annotated[int | None, _max_tokens("judge", "100")]
SAMPLING = (
    "temperature",
    "max_tokens",
    *(
        f"{role}_{name}"
        for role in ("evolve", "answer", "judge")
        for name in ("temperature", "max_tokens")
    ),
)


def run_config(ctx: typer.Context) -> RunConfig:
    """`evol run`'s options as the config of the run: the options named as a field of
    `RunConfig` as they are, the others parsed here."""
    given = ctx.params
    return RunConfig(
        **config_fields(
            ctx,
            RunConfig,
            operations=parse_weights(given["operations"], verifiable=given["verifiable"]),
            constraint_ids=parse_ids(given["constraint_ids"]),
            shard=Shard.parse(given["shard"]) if given["shard"] is not None else None,
            prompts_dir=given["prompts"],
            rules=EliminationRules(
                judge=given["judge"],
                instruction_check=given["instruction_check"],
                sorry=given["sorry_check"],
                stopwords=given["stopword_check"],
                leak=given["leak_check"],
                growth=given["growth_check"],
                signals=given["signal_check"],
                dedup=given["dedup"],
                dedup_method=given["dedup_method"].value,
                dedup_threshold=given["dedup_threshold"],
            ),
            params=RoleParams.from_options(**{name: given[name] for name in SAMPLING}),
        )
    )
