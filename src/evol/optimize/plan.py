"""`evol optimize --dry-run`: what the whole loop would call and cost, calling nothing.

Each step evaluates its --candidates methods with one ordinary run each (priced as `evol run
--dry-run` prices it: an upper bound, as if every evolution were kept), and the starting
method once; the chosen method's run is the next step's baseline, so the loop makes
1 + steps x candidates evaluation runs. The optimizer's calls are bounded by every evolution
failing: ceil(dev seeds x rounds / --analysis-batch) analyses and --candidates proposals a
step. Their tokens are estimates (about 4/3 tokens a word).
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

from pydantic import BaseModel

from evol.llm.pricing import cost_usd, unit_prices
from evol.method.prompts import OPTIMIZE_ANALYSIS, OPTIMIZE_PROPOSE, PromptSet
from evol.method.textstats import estimate_tokens
from evol.optimize.candidates import method_text
from evol.optimize.config import OptimizeConfig
from evol.optimize.dev_seeds import write_dev_seeds
from evol.optimize.optimizer import ANSWER_SHOWN
from evol.planning import ANSWER_TOKENS, GROWTH_TOKENS, RunPlan, format_plan, plan_run
from evol.seeds import iter_seeds

# What one analysis reply is assumed to cost: a few sentences per failure pattern.
ANALYSIS_TOKENS = 400


class OptimizePlan(BaseModel):
    """What `evol optimize --dry-run` prints."""

    dev_seeds: int
    steps: int
    candidates: int
    evaluation_runs: int
    run: RunPlan  # one evaluation run
    evaluation_calls: int
    evaluation_cost_usd: float | None
    optimizer_model: str | None
    optimizer_calls: int
    optimizer_prompt_tokens: int
    optimizer_completion_tokens: int
    optimizer_cost_usd: float | None
    calls: int
    cost_usd: float | None


def plan_optimize(
    config: OptimizeConfig, *, price_in: float | None = None, price_out: float | None = None
) -> OptimizePlan:
    """Price the whole loop of `config`, from its start, without a call or a file in --out."""
    prompts = PromptSet.load(config.prompts_dir)
    with tempfile.TemporaryDirectory(prefix="evol-optimize-plan-") as scratch:
        dev = write_dev_seeds(config, Path(scratch) / "dev_seeds.jsonl")
        run_config = config.run_config(dev, Path(scratch) / "run", config.prompts_dir)
        run = plan_run(run_config, price_in=price_in, price_out=price_out)
        seeds = list(iter_seeds(dev))
    runs = 1 + config.steps * config.candidates
    instruction = sum(estimate_tokens(s.instruction) for s in seeds) // max(1, len(seeds))
    trajectory = 2 * instruction + GROWTH_TOKENS + min(ANSWER_TOKENS, ANSWER_SHOWN // 4) + 30
    method = estimate_tokens(method_text(prompts, list(config.operations)))
    analyses = math.ceil(len(seeds) * config.rounds / config.analysis_batch)
    analysis_prompt = estimate_tokens(prompts[OPTIMIZE_ANALYSIS].text) + method
    propose_prompt = estimate_tokens(prompts[OPTIMIZE_PROPOSE].text) + method
    per_step_prompt = analyses * (analysis_prompt + config.analysis_batch * trajectory)
    per_step_prompt += config.candidates * (propose_prompt + analyses * ANALYSIS_TOKENS)
    per_step_completion = analyses * ANALYSIS_TOKENS + config.candidates * method
    model = config.optimizer_model or config.model
    prompt_tokens = config.steps * per_step_prompt
    completion_tokens = config.steps * per_step_completion
    optimizer_cost = cost_usd(
        unit_prices(model, price_in, price_out), prompt_tokens, completion_tokens
    )
    evaluation_cost = None if run.cost_usd is None else round(run.cost_usd * runs, 6)
    costs = (evaluation_cost, optimizer_cost)
    optimizer_calls = config.steps * (analyses + config.candidates)
    return OptimizePlan(
        dev_seeds=len(seeds),
        steps=config.steps,
        candidates=config.candidates,
        evaluation_runs=runs,
        run=run,
        evaluation_calls=run.calls * runs,
        evaluation_cost_usd=evaluation_cost,
        optimizer_model=model,
        optimizer_calls=optimizer_calls,
        optimizer_prompt_tokens=prompt_tokens,
        optimizer_completion_tokens=completion_tokens,
        optimizer_cost_usd=optimizer_cost,
        calls=run.calls * runs + optimizer_calls,
        cost_usd=None if None in costs else round(sum(c for c in costs if c is not None), 6),
    )


def format_optimize_plan(plan: OptimizePlan) -> str:
    """The plan as a few plain lines: one evaluation run's plan, then the loop's totals."""

    def dollars(value: float | None) -> str:
        return "cost unknown (pass --price-in/--price-out)" if value is None else f"~${value:.4f}"

    return "\n".join(
        [
            "one evaluation run:",
            *(f"  {line}" for line in format_plan(plan.run).splitlines()),
            f"loop: {plan.steps} steps x {plan.candidates} candidates + the starting method = "
            f"{plan.evaluation_runs} evaluation runs of {plan.dev_seeds} dev seeds",
            f"  evaluation  {plan.evaluation_calls:>8} calls  {dollars(plan.evaluation_cost_usd)}",
            f"  optimizer   {plan.optimizer_calls:>8} calls  ~{plan.optimizer_prompt_tokens} "
            f"prompt tokens  ~{plan.optimizer_completion_tokens} completion tokens  "
            f"{dollars(plan.optimizer_cost_usd)}  [{plan.optimizer_model or 'the server model'}]",
            f"at most {plan.calls} calls, {dollars(plan.cost_usd)}: an upper bound (every step "
            "run, every evolution kept for the runs, failed for the optimizer)",
        ]
    )
