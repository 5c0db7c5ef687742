"""`evol run --dry-run`: the calls a run would make and what they would cost, calling nothing.

The figures are an upper bound: they assume every evolution is kept, so every round pays for
an evolve, an answer and a judge call (and an answer check, when on), and, when evolutions add
verifiable constraints, 1 + --answer-attempts answers (the most rejection sampling draws; with
answers that meet their constraints with probability p, about min(1/p, that) on average; with
--answer-n, in 2 calls, the first answer and one request for the rest, where the backend sends
`n`); eliminations only save calls. Tokens are estimated from
word counts (about 4/3 tokens a word), and an existing run directory counts as work done.
"""

from __future__ import annotations

from collections import Counter

from pydantic import BaseModel

from evol.config import RunConfig
from evol.errors import UsageError
from evol.llm import choose_backend, missing_key_warning
from evol.llm.pricing import BATCH_RATE, cost_usd, unit_prices
from evol.llm.registry import (
    batch_backend_name,
    planned_model,
    ray_backend_name,
    runs_in_process,
    sends_n,
)
from evol.method.judging import ANSWER_CHECK, model_role
from evol.method.prompts import PromptSet
from evol.method.textstats import estimate_tokens
from evol.preflight import check_verifiable
from evol.rundir.lineage import LineageIndex
from evol.rundir.store import RunStore
from evol.seeds import iter_seeds, scan_seeds

# What a reply is assumed to cost when --max-tokens does not bound it.
ANSWER_TOKENS = 400
GROWTH_TOKENS = round(20 * 4 / 3)  # an in-depth rewrite adds up to 20 words
# The judge model's small JSON object: a verdict or a choice, and a reason of <= 15 words.
JUDGE_TOKENS = 40
_UNNAMED = "the backend's model (asked at start)"


class RolePlan(BaseModel):
    model: str | None
    params: dict[str, float | int] = {}
    calls: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float | None


class RunPlan(BaseModel):
    """What `--dry-run` prints."""

    backend: str
    in_process: bool = False  # the model runs on this machine: nothing to pay
    models: dict[str, str | None]  # by role; None: the backend's own, asked for at start
    seeds: int
    skipped_seeds: int
    generations: int
    steps: int
    steps_done: int
    roles: dict[str, RolePlan]
    calls: int
    cost_usd: float | None
    batch_rate: bool = False
    dedup_method: str | None = None
    warnings: list[str] = []


def plan_run(
    config: RunConfig, *, price_in: float | None = None, price_out: float | None = None
) -> RunPlan:
    """Count the calls `config` would still make, role by role, and estimate their cost."""
    prompts = PromptSet.load(config.prompts_dir)
    check_verifiable(config)  # what the run would refuse, the plan refuses
    weights = config.operations
    scan = scan_seeds(config.seeds, config.seed_options)
    lineages = LineageIndex(config.generations)
    if config.out.is_dir():  # a look from outside: no lock, no repair
        RunStore(config.out, config.generations).scan(repair=False, also=[lineages.add])
    calls, prompt_tokens, completion_tokens = Counter(), Counter(), Counter()
    answer_tokens = config.params.answer.max_tokens or ANSWER_TOKENS
    backend, models, warnings = _backend_and_models(config)
    answers = 1 + config.answer_attempts if config.verifiable else 1  # per evolution, at most
    # The calls they take: one each, or the first and one request with n for the rest.
    answer_calls = min(answers, 2) if config.answer_n and sends_n(backend) else answers
    # The average operation template: the operation of a future round depends on what is kept.
    template_tokens = sum(
        estimate_tokens(prompts.evolve_prompt(name, "", "")) * weight
        for name, weight in weights.items()
    ) / sum(weights.values())
    judge_template = estimate_tokens(prompts.judge_prompt("", ""))
    check_template = estimate_tokens(prompts.answer_check_prompt("", ""))

    def check_answer(task_tokens: int) -> None:
        """One answer check: its template, the task and the answer in, a JSON choice out."""
        calls[ANSWER_CHECK] += 1
        prompt_tokens[ANSWER_CHECK] += check_template + task_tokens + answer_tokens
        completion_tokens[ANSWER_CHECK] += JUDGE_TOKENS

    for seed in iter_seeds(config.seeds, config.seed_options):
        progress = lineages.progress(seed.id)
        instruction = estimate_tokens(seed.instruction) + estimate_tokens(seed.input)
        if not progress.seed_done and seed.output is None and config.answer_seeds:
            calls["answer"] += 1
            prompt_tokens["answer"] += instruction
            completion_tokens["answer"] += answer_tokens
            if config.checks_answers:
                check_answer(instruction)
        if progress.tip:
            instruction = estimate_tokens(progress.tip.instruction) + estimate_tokens(
                progress.tip.input
            )
        for _ in range(progress.rounds_done, config.generations):
            child = instruction + GROWTH_TOKENS
            calls["evolve"] += 1
            calls["answer"] += answer_calls
            prompt_tokens["evolve"] += round(template_tokens) + instruction
            completion_tokens["evolve"] += child
            prompt_tokens["answer"] += child * answer_calls
            completion_tokens["answer"] += answer_tokens * answers
            if config.rules.judge:
                calls["judge"] += 1
                prompt_tokens["judge"] += judge_template + instruction + child
                completion_tokens["judge"] += JUDGE_TOKENS
            if config.checks_answers:
                check_answer(child)
            instruction = child

    in_process = runs_in_process(backend)
    roles = {
        role: _priced(
            models[model_role(role)],
            calls[role],
            prompt_tokens[role],
            completion_tokens[role],
            0.0 if in_process else price_in,
            0.0 if in_process else price_out,
            BATCH_RATE if config.batch else 1.0,
        ).model_copy(update={"params": getattr(config.params, model_role(role)).to_request()})
        for role in ("evolve", "answer", "judge", ANSWER_CHECK)
        if calls[role]
    }
    costs = [role.cost_usd for role in roles.values()]
    method = None
    if config.rules.dedup:
        from evol.method.dedup import largest_pool, resolved_method

        largest = largest_pool(scan.count, config.generations)
        method = resolved_method(config.rules.dedup_method, largest)
    return RunPlan(
        backend=backend,
        in_process=in_process,
        models=models,
        dedup_method=method,
        warnings=warnings,
        seeds=scan.count,
        skipped_seeds=len(scan.skipped),
        generations=config.generations,
        steps=scan.count * (config.generations + 1),
        steps_done=lineages.steps_done(),
        roles=roles,
        calls=sum(calls.values()),
        cost_usd=round(sum(costs), 6) if None not in costs else None,
        batch_rate=config.batch,
    )


