"""`evol score --dry-run` (evol.quality.score_plan): the calls and tokens it plans, and the lines it
prints, checked against the plan computed another way."""

from __future__ import annotations

from pathlib import Path

import pytest

from evol.quality.score_plan import plan_scoring
from evol.quality.scoring import ScoreConfig
from tests.support.runs import record, write_run, write_seeds
from tests.support.selection import ROWS, scored_run

pytestmark = pytest.mark.usefixtures("scripted_backend")

GPT_4O_MINI = (0.15, 0.60)  # USD per million prompt and completion tokens, as published


def lineage(root: str, *texts: str) -> list[dict]:
    """A seed and its chain of evolutions, one per generation."""
    ids = [root + "".join(f".{n}" for n in range(1, k + 1)) for k in range(len(texts))]
    return [record(i, text) for i, text in zip(ids, texts, strict=True)]


A = lineage("a", "Name a bird", "Name a bird that cannot fly", "Name two birds that cannot fly")


B = lineage("b", "Explain how a lock works", "Explain how a pin tumbler lock resists picking")


def test_a_dry_run_estimates_two_runs_together_as_the_sum_of_each(tmp_path: Path) -> None:
    plans = {
        name: plan_scoring(ScoreConfig(run_dir=write_run(tmp_path / name, records)))
        for name, records in {"a": A, "b": B, "both": A + B}.items()
    }
    for scorer in ("difficulty", "complexity"):
        rows = {name: plan.scorers[scorer] for name, plan in plans.items()}
        assert rows["a"].calls > 0 and rows["b"].calls > 0
        for field in ("calls", "prompt_tokens", "completion_tokens"):
            alone = getattr(rows["a"], field), getattr(rows["b"], field)
            assert min(alone) > 0
            assert getattr(rows["both"], field) == sum(alone), (scorer, field)


def test_the_dry_run_names_the_run_the_model_the_checks_and_the_price(evol, tmp_path: Path) -> None:
    run = write_run(tmp_path / "run", A + B)
    evaluation = write_seeds(tmp_path / "eval.jsonl", [{"instruction": "Name a fish"}])
    other = write_seeds(tmp_path / "other.jsonl", [{"instruction": "Name a lake"}])
    plan = plan_scoring(ScoreConfig(run_dir=run))
    rows = [
        f"  {scorer:<10} {row.calls} calls (0 records scored already), about "
        f"{row.prompt_tokens} prompt + {row.completion_tokens} completion tokens at most"
        for scorer, row in plan.scorers.items()
    ]
    prompt = sum(row.prompt_tokens for row in plan.scorers.values())
    completion = sum(row.completion_tokens for row in plan.scorers.values())
    cost = (prompt * GPT_4O_MINI[0] + completion * GPT_4O_MINI[1]) / 1e6
    against = ["--against", evaluation, "--against", other]
    priced = evol("score", run, "--dry-run", "--model", "gpt-4o-mini", *against)
    assert priced.exit_code == 0, priced.output
    assert priced.stdout.splitlines() == [
        f"{run}: {plan.calls} calls to make with gpt-4o-mini",
        *rows,
        f"  contamination check against {evaluation}, {other} (no calls)",
        f"estimated cost: ${cost:.4f}",
    ]
    unpriced = evol("score", run, "--dry-run")
    assert unpriced.stdout.splitlines() == [
        f"{run}: {plan.calls} calls to make with the server default model",
        *rows,
        "estimated cost: unknown (pass --model with a known name, or --price-in and --price-out)",
    ]


def test_a_dry_run_with_retry_missing_counts_the_missing_scores_as_calls(
    evol, tmp_path: Path
) -> None:
    run = scored_run(evol, tmp_path, ROWS)  # one difficulty recorded as missing
    again = plan_scoring(ScoreConfig(run_dir=run, retry_missing=True, complexity=False))
    assert (again.calls, again.scorers["difficulty"].already) == (1, 5)
    assert plan_scoring(ScoreConfig(run_dir=run, complexity=False)).calls == 0
