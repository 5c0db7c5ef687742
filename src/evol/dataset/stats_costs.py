"""What a run's calls cost in `evol stats`: the tokens per role and per model, priced by the
table or by the prices given, at the Batch API's rate where the calls went through it, and
nothing for a model run on this machine."""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path

from pydantic import BaseModel, Field

from evol.errors import UsageError
from evol.llm.pricing import BATCH_RATE, cost_usd, unit_prices
from evol.llm.registry import runs_in_process
from evol.quality.scores import read_score_lines


class RoleCost(BaseModel):
    """The tokens of one role's calls (or of `evol score`'s) and what they cost."""

    model: str | None
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float | None = Field(description="None when no price is known for the model")


def runs_on_this_machine(backend_name: str) -> bool:
    """Whether the run's backend ran its model on this machine (so its calls cost nothing); a
    backend no longer installed is taken as a server's."""
    try:
        return runs_in_process(backend_name)
    except UsageError:
        return False


def scoring_cost(
    run_dir: Path,
    run_models: dict[str, str],
    run_in_process: bool,
    price_in: float | None,
    price_out: float | None,
) -> RoleCost | None:
    """The tokens of `evol score`'s calls (every line of scores.jsonl: each call was paid,
    stale ones too) and their cost; None when the run was never scored."""
    # Per model, and whether the call went through the Batch API (billed at BATCH_RATE).
    used: dict[tuple[str, bool], Counter[str]] = defaultdict(Counter)
    for line in read_score_lines(run_dir):
        used[line.model, line.batch].update(line.usage)
    if not used:
        return None
    rows = []
    for (model, batch), tokens in used.items():
        embedded = run_in_process and model in run_models.values()
        free = embedded and price_in is None and price_out is None
        rate = BATCH_RATE if batch else 1.0
        rows.append(
            role_cost(model, tokens, 0.0 if free else price_in, 0.0 if free else price_out, rate)
        )
    costs = [row.cost_usd for row in rows]
    return RoleCost(
        model=", ".join(sorted({model for model, _batch in used})),
        prompt_tokens=sum(row.prompt_tokens for row in rows),
        completion_tokens=sum(row.completion_tokens for row in rows),
        cost_usd=round(sum(costs), 6) if None not in costs else None,
    )


def role_cost(
    model: str | None,
    used: Counter[str],
    price_in: float | None,
    price_out: float | None,
    rate: float,
) -> RoleCost:
    """`used` tokens of `model` priced (explicit prices beat the table), times `rate`."""
    prompt, completion = used["prompt_tokens"], used["completion_tokens"]
    cost = cost_usd(unit_prices(model, price_in, price_out), prompt, completion, rate)
    return RoleCost(model=model, prompt_tokens=prompt, completion_tokens=completion, cost_usd=cost)
