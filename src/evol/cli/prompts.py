"""`evol prompts list` and `evol prompts show`: the templates a run uses, and where each comes
from."""

from __future__ import annotations

from typing import Annotated

import typer

from evol.cli import options as shared
from evol.cli.command import EvolCommand
from evol.cli.output import echo_outside, user_errors
from evol.method.prompts import PROMPT_NAMES, PromptSet, format_sources, template_text

app = typer.Typer(
    help="List and show the prompt templates a run uses.",
    no_args_is_help=True,
    rich_markup_mode=None,
)


@app.command("list", cls=EvolCommand)
def prompts_list(prompts: shared.Prompts = None) -> None:
    """List the templates and the file each one comes from."""
    with user_errors(False):
        loaded = PromptSet.load(prompts)
    echo_outside(format_sources(loaded))


@app.command("show", cls=EvolCommand)
def prompts_show(
    name: Annotated[str, typer.Argument(help=f"One of: {', '.join(PROMPT_NAMES)}.")],
    prompts: shared.Prompts = None,
) -> None:
    """Print one template as a run would use it."""
    with user_errors(False):
        typer.echo(template_text(name, prompts), nl=False)
