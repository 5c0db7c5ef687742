"""`evol run`'s elimination rules as options (also taken by `evol optimize`): each rule's
on/off pair, and the duplicate rule's method and threshold, under the Rules panel."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

import typer

from evol.cli.command import (
    RULES_PANEL,
)
from evol.cli.options import env


class DedupChoice(StrEnum):
    auto = "auto"
    rouge_l = "rouge-l"
    minhash = "minhash"


def _rule(flag: str, help: str) -> Any:
    """A rule's on/off pair, --NAME/--no-NAME, under Rules."""
    return typer.Option(
        f"--{flag}/--no-{flag}", envvar=env(flag), help=help, rich_help_panel=RULES_PANEL
    )


Judge = Annotated[bool, _rule("judge", "Eliminate evolutions an LLM judges equal to their parent.")]


SorryCheck = Annotated[bool, _rule("sorry-check", "Eliminate short sorry answers.")]


StopwordCheck = Annotated[
    bool, _rule("stopword-check", "Eliminate answers of only stop words and punctuation.")
]


LeakCheck = Annotated[
    bool, _rule("leak-check", "Eliminate instructions that leak the evolving prompt's words.")
]


GrowthCheck = Annotated[
    bool,
    _rule(
        "growth-check",
        "Eliminate rewrites that grew far past their parent (an answer, not a rewrite).",
    ),
]


SignalCheck = Annotated[
    bool,
    _rule(
        "signal-check", "Eliminate rewrites whose answer asks back or only repeats the instruction."
    ),
]


Dedup = Annotated[
    bool,
    typer.Option(
        "--dedup",
        envvar=env("dedup"),
        help="Eliminate repeats of another lineage's instruction.",
        rich_help_panel=RULES_PANEL,
    ),
]


DedupMethod = Annotated[
    DedupChoice,
    typer.Option(
        envvar=env("dedup_method"),
        help="rouge-l: compare with all; minhash: likely candidates only (large pools).",
        rich_help_panel=RULES_PANEL,
    ),
]


DedupThreshold = Annotated[
    float,
    typer.Option(
        min=0.01,
        max=1.0,
        envvar=env("dedup_threshold"),
        help="ROUGE-L F1 at which two instructions are duplicates.",
        rich_help_panel=RULES_PANEL,
    ),
]