def _backend_and_models(config: RunConfig) -> tuple[str, dict[str, str | None], list[str]]:
    """The backend a run would use, the model of each role as far as it is known without a
    call (a server's only model is asked for at start), and warnings about them."""
    has_key = config.api_key is not None
    default = None
    if config.engine == "ray":  # never the embedded model (the config refused --model-path)
        backend = ray_backend_name(config.ray_model)
        default = config.ray_model
    elif config.batch:
        backend = batch_backend_name(config.backend, base_urls=config.base_urls)
    else:
        try:
            backend = choose_backend(
                config.backend, base_urls=config.base_urls, has_api_key=has_key
            )
        except UsageError:
            backend = "local"  # nothing configured: a real run says what to do
    warning = missing_key_warning(backend, config.base_urls, has_key)
    warnings = [warning] if warning else []
    if config.model is None and default is None:
        try:
            default = planned_model(backend, config.backend_settings())
        except UsageError as missing:
            warnings.append(str(missing))
    models = {
        role: getattr(config, f"{role}_model") or config.model or default
        for role in ("evolve", "answer", "judge")
    }
    return backend, models, warnings


def _priced(model, calls, prompt, completion, price_in, price_out, rate) -> RolePlan:
    cost = cost_usd(unit_prices(model, price_in, price_out), prompt, completion, rate)
    return RolePlan(
        model=model, calls=calls, prompt_tokens=prompt, completion_tokens=completion, cost_usd=cost
    )


def format_plan(plan: RunPlan) -> str:
    """The plan as a few plain lines."""
    lines = [
        f"plan: {plan.seeds} seeds x {plan.generations} generations"
        + (f" ({plan.skipped_seeds} invalid rows skipped)" if plan.skipped_seeds else "")
        + f"; {plan.steps_done} of {plan.steps} steps already done",
    ]
    where = " (runs on this machine)" if plan.in_process else ""
    names = {name or _UNNAMED for name in plan.models.values()}
    models = (
        f"model {names.pop()} for every role"
        if len(names) == 1
        else "models: " + ", ".join(f"{r} {n or _UNNAMED}" for r, n in plan.models.items())
    )
    lines.append(f"backend {plan.backend}{where}, {models}")
    for role, item in plan.roles.items():
        cost = (
            "cost unknown (pass --price-in/--price-out)"
            if item.cost_usd is None
            else "free"
            if plan.in_process
            else f"~${item.cost_usd:.4f}"
        )
        settings = ", ".join(f"{name} {value:g}" for name, value in item.params.items())
        lines.append(
            f"  {role:<12} {item.calls:>8} calls  ~{item.prompt_tokens:>10} prompt tokens  "
            f"~{item.completion_tokens:>10} completion tokens  {cost}  [{item.model or _UNNAMED}"
            f"{'; ' + settings if settings else ''}]"
        )
    total = (
        "unknown"
        if plan.cost_usd is None
        else "$0 (free: runs on this machine)"
        if plan.in_process
        else f"~${plan.cost_usd:.4f}"
    )
    rate = " at the Batch API rate (half price)" if plan.batch_rate else ""
    lines.append(
        f"at most {plan.calls} calls, {total}{rate}: an upper bound, as if every evolution "
        "were kept"
    )
    lines += [f"warning: {warning}" for warning in plan.warnings]
    return "\n".join(lines)
