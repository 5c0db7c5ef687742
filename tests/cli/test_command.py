"""What every command shares (evol.cli.command): help that fits a screen, every option in a
panel, and a typo answered with the option meant."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.main import get_command

from evol.cli import app
from evol.cli.command import PANELS
from evol.seeds.formats import EXTENSIONS

SCREEN = {"COLUMNS": "100", "NO_COLOR": "1"}
RUN_PANELS = [
    "Seeds",
    "Output",
    "Method",
    "Rules",
    "Model and connection",
    "Sampling",
    "Limits and retries",
    "Batch and shards",
]
SCORE_PANELS = [
    "Scores",
    "Output",
    "Model and connection",
    "Limits and retries",
    "Batch and shards",
]
# `evol run --help` was 211 lines at 100 columns; two screens of 60 at most now.
RUN_HELP_LINES = 120


def help_page(*command: str) -> str:
    """`evol COMMAND --help` as a terminal 100 columns wide shows it (CliRunner forces 80)."""
    result = subprocess.run(
        [sys.executable, "-m", "evol", *command, "--help"],
        env=os.environ | SCREEN,
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout


def help_sections(text: str) -> dict[str, str]:
    """Title -> body of each section of a plain Click help page ("Seeds:" ... next title)."""
    parts = re.split(r"^(\S[^\n]*):\n", text, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def options_of(command: str) -> list:
    return [
        param
        for param in get_command(app).commands[command].params
        if param.param_type_name == "option"
    ]


@pytest.mark.parametrize(
    ("command", "panels", "most_lines"),
    [("run", RUN_PANELS, RUN_HELP_LINES), ("score", SCORE_PANELS, 70)],
)
def test_help_groups_every_option_into_a_panel_and_fits(
    command: str, panels: list[str], most_lines: int
) -> None:
    page = help_page(command)
    lines = page.splitlines()
    assert len(lines) <= most_lines, len(lines)
    assert max(len(line) for line in lines) <= 100
    sections = help_sections(page)
    assert [title for title in sections if title in PANELS] == [
        *(["Arguments"] if command == "score" else []),
        *panels,
        "Options",
    ]
    assert "Options" in sections and sections["Options"].split() == [
        "-h,",
        "--help",
        *["Show", "this", "message", "and", "exit."],
    ]  # only --help is left outside a panel
    for option in options_of(command):
        assert option.rich_help_panel in panels, option.name
        shown = re.escape(option.opts[-1])
        assert re.search(rf"(^|\s){shown}[\s,]", sections[option.rich_help_panel]), option.opts


def test_the_seeds_argument_lists_every_format_read() -> None:
    seeds = help_sections(help_page("run"))["Seeds"]
    described = " ".join(seeds.split("--format")[0].split())
    for extension in EXTENSIONS:
        assert re.search(rf"{re.escape(extension)}\b", described), extension


@pytest.mark.slow
def test_a_short_command_keeps_one_options_section() -> None:
    # stats takes the price options that run puts under "Output": three options need no panels.
    sections = help_sections(help_page("stats"))
    assert [title for title in sections if title in PANELS] == ["Arguments", "Options"]
    assert "--price-in" in sections["Options"]


@pytest.mark.parametrize(
    ("command", "typo", "meant"),
    [
        ("run", "--genrations", "--generations"),
        ("run", "--generation", "--generations"),
        ("run", "--modle", "--model"),
        ("run", "--concurency", "--concurrency"),
        ("run", "--no-jugde", "--no-judge"),
        ("run", "--base_url", "--base-url"),
        ("run", "--judge-max-token", "--judge-max-tokens"),
        ("run", "--dedup-treshold", "--dedup-threshold"),
        ("export", "--shufle", "--shuffle"),
        ("score", "--retry-mising", "--retry-missing"),
    ],
)
def test_a_typo_is_answered_with_the_closest_option(
    evol, tmp_path: Path, command: str, typo: str, meant: str
) -> None:
    result = evol(command, tmp_path / "x", typo, "3")
    assert result.exit_code == 2
    error = result.stderr.strip().splitlines()[-1]
    assert error == f"Error: No such option: {typo}; did you mean {meant}?"


def test_a_typo_like_no_option_gets_no_suggestion(evol, tmp_path: Path) -> None:
    result = evol("run", tmp_path / "x", "--zzzzzz")
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines()[-1] == "Error: No such option: --zzzzzz"
