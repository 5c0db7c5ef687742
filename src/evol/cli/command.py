"""How every `evol` command parses and explains itself: help grouped into panels, and a typo
answered with the one option it most likely meant.

The help stays Click's plain text (no boxes); options are grouped under the `rich_help_panel`
each declares, in the order the panels first appear. The EVOL_<OPTION> variables are stated once
in each command's help, not after every option.
"""

from __future__ import annotations

import difflib
from typing import Any

import typer
from typer.core import TyperCommand

# The panels of `evol run` and `evol score`, in the order their help shows them; arguments
# without a panel come first, options without one ("Options": --help) last.
SEEDS_PANEL = "Seeds"
SCORES_PANEL = "Scores"
OUTPUT_PANEL = "Output"
METHOD_PANEL = "Method"
RULES_PANEL = "Rules"
MODEL_PANEL = "Model and connection"
SAMPLING_PANEL = "Sampling"
LIMITS_PANEL = "Limits and retries"
BATCH_PANEL = "Batch and shards"
PANELS = (
    "Arguments",
    SEEDS_PANEL,
    SCORES_PANEL,
    OUTPUT_PANEL,
    METHOD_PANEL,
    RULES_PANEL,
    MODEL_PANEL,
    SAMPLING_PANEL,
    LIMITS_PANEL,
    BATCH_PANEL,
    "Options",
)
# A command with fewer parameters than this lists them in one section, whatever their panels.
PANELLED_FROM = 16
# Below this similarity (difflib's ratio, option names without their dashes) no option is offered.
SUGGESTION_CUTOFF = 0.6


class EvolCommand(TyperCommand):
    """A Typer command whose help groups options by panel and whose typo hint is one option."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for param in self.params:
            param.show_envvar = False
            if getattr(param, "is_bool_flag", False) and param.default is False:
                param.show_default = False  # "[default: no-debug]" says nothing

    def format_options(self, ctx: Any, formatter: Any) -> None:
        params = self.get_params(ctx)
        panelled = len(params) >= PANELLED_FROM
        sections: dict[str, list[tuple[str, str]]] = {}
        for param in params:
            record = param.get_help_record(ctx)
            if record is None:
                continue
            title = "Arguments" if param.param_type_name == "argument" else "Options"
            if panelled:
                title = getattr(param, "rich_help_panel", None) or title
            sections.setdefault(title, []).append(record)
        for title in sorted(sections, key=PANELS.index):
            records = sections[title]
            with formatter.section(title):
                formatter.write_dl(records, col_max=_names_width(formatter.width))

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except typer.TyperException as error:
            # Click's NoSuchOption (private to Typer) lists every name difflib found, sorted
            # by the alphabet, so "--genrations" led with whichever came first.
            if not hasattr(error, "possibilities"):
                raise
            meant = closest_option(error.option_name, self.long_option_names())
            error.possibilities = []
            if meant:
                error.message = f"{error.message}; did you mean {meant}?"
            raise

    def long_option_names(self) -> list[str]:
        """Every --name this command takes, the --no-name of a flag pair included."""
        return [
            name
            for param in self.params
            for name in (*param.opts, *getattr(param, "secondary_opts", ()))
            if name.startswith("--")
        ]


def _names_width(width: int) -> int:
    """The option names' column: 36 characters, less in a narrow terminal, where it would
    leave the help a dozen characters and cut its words in two."""
    return max(16, min(36, width - 40))


def closest_option(typed: str, names: list[str]) -> str | None:
    """The option in `names` most like `typed`, compared without the leading dashes."""
    bare = {name.lstrip("-"): name for name in names}
    found = difflib.get_close_matches(typed.lstrip("-"), bare, n=1, cutoff=SUGGESTION_CUTOFF)
    return bare[found[0]] if found else None
