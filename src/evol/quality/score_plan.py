"""`evol score --dry-run`: the calls and tokens each scorer would spend, and their price."""

from __future__ import annotations

from pydantic import BaseModel

from evol.llm.pricing import BATCH_RATE, cost_usd, unit_prices
from evol.method.textstats import estimate_tokens
from evol.quality.score_jobs import build_jobs, done_checker
from evol.quality.scores import (
    read_score_lines,
)
from evol.quality.scoring import ScoreConfig, kept_records
from evol.seeds import iter_seeds


class ScorerPlan(BaseModel):
    calls: int
    already: int
    prompt_tokens: int
    completion_tokens: int


class ScorePlan(BaseModel):
    """What `evol score --dry-run` prints: an upper bound, as if no reply had to be asked
    again, with tokens estimated from word counts."""

    run: str
    model: str | None
    scorers: dict[str, ScorerPlan]
    calls: int
    cost_usd: float | None
    against: list[str]


def plan_scoring(
    config: ScoreConfig, *, price_in: float | None = None, price_out: float | None = None
) -> ScorePlan:
    """The calls `evol score` would still make and their estimated cost, calling nothing.

    Without --model, a record scored by any model counts as done.
    """
    records = kept_records(config.run_dir)
    for path in config.against:  # a bad evaluation file stops the dry run as it would the run
        for _ in iter_seeds(path):
            pass
    lines = read_score_lines(config.run_dir)
    jobs, already = build_jobs(
        records,
        config.scorers,
        done_checker(lines, config.model, config.retry_missing),
        config.prompts(),
    )
    plans: dict[str, ScorerPlan] = {
        scorer: ScorerPlan(calls=0, already=already[scorer], prompt_tokens=0, completion_tokens=0)
        for scorer in config.scorers
    }
    for job in jobs:
        plan = plans[job.scorer]
        plan.calls += 1
        plan.prompt_tokens += estimate_tokens(job.prompt)
        plan.completion_tokens += job.max_tokens
    prices = unit_prices(config.model, price_in, price_out)
    rate = BATCH_RATE if config.batch else 1.0
    cost = cost_usd(
        prices,
        sum(p.prompt_tokens for p in plans.values()),
        sum(p.completion_tokens for p in plans.values()),
        rate,
    )
    return ScorePlan(
        run=str(config.run_dir),
        model=config.model,
        scorers=plans,
        calls=len(jobs),
        cost_usd=cost,
        against=[str(path) for path in config.against],
    )


def format_plan(plan: ScorePlan) -> str:
    """The dry run as a few plain lines."""
    lines = [
        f"{plan.run}: {plan.calls} calls to make with {plan.model or 'the server default model'}"
    ]
    for scorer, row in plan.scorers.items():
        lines.append(
            f"  {scorer:<10} {row.calls} calls ({row.already} records scored already), about "
            f"{row.prompt_tokens} prompt + {row.completion_tokens} completion tokens at most"
        )
    if plan.against:
        lines.append(f"  contamination check against {', '.join(plan.against)} (no calls)")
    cost = (
        f"${plan.cost_usd:.4f}"
        if plan.cost_usd is not None
        else "unknown (pass --model with a known name, or --price-in and --price-out)"
    )
    lines.append(f"estimated cost: {cost}")
    return "\n".join(lines)
