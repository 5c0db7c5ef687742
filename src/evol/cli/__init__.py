"""The `evol` command: parse options, build one config, call one library function.

Every option can also come from the environment as EVOL_<OPTION> (EVOL_GENERATIONS=4, ...);
OPENAI_API_KEY and OPENAI_BASE_URL are read as the OpenAI SDK reads them. `evol run --config
FILE` takes option defaults from a TOML file: an option given wins over its variable, which
wins over the file, which wins over the default.

One module per command group: `run` (run, merge, validate), `dataset` (export, verify, show,
report, stats), `quality` (score, select), `optimize`, `prompts`. The options several commands
share are declared once in `options`, run's own in `run_options`; `output` prints and fails as
every command does; `progress_display` draws a long command's progress.
"""

from __future__ import annotations

from typing import Annotated

import typer

from evol.cli import dataset, optimize, prompts, quality, run
from evol.cli.command import EvolCommand
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
# In the order `evol --help` lists them.
COMMANDS = (
    run.run,
    run.merge,
    run.validate,
    dataset.export,
    dataset.verify,
    dataset.show,
    dataset.report,
    dataset.stats,
    quality.score,
    quality.select,
    optimize.optimize,
)
for command in COMMANDS:
    app.command(cls=EvolCommand)(command)
app.add_typer(prompts.app, name="prompts")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"evol {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """Evolve seed instructions into a larger, harder instruction dataset (Evol-Instruct)."""


def main() -> None:
    """Console-script entry point."""
    app(prog_name="evol")
