"""`evol stats` as text: the tables a person reads (the JSON is RunStats itself)."""

from __future__ import annotations

from evol.dataset.stats import RunStats
from evol.method.textstats import Lengths

# The row of `roles` for the calls of `evol score` (read from scores.jsonl).


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
    lines += _scored_generations(stats, table)
    gains = _operation_gains(stats)
    lines += [
        "",
        *table(
            ["operation", "kept", "eliminated", "success", *gains],
            [
                [
                    name,
                    str(o.kept),
                    str(o.eliminated),
                    f"{o.success_rate:.0%}",
                    *(_figure(getattr(o, field)) for field in gains.values()),
                ]
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
        )
        + (" at the Batch API rate (half price)" if stats.batch_rate else ""),
    ]
    lines += _contamination_lines(stats)
    lines += _constraint_lines(stats, table)
    return "\n".join(lines)


def _constraint_lines(stats: RunStats, table) -> list[str]:
    """Verifiable constraints, when the run's records carry any."""
    found = stats.constraints
    if found is None:
        return []
    attempts = ", ".join(f"{n}: {count}" for n, count in found.attempts.items())
    mean = "-" if found.attempts_mean is None else f"{found.attempts_mean:.2f}"
    return [
        "",
        *table(
            ["generation", "with constraints", "constraints mean", "max", "attempts mean"],
            [
                [
                    g,
                    str(row.records),
                    f"{row.constraints_mean:.2f}",
                    str(row.constraints_max),
                    f"{row.attempts_mean:.2f}",
                ]
                for g, row in found.per_generation.items()
            ],
        ),  # fmt: skip
        "",
        *table(
            ["constraint", "answers", "met", "pass rate"],
            [
                [cid, str(rate.answers), str(rate.met), f"{rate.rate:.0%}"]
                for cid, rate in found.pass_rate.items()
            ],
        ),
        "",
        f"attempts per kept record: mean {mean} ({attempts or 'none kept'}); eliminated: "
        f"{found.lost} constraint_lost, {found.unmet} constraint_unmet",
    ]


# Columns of the second generation table: (header, GenerationStats field), shown when any
# generation has a value.
_SCORED_COLUMNS = [
    ("difficulty", "difficulty_mean"),
    ("sd", "difficulty_sd"),
    ("scored", "difficulty_scored"),
    ("complexity", "complexity_mean"),
    ("quality", "quality_mean"),
    ("distinct-1", "distinct_1"),
    ("distinct-2", "distinct_2"),
    ("drift", "drift_rouge_l"),
    ("nearest", "nearest_rouge_l"),
    ("near-dup", "near_duplicates"),
    ("contaminated", "contaminated"),
]


def _figure(value: float | int | None) -> str:
    if value is None:
        return "-"
    return str(value) if isinstance(value, int) else f"{value:.2f}"


def _scored_generations(stats: RunStats, table) -> list[str]:
    """Scores, diversity and drift per generation, when `evol score` left any."""
    columns = [
        (header, name)
        for header, name in _SCORED_COLUMNS
        if any(getattr(row, name) is not None for row in stats.generations)
    ]
    if not columns:
        return []
    lines = [
        "",
        *table(
            ["generation", *(header for header, _name in columns)],
            [
                [str(row.generation), *(_figure(getattr(row, name)) for _header, name in columns)]
                for row in stats.generations
            ],
        ),
    ]
    if stats.scores:
        used = ", ".join(
            f"{name} by {s.model} ({s.missing} records missing)" for name, s in stats.scores.items()
        )
        lines.append(f"scores: {used}")
    if stats.metrics_stale:
        lines.append("diversity and drift were measured before the run grew: run evol score again")
    return lines


def _operation_gains(stats: RunStats) -> dict[str, str]:
    """Header -> OperationStats field of the score columns any operation has a value for."""
    fields = {
        "difficulty": "difficulty_mean",
        "difficulty gain": "difficulty_gain",
        "complexity gain": "complexity_gain",
    }
    return {
        header: name
        for header, name in fields.items()
        if any(getattr(row, name) is not None for row in stats.operations.values())
    }


def _contamination_lines(stats: RunStats) -> list[str]:
    report = stats.contamination
    if report is None:
        return []
    lines = [
        "",
        f"contaminated: {report.flagged} of {report.checked} records ({report.share:.1%}) share "
        f"{report.ngram} words in a row with {', '.join(report.against)}",
    ]
    for record in report.records:
        where = ", ".join(f"{m.path}:{m.line}" for m in record.matches)
        lines.append(f"  {record.id}: {where}")
    if report.stale:
        lines.append("  the run grew after this check: run evol score --against again")
    return lines
