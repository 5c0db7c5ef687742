"""The first hour's smaller points (#25): help that fits a screen, typos answered with the
option meant, a missing run directory named as such, scores counted in records in `score` and
`stats` alike, the scoring calls in the cost table, and room for the operations plot's labels."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.main import get_command

from evol.cli import app
from evol.cli.command import PANELS
from evol.dataset.stats import OperationStats, RunStats
from evol.seeds.formats import EXTENSIONS
from tests.support.fake_server import FakeServer
from tests.support.runs import run_args, write_seeds
from tests.support.scoring import SEEDS as SCORED_SEEDS
from tests.support.scoring import ScoringResponder

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


@pytest.mark.parametrize(
    "command",
    [
        ["stats"],
        ["show", "{run}", "s1"],
        ["report", "{run}", "--out", "{tmp}/r.html"],
        ["export", "{run}", "--out", "{tmp}/x.jsonl"],
        ["score", "{run}"],
        ["select", "{run}", "--budget", "2", "--out", "{tmp}/x.jsonl"],
        ["merge", "{run}", "--out", "{tmp}/merged"],
    ],
    ids=lambda command: command[0],
)
def test_a_run_directory_that_does_not_exist_is_named_as_such(
    evol, tmp_path: Path, command: list[str]
) -> None:
    run = tmp_path / "runs" / "nope"
    args = [a.replace("{run}", str(run)).replace("{tmp}", str(tmp_path)) for a in command]
    if "{run}" not in command:
        args.append(str(run))
    result = evol(*args)
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        f"evol: error: {run}: the directory does not exist (name the --out of an evol run)"
    ]
    assert not (tmp_path / "runs").exists()

    run.parent.mkdir()
    run.write_text("not a run\n")
    result = evol(*args)
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        f"evol: error: {run}: not a directory (name the --out of an evol run)"
    ]


@pytest.fixture
def scored_run(evol, tmp_path: Path) -> tuple[Path, dict]:
    """A run of 4 lineages of 3 records whose [never] lineage gets no score, and the JSON
    summary of `evol score` on it."""
    seeds, run = write_seeds(tmp_path / "seeds.jsonl", SCORED_SEEDS), tmp_path / "run"
    with FakeServer() as server:
        assert evol(*run_args(server, seeds, run, "--generations", "2")).exit_code == 0
    assert "score" not in json.loads(evol("stats", run, "--json").stdout)["roles"]
    with FakeServer(responder=ScoringResponder()) as server:
        result = evol("score", run, "--base-url", server.base_url, "--no-metrics", "--json")
    assert result.exit_code == 0, result.output
    return run, json.loads(result.stdout)


def test_score_and_stats_count_missing_scores_in_records(evol, scored_run) -> None:
    run, summary = scored_run
    stats = json.loads(evol("stats", run, "--json").stdout)
    never = 3  # the [never] seed and its two evolutions: no score, whatever the scorer
    for scorer in ("difficulty", "complexity"):
        row = summary["scorers"][scorer]
        assert (row["scored"], row["missing"]) == (12 - never, never), scorer
        assert stats["scores"][scorer]["missing"] == row["missing"], scorer
        assert stats["scores"][scorer]["scored"] == row["records_scored"] == row["scored"]

    table = evol("stats", run).stdout
    assert "complexity by fake-model (3 records missing)" in table
    with FakeServer(responder=ScoringResponder()) as server:
        printed = evol("score", run, "--base-url", server.base_url, "--no-metrics").stdout
    assert "counted in records" in printed
    again = json.loads(evol("score", run, "--dry-run", "--json", "--model", "fake-model").stdout)
    # Every record with a line counts as scored already: 12 a scorer, complexity included.
    assert {name: plan["already"] for name, plan in again["scorers"].items()} == {
        "difficulty": 12,
        "complexity": 12,
    }


def test_stats_cost_table_has_a_row_for_the_scoring_calls(evol, scored_run) -> None:
    run, summary = scored_run
    lines = [json.loads(line) for line in (run / "scores.jsonl").read_text().splitlines()]
    prompt = sum(line["usage"].get("prompt_tokens", 0) for line in lines)
    completion = sum(line["usage"].get("completion_tokens", 0) for line in lines)
    assert prompt and completion
    assert (prompt, completion) == (
        summary["usage"]["prompt_tokens"],
        summary["usage"]["completion_tokens"],
    )

    priced = json.loads(evol("stats", run, "--json", "--price-in", "1", "--price-out", "2").stdout)
    row = priced["roles"]["score"]
    assert (row["model"], row["prompt_tokens"], row["completion_tokens"]) == (
        "fake-model",
        prompt,
        completion,
    )
    assert row["cost_usd"] == round((prompt + 2 * completion) / 1e6, 6)
    assert priced["total_cost_usd"] == round(
        sum(role["cost_usd"] for role in priced["roles"].values()), 6
    )
    table = evol("stats", run).stdout
    assert re.search(rf"^score\s+fake-model\s+{prompt}\s+{completion}\s+-$", table, re.M)

    # Scored by the run's own embedded model: free, as the run's calls are.
    manifest = json.loads((run / "run.json").read_text())
    manifest["backend"]["name"] = "local"
    (run / "run.json").write_text(json.dumps(manifest))
    local = json.loads(evol("stats", run, "--json").stdout)
    assert local["roles"]["score"]["cost_usd"] == 0.0 and local["total_cost_usd"] == 0.0

    # A plugin backend no longer installed is priced as a server, not refused and not free.
    manifest["backend"]["name"] = "a-plugin-since-removed"
    (run / "run.json").write_text(json.dumps(manifest))
    gone = evol("stats", run, "--json", "--price-in", "1", "--price-out", "2")
    assert gone.exit_code == 0, gone.output
    assert json.loads(gone.stdout)["roles"]["score"]["cost_usd"] == row["cost_usd"] > 0


def test_the_operations_plot_leaves_room_for_its_labels() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from evol.dataset.report_plots import _operation_plot

    # Small counts, as in a first run: autoscaling put the top of the axes at the tallest bar.
    operations = {
        "add_constraints": OperationStats(kept=3, eliminated=0, success_rate=1.0),
        "deepen": OperationStats(kept=1, eliminated=1, success_rate=0.5),
        "breadth": OperationStats(kept=0, eliminated=2, success_rate=0.0),
    }
    stats = RunStats(
        run="r",
        status="complete",
        generations=[],
        operations=operations,
        roles={},
        total_cost_usd=None,
    )
    figure = _operation_plot(plt, stats, [])
    try:
        figure.canvas.draw()  # limits and layout as savefig leaves them
        renderer = figure.canvas.get_renderer()
        axes = figure.axes[0]
        inside = axes.get_window_extent(renderer)
        title = axes.title.get_window_extent(renderer)
        legend = axes.get_legend().get_window_extent(renderer)
        labels = [text for text in axes.texts if text.get_text().endswith("%")]
        assert [text.get_text() for text in labels] == ["100%", "50%", "0%"]
        for text in labels:
            box = text.get_window_extent(renderer)
            assert box.y1 < inside.y1 < title.y0, text.get_text()  # under the frame's top
            assert not box.overlaps(legend), text.get_text()
    finally:
        plt.close(figure)
