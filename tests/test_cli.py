"""The command line itself: help for every command, version, config files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from conftest import write_seeds

from evol import __version__
from evol.cli import app


def commands(typer_app: typer.Typer, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = []
    for command in typer_app.registered_commands:
        found.append((*prefix, command.name or command.callback.__name__))
    for group in typer_app.registered_groups:
        found.append((*prefix, group.name))
        found += commands(group.typer_instance, (*prefix, group.name))
    return found


@pytest.mark.parametrize("command", [(), *commands(app)], ids=lambda c: " ".join(c) or "evol")
def test_every_command_has_help_text(evol, command: tuple[str, ...]) -> None:
    from typer.main import get_command

    target = get_command(app)
    for name in command:
        target = target.commands[name]
    summary = (target.help or "").strip().splitlines()
    assert summary and len(summary[0]) > 10, f"{command} has no help text"
    result = evol(*command, "--help")
    assert result.exit_code == 0
    assert " ".join(summary[0].split()[:4]) in " ".join(result.stdout.replace("│", " ").split())


def test_every_run_option_is_documented(evol) -> None:
    from typer.main import get_command

    run = get_command(app).commands["run"]
    undocumented = [p.name for p in run.params if not getattr(p, "help", None)]
    assert undocumented == []


def test_version(evol) -> None:
    assert evol("--version").stdout.strip() == f"evol {__version__}"


def test_a_config_file_sets_defaults_that_flags_override(evol, server, tmp_path: Path) -> None:
    seeds = write_seeds(tmp_path / "seeds.jsonl", [{"instruction": "Name a tree"}])
    config = tmp_path / "evol.toml"
    config.write_text(
        f'out = "{tmp_path / "from-config"}"\ngenerations = 2\nseed = 11\n'
        f'operations = "deepen"\nbase-url = "{server.base_url}"\njudge = false\nquiet = true\n'
    )
    assert evol("run", seeds, "--config", config, "--seed", "12").exit_code == 0
    manifest = json.loads((tmp_path / "from-config" / "run.json").read_text())
    assert manifest["config"]["generations"] == 2
    assert manifest["config"]["seed"] == 12
    assert manifest["config"]["rules"]["judge"] is False
    assert manifest["config"]["operations"] == {"deepen": 1.0}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("generations = \n", "evol.toml: Invalid value (at line 1, column 15)"),
        ("generation = 2\n", "unknown option 'generation'"),
    ],
)
def test_a_bad_config_file_is_one_line(evol, tmp_path: Path, text: str, message: str) -> None:
    config = tmp_path / "evol.toml"
    config.write_text(text)
    result = evol("run", tmp_path / "seeds.jsonl", "--config", config)
    assert result.exit_code == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("command", [["run"], ["export"], ["validate"], ["stats"], ["show"]])
def test_boolean_flags_read_as_flags_in_help(evol, command: list[str]) -> None:
    text = evol(*command, "--help", env={"COLUMNS": "200"}).stdout
    assert "<bool>" not in text and "BOOLEAN" not in text
    if command == ["export"]:
        assert "--shuffle / --no-shuffle" in text
    if command == ["run"]:
        assert "--judge / --no-judge" in text and "--dedup " in text
