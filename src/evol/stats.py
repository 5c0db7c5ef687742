"""`evol stats`: what a run directory holds, per generation and per operation, and what it cost.

Reads the record files once, streaming; knows nothing of LLMs beyond the token counts and model
names that run.json and the records carry.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path

from pydantic import BaseModel, Field

from evol.counts import RunCounts
from evol.manifest import read_manifest
from evol.store import iter_records
from evol.textstats import Lengths, summarize, word_count

# USD per million tokens (input, output), as the providers published them in 2025. Pass
# --price-in/--price-out for anything else, or when these have changed.
PRICES: dict[str, tuple[float, float]] = {
    "gpt-4o": (2.50, 10.00),
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1-nano": (0.10, 0.40),
    "o3-mini": (1.10, 4.40),
}


class GenerationStats(BaseModel):
    generation: int
    kept: int
    eliminated: dict[str, int]
    instruction_words: Lengths | None
    answer_words: Lengths | None


class OperationStats(BaseModel):
    kept: int
    eliminated: int
    success_rate: float


class RoleCost(BaseModel):
    model: str | None
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float | None = Field(description="None when no price is known for the model")


class RunStats(BaseModel):
    """Everything `evol stats` prints."""

    run: str
    status: str = Field(description="complete, failed, interrupted or running")
    generations: list[GenerationStats]
    operations: dict[str, OperationStats]
    roles: dict[str, RoleCost]
    total_cost_usd: float | None


def run_stats(
    run_dir: Path, *, price_in: float | None = None, price_out: float | None = None
) -> RunStats:
    """Summarise the run in `run_dir`; explicit prices (USD per 1M tokens) beat the built-in table."""
    manifest = read_manifest(run_dir)
    models: dict[str, str] = manifest.get("backend", {}).get("models", {})
    if (
        manifest.get("backend", {}).get("name") == "local"
        and price_in is None
        and price_out is None
    ):
        price_in = price_out = 0.0  # the embedded model runs on your own CPU

    # The counts are run.json's own (evol.counts); the lengths are what stats adds.
    counts = RunCounts()
    instruction_words: dict[int, list[int]] = defaultdict(list)
    answer_words: dict[int, list[int]] = defaultdict(list)
    for record in iter_records(run_dir):
        counts.add(record, None)
        instruction_words[record["generation"]].append(word_count(record["instruction"]))
        if record.get("output") is not None:
            answer_words[record["generation"]].append(word_count(record["output"]))
    for record in iter_records(run_dir, eliminated=True):
        counts.add(record, record["reason"])

    eliminated, operations = counts.eliminated_by_generation, counts.operations
    last = max([*instruction_words, *eliminated, 0])
    per_generation = [
        GenerationStats(
            generation=g,
            kept=counts.kept[g],
            eliminated=dict(sorted(eliminated.get(g, {}).items())),
            instruction_words=summarize(instruction_words[g]),
            answer_words=summarize(answer_words[g]),
        )
        for g in range(last + 1)
    ]
    per_operation = {
        name: OperationStats(
            kept=counts["kept"],
            eliminated=counts["eliminated"],
            success_rate=round(counts["kept"] / max(1, counts["kept"] + counts["eliminated"]), 4),
        )
        for name, counts in sorted(operations.items())
    }
    roles = {
        role: _role_cost(models.get(role), used, price_in, price_out)
        for role, used in sorted(counts.usage.items())
    }
    costs = [role.cost_usd for role in roles.values()]
    total = round(sum(costs), 6) if costs and None not in costs else None
    return RunStats(
        run=str(run_dir),
        status=manifest.get("status", "unknown"),
        generations=per_generation,
        operations=per_operation,
        roles=roles,
        total_cost_usd=total,
    )


def unit_prices(
    model: str | None, price_in: float | None, price_out: float | None
) -> tuple[float, float] | None:
    """USD per million (prompt, completion) tokens: the given prices, else the table's, else None."""
    known = PRICES.get(model or "")
    unit_in = price_in if price_in is not None else known[0] if known else None
    unit_out = price_out if price_out is not None else known[1] if known else None
    return None if unit_in is None or unit_out is None else (unit_in, unit_out)


def cost_usd(
    prices: tuple[float, float] | None, prompt_tokens: int, completion_tokens: int
) -> float | None:
    if prices is None:
        return None
    return round((prompt_tokens * prices[0] + completion_tokens * prices[1]) / 1_000_000, 6)


def _role_cost(
    model: str | None, used: Counter[str], price_in: float | None, price_out: float | None
) -> RoleCost:
    prompt, completion = used["prompt_tokens"], used["completion_tokens"]
    cost = cost_usd(unit_prices(model, price_in, price_out), prompt, completion)
    return RoleCost(model=model, prompt_tokens=prompt, completion_tokens=completion, cost_usd=cost)


def format_stats(stats: RunStats) -> str:
    """The figures as plain-text tables."""

    def table(header: list[str], rows: list[list[str]]) -> list[str]:
        widths = [
            max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)
        ]

        def line(cells: list[str]) -> str:
            pairs = enumerate(zip(cells, widths, strict=True))
            return "  ".join(str(c).rjust(w) if i else str(c).ljust(w) for i, (c, w) in pairs)

        return [line(header), line(["-" * w for w in widths]), *(line(row) for row in rows)]

    def words(lengths: Lengths | None) -> list[str]:
        return (
            [f"{lengths.mean:g}", f"{lengths.p50:g}", f"{lengths.p90:g}"]
            if lengths
            else ["-", "-", "-"]
        )

    reasons = sorted({reason for g in stats.generations for reason in g.eliminated})
    lines = [f"run: {stats.run} ({stats.status})", ""]
    lines += table(
        ["generation", "kept", *reasons, "instr mean", "p50", "p90", "answer mean", "p50", "p90"],
        [
            [
                str(g.generation),
                str(g.kept),
                *(str(g.eliminated.get(r, 0)) for r in reasons),
                *words(g.instruction_words),
                *words(g.answer_words),
            ]
            for g in stats.generations
        ],
    )
    lines += [
        "",
        *table(
            ["operation", "kept", "eliminated", "success"],
            [
                [name, str(o.kept), str(o.eliminated), f"{o.success_rate:.0%}"]
                for name, o in stats.operations.items()
            ],
        ),
    ]
    cost = lambda value: "-" if value is None else f"${value:.4f}"  # noqa: E731
    lines += [
        "",
        *table(
            ["role", "model", "prompt tokens", "completion tokens", "cost"],
            [
                [
                    role,
                    r.model or "-",
                    str(r.prompt_tokens),
                    str(r.completion_tokens),
                    cost(r.cost_usd),
                ]
                for role, r in stats.roles.items()
            ],
        ),
    ]
    lines += [
        "",
        f"total cost: {cost(stats.total_cost_usd)}"
        + (
            ""
            if stats.total_cost_usd is not None
            else " (no price known: pass --price-in and --price-out)"
        ),
    ]
    return "\n".join(lines)
