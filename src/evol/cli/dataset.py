"""The commands that read a run's dataset: `evol export`, `verify`, `show`, `report`, `stats`."""

from __future__ import annotations

import shutil
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from evol.cli import options as shared
from evol.cli.output import echo_outside, user_errors, warn, warn_unfinished
from evol.dataset.show import SHOWN_CHARS

if TYPE_CHECKING:
    from evol.dataset.export import ExportResult

# Each command imports the library code it calls when it runs: `evol run`, which needs none of
# it, then starts without it (imports are most of the CPU a run spends before its first request).


class ExportFileFormat(StrEnum):
    jsonl = "jsonl"
    json = "json"
    parquet = "parquet"


def export(
    run_dir: shared.RunDir,
    out: shared.OutFile,
    shape: shared.Shape = shared.ExportShape.alpaca,
    file_format: Annotated[
        ExportFileFormat | None,
        typer.Option("--file-format", help="File format (default: by the extension of --out)."),
    ] = None,
    generations: Annotated[
        str | None, typer.Option(help="Generations to include, e.g. 1-4 or 0,2 (default: all).")
    ] = None,
    split: Annotated[
        str | None,
        typer.Option(
            help="Parts and fractions, e.g. train=0.9,test=0.1; each lineage stays in one part."
        ),
    ] = None,
    shuffle: Annotated[
        bool, typer.Option("--shuffle/--no-shuffle", help="Shuffle the records within each part.")
    ] = False,
    seed: Annotated[int, typer.Option(help="Random seed of --split and --shuffle.")] = 0,
    system_prompt: Annotated[
        str | None,
        typer.Option(
            "--system-prompt",
            help="System turn to write (default: the run's --system-prompt; '' for none).",
        ),
    ] = None,
    as_json: shared.Json = False,
) -> None:
    """Write a run's dataset as Alpaca, ShareGPT, OpenAI chat, IFEval, RLVR, DPO pairs or evol's
    records."""
    from evol.dataset.export import export_run, format_export, parse_generations, parse_split

    with user_errors(False, as_json=as_json):
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
    _warn_export(result)
    echo_outside(result.model_dump_json() if as_json else format_export(result), as_json=as_json)


def _warn_export(result: ExportResult) -> None:
    """Say on stderr what an export left out, and that a run not complete is exported so far."""
    from evol.dataset.export import status_warning

    warning = status_warning(result)
    if warning:
        warn(warning)
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


def verify(
    dataset: Annotated[
        Path,
        typer.Argument(
            metavar="FILE",
            help="IFEval or RLVR rows (JSON Lines, a JSON array or Parquet), evol's records, or "
            "a run directory.",
        ),
    ],
    response_field: Annotated[
        str | None,
        typer.Option(
            "--response-field",
            help="The answer's field (default: response for IFEval, the last assistant message "
            "for RLVR, output for evol's records).",
        ),
    ] = None,
    as_json: shared.Json = False,
) -> None:
    """Check each answer against its verifiable constraints; pass rates per constraint id."""
    from evol.dataset.verification import format_verify, verify_dataset

    with user_errors(False, as_json=as_json):
        result = verify_dataset(dataset, response_field)
    echo_outside(result.model_dump_json() if as_json else format_verify(result), as_json=as_json)


def show(
    run_dir: shared.RunDir,
    record_id: Annotated[
        str,
        typer.Argument(
            metavar="ID", help="A record id; its whole lineage is shown, from the seed."
        ),
    ],
    as_json: shared.Json = False,
    full: Annotated[
        bool,
        typer.Option(
            "--full",
            help=f"Print every text whole (the tree cuts one over {SHOWN_CHARS:,} characters).",
        ),
    ] = False,
) -> None:
    """Show one lineage as a tree: each rewrite, what it changed, and the attempts eliminated."""
    from evol.dataset.show import format_lineage, lineage

    with user_errors(False, as_json=as_json):
        found = lineage(run_dir, record_id)
    if as_json:
        echo_outside(found.model_dump_json(), as_json=True)
        return
    echo_outside(format_lineage(found, width=shutil.get_terminal_size().columns, full=full))


def report(
    run_dir: shared.RunDir,
    out: Annotated[Path, typer.Option("--out", "-o", help="The HTML file to write.")],
    png: Annotated[
        Path | None,
        typer.Option("--png", help="Also write each plot as a PNG into this directory."),
    ] = None,
) -> None:
    """Write a self-contained HTML page of plots about a run (and, with --png, the plots alone)."""
    from evol.dataset.report import write_report

    with user_errors(False):
        plots, status = write_report(run_dir, out, png_dir=png)
    warn_unfinished(run_dir, status)
    echo_outside(f"{out}: {len(plots)} plots" + (f"; PNG files in {png}" if png else ""))


def stats(
    run_dir: shared.RunDir,
    price_in: shared.PriceIn = None,
    price_out: shared.PriceOut = None,
    as_json: shared.Json = False,
) -> None:
    """Show what a run kept and eliminated per generation and operation, and what it cost."""
    from evol.dataset.stats import run_stats
    from evol.dataset.stats_text import format_stats

    with user_errors(False, as_json=as_json):
        result = run_stats(run_dir, price_in=price_in, price_out=price_out)
    warn_unfinished(run_dir, result.status)
    if as_json:
        echo_outside(result.model_dump_json(), as_json=True)
        return
    echo_outside(format_stats(result))
