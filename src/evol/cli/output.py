"""What every command prints and how it ends: text from outside made inert, each failure the
user can act on as one line on stderr with its exit code."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer
from pydantic import ValidationError

from evol.errors import OUT_OF_RESOURCES, EvolError, storage_failure
from evol.terminal import json_printable, printable

PENDING_EXIT = 3  # --batch-no-wait: batches are pending; run the same command again


@contextmanager
def user_errors(debug: bool, *, as_json: bool = False) -> Iterator[None]:
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


def echo_outside(text: str, *, as_json: bool = False, err: bool = False) -> None:
    """Print what holds text from a server, a seed file, a run or a path, its controls made
    inert."""
    typer.echo(json_printable(text) if as_json else printable(text), err=err)


def warn(message: str) -> None:
    """One warning line on stderr."""
    typer.echo(f"evol: warning: {printable(message, lines=False)}", err=True)


def warn_unfinished(run_dir: Path, status: str) -> None:
    """Say that the figures of a run that is not complete cover only what it wrote so far."""
    if status != "complete":
        typer.echo(
            f"evol: warning: {run_dir} is {printable(status, lines=False)}, not complete: these "
            "figures cover what was written so far",
            err=True,
        )


def end_with(summary: Any, text: str, *, quiet: bool, as_json: bool) -> None:
    """What a long command prints at its end: its summary as JSON on stdout (--json), `text`
    on stderr (unless --quiet); then its exit code (`exit_for`)."""
    if as_json:
        echo_outside(json.dumps(summary.model_dump(mode="json"), ensure_ascii=False), as_json=True)
    if not quiet:
        echo_outside(text, err=True)
    exit_for(summary.status)


def exit_for(status: str) -> None:
    """End as a run or a scoring ended: 3 while batches are pending, 1 unless complete."""
    if status == "pending":
        raise typer.Exit(PENDING_EXIT)
    if status != "complete":
        raise typer.Exit(1)
