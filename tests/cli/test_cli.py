"""The command line itself: help for every command, version, config files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer

from evol import __version__
from evol.cli import app
from tests.support.runs import write_seeds


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


def _command_objects(group=None, prefix: tuple[str, ...] = ()):
    """Every command of `evol` as (path, click command), groups walked into."""
    from typer.main import get_command

    group = group or get_command(app)
    for name, command in sorted(getattr(group, "commands", {}).items()):
        yield (*prefix, name), command
        yield from _command_objects(command, (*prefix, name))


def test_every_command_that_prints_json_takes_the_one_json_option() -> None:
    """One declaration (evol.cli.options.Json): the same spelling, variable and help for every
    command, so --no-json undoes EVOL_JSON wherever --json is taken."""
    declared = {
        path: (*option.opts, *option.secondary_opts, option.envvar, option.help)
        for path, command in _command_objects()
        for option in getattr(command, "params", [])
        if option.name == "as_json"
    }
    assert {path[0] for path in declared} >= {"run", "score", "stats", "export", "show", "merge"}
    one = ("--json", "--no-json", "EVOL_JSON", "Print the result as one JSON object on stdout.")
    assert {path: one for path in declared} == declared


def test_evol_json_asks_any_command_for_json_and_no_json_undoes_it(evol, tmp_path: Path) -> None:
    seeds = write_seeds(tmp_path / "seeds.jsonl", [{"instruction": "Name three birds."}])
    assert json.loads(evol("validate", seeds, env={"EVOL_JSON": "1"}).stdout)["seeds"] == 1
    as_text = evol("validate", seeds, "--no-json", env={"EVOL_JSON": "1"}).stdout
    assert not as_text.lstrip().startswith("{")


# -- every option reaches the config it is for -----------------------------------------------

# Neither the config nor the library call: how the command prints or fails, where it reads.
OUTPUT_ONLY = {"quiet", "as_json", "debug", "dry_run", "config_file"}
# Options whose value must have a form; any other takes its maximum, else its minimum, else a
# number (the judge's temperature is 0 unless set: its minimum would change nothing).
VALUES = {
    "operations": "deepen",
    "shard": "1/2",
    "seed_format": "csv",
    "dedup_method": "minhash",
    "base_url": "http://127.0.0.1:9/v1",
    "constraint_ids": "punctuation:no_comma",
    "engine": "ray",
    "ray_address": "ray://head:10001",
    "ray_model": "Qwen/Qwen2.5-0.5B-Instruct",
}


# Options refused without another (rather than ignored): compared with that other one given.
NEEDS = {"ray_model": ["--engine", "ray"]}


def _other_value(param) -> list[str]:
    """Arguments that give `param` a value other than its default."""
    if param.is_flag:
        return [param.secondary_opts[0] if param.default is True else param.opts[0]]
    if param.name in VALUES:
        return [param.opts[0], VALUES[param.name]]
    for bound in (param.max, param.min):
        if bound is not None and bound != param.default:
            return [param.opts[0], str(bound)]
    return [param.opts[0], str((param.default or 0) + 1)]


def _options_of(command: str) -> list:
    from typer.main import get_command

    params = get_command(app).commands[command].params
    return [p for p in params if p.param_type_name == "option" and p.name not in OUTPUT_ONLY]


@pytest.fixture
def planned(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """`evol run|score ... --dry-run` -> what its plan was asked for: the config as run.json
    would hold it, with the key, and the prices."""
    import evol.cli.quality
    import evol.cli.run

    seeds = write_seeds(tmp_path / "seeds.jsonl", [{"instruction": "Name a tree"}])
    asked: list[dict] = []

    def plan(config, **prices):
        key = config.api_key.get_secret_value() if config.api_key else None
        asked.append(config.model_dump(mode="json") | {"key": key, "prices": prices})
        raise typer.Exit(0)

    monkeypatch.setattr(evol.cli.run, "plan_run", plan)
    monkeypatch.setattr(evol.cli.quality, "plan_scoring", plan)

    def invoke(command: str, *extra: str, env: dict[str, str] | None = None) -> dict:
        from typer.testing import CliRunner

        target = [str(seeds), "--out", str(tmp_path / "run")] if command == "run" else []
        args = [command, *target, *([str(tmp_path / "run")] if command == "score" else [])]
        result = CliRunner().invoke(app, [*args, "--dry-run", *extra], env=env)
        assert result.exit_code == 0, result.output
        return asked.pop()

    return invoke


@pytest.mark.parametrize(
    ("command", "param"),
    [(command, param) for command in ("run", "score") for param in _options_of(command)],
    ids=lambda value: value if isinstance(value, str) else value.name,
)
def test_every_option_of_run_and_score_reaches_what_they_call(planned, command, param) -> None:
    needs = NEEDS.get(param.name, [])
    default = planned(command, *needs)
    assert planned(command, *needs, *_other_value(param)) != default, param.opts


def test_an_option_beats_its_variable_which_beats_the_config_file(planned, tmp_path) -> None:
    config = tmp_path / "evol.toml"
    config.write_text("generations = 2\nconcurrency = 5\napi-key = 'from-file'\n")
    from_file = planned("run", "--config", str(config))
    assert (from_file["generations"], from_file["concurrency"]) == (2, 5)
    assert from_file["api_key_source"] == f"api-key in --config {config}"
    env = {"EVOL_GENERATIONS": "3", "EVOL_API_KEY": "from-env"}
    from_env = planned("run", "--config", str(config), env=env)
    assert (from_env["generations"], from_env["concurrency"], from_env["key"]) == (3, 5, "from-env")
    assert from_env["api_key_source"] == "EVOL_API_KEY"
    given = planned("run", "--config", str(config), "--generations", "1", "--api-key", "k", env=env)
    assert (given["generations"], given["key"], given["api_key_source"]) == (1, "k", "--api-key")


@pytest.mark.parametrize("command", ["run", "score"])
def test_run_and_score_map_the_connection_options_alike(planned, command) -> None:
    config = planned(
        command,
        *("--base-url", "http://a/v1", "--base-url", "http://b/v1", "--api-key", ""),
        *("--max-response-mb", "0.5", "--batch-no-wait"),
        env={"OPENAI_API_KEY": "sk-env"},
    )
    assert config["base_urls"] == ["http://a/v1", "http://b/v1"]
    assert config["key"] is None  # an empty --api-key is none, not the variable's
    assert config["max_response_bytes"] == 512 * 1024
    assert config["batch"] is config["batch_no_wait"] is True  # --batch-no-wait implies --batch
    defaults = planned(command)
    assert defaults["base_urls"] == [] and defaults["api_key_source"] == "OPENAI_API_KEY"
    assert defaults["max_response_bytes"] == 16 * 1024 * 1024 and defaults["batch"] is False


def test_run_help_in_a_narrow_terminal_breaks_no_word(tmp_path: Path) -> None:
    """At COLUMNS=40 the options' column kept 36 characters and left 12 for the help, so
    words were cut in two ('extensi' / 'on)')."""
    from typer.testing import CliRunner

    result = CliRunner().invoke(app, ["run", "--help"], env={"COLUMNS": "40"}, terminal_width=40)
    assert result.exit_code == 0
    words = result.stdout.split()
    assert "extension)." in words
    assert "instru" not in words and "extensi" not in words
