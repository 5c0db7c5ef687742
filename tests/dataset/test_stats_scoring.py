"""`evol stats` on a scored run: scores counted in records as `score` counts them, and the
scoring calls a row of the cost table, priced as the run's own calls are."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.support.fake_server import FakeServer
from tests.support.runs import run_args, write_seeds
from tests.support.scoring import SEEDS as SCORED_SEEDS
from tests.support.scoring import ScoringResponder


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
    # With no price given, such a run's calls are not free: fake-model has no known price.
    unpriced = json.loads(evol("stats", run, "--json").stdout)
    assert unpriced["roles"]["score"]["cost_usd"] is None
    assert unpriced["total_cost_usd"] is None
