"""The plots of `evol report`, drawn with matplotlib (the `report` extra) as PNG bytes.

Every text is drawn as it is: math parsing is off (instructions hold `$`, `\\frac`, `\\left(`
that mathtext would choke on) and control characters are drawn as their escapes. What
`evol score` left adds plots of its own (`SCORE_PLOT_NAMES`), each only when its figures are
there; a run whose records carry verifiable constraints adds the `constraints` plot.
"""

from __future__ import annotations

import io

from evol.dataset.report_lineages import Step
from evol.dataset.stats import RunStats
from evol.errors import UsageError
from evol.terminal import printable

# The y axis of the operations plot reaches this multiple of the tallest bar.
OPERATION_HEAD_ROOM = 1.15
PLOT_NAMES = ("instruction_length", "eliminations", "operations", "lineages")
SCORE_PLOT_NAMES = ("difficulty", "operation_gain", "diversity")
CONSTRAINT_PLOT = "constraints"


def draw_plots(stats: RunStats, lineages: list[list[Step]]) -> dict[str, bytes]:
    """The four plots, and those of `evol score`'s figures that the run has, as PNG bytes."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise UsageError("evol report draws with matplotlib: pip install 'evol[report]'") from None
    drawers = {
        "instruction_length": _length_plot,
        "eliminations": _elimination_plot,
        "operations": _operation_plot,
        "lineages": _lineage_plot,
    }
    if any(
        g.difficulty_mean is not None or g.complexity_mean is not None for g in stats.generations
    ):
        drawers["difficulty"] = _difficulty_plot
    if _gain_field(stats):
        drawers["operation_gain"] = _gain_plot
    if any(g.distinct_1 is not None for g in stats.generations):
        drawers["diversity"] = _diversity_plot
    if stats.constraints is not None:
        drawers[CONSTRAINT_PLOT] = _constraint_plot
    images = {}
    # Every text is drawn as written: run text is not mathtext, whatever `$` it holds.
    with matplotlib.rc_context({"text.parse_math": False}):
        for name, draw in drawers.items():
            figure = draw(plt, stats, lineages)
            buffer = io.BytesIO()
            figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
            plt.close(figure)
            images[name] = buffer.getvalue()
    return images


def _length_plot(plt, stats: RunStats, _lineages):
    rows = [g for g in stats.generations if g.instruction_words]
    figure, axes = plt.subplots(figsize=(6.4, 3.4))
    generations = [g.generation for g in rows]
    axes.bar(generations, [g.instruction_words.mean for g in rows], color="#8fb3d9", label="mean")
    axes.plot(
        generations, [g.instruction_words.p50 for g in rows], "o-", color="#1f4e79", label="median"
    )
    axes.plot(
        generations,
        [g.instruction_words.p90 for g in rows],
        "s--",
        color="#c55a11",
        label="90th percentile",
    )
    axes.set(
        title="Instruction length by generation",
        xlabel="generation",
        ylabel="words",
        xticks=generations,
    )
    axes.legend(frameon=False)
    return figure


def _elimination_plot(plt, stats: RunStats, _lineages):
    totals: dict[str, int] = {}
    for row in stats.generations:
        for reason, count in row.eliminated.items():
            totals[reason] = totals.get(reason, 0) + count
    figure, axes = plt.subplots(figsize=(6.4, 3.4))
    if totals:
        reasons = sorted(totals, key=totals.get)
        axes.barh([printable(r) for r in reasons], [totals[r] for r in reasons], color="#c55a11")
        axes.set(xlabel="evolutions eliminated")
    else:
        axes.text(0.5, 0.5, "no evolution was eliminated", ha="center", va="center")
        axes.set_axis_off()
    axes.set_title("Eliminations by reason")
    return figure


def _operation_plot(plt, stats: RunStats, _lineages):
    names = list(stats.operations)
    kept = [stats.operations[n].kept for n in names]
    eliminated = [stats.operations[n].eliminated for n in names]
    figure, axes = plt.subplots(figsize=(6.4, 3.4))
    labels = [printable(name) for name in names]
    axes.bar(labels, kept, color="#548235", label="kept")
    axes.bar(labels, eliminated, bottom=kept, color="#c55a11", label="eliminated")
    totals = [k + e for k, e in zip(kept, eliminated, strict=True)]
    for x, name in enumerate(names):
        axes.text(
            x,
            totals[x],
            f"{stats.operations[name].success_rate:.0%}",
            ha="center",
            va="bottom",
            fontsize=8,
        )
    # Head room for the labels over the tallest bar, which autoscaling gives only 5% of.
    axes.set_ylim(0, max(totals, default=0) * OPERATION_HEAD_ROOM or 1)
    axes.set(title="Operation mix and success rate", ylabel="evolutions")
    axes.tick_params(axis="x", labelrotation=25, labelsize=8)
    # Beside the plot: inside, it could cover a bar's label.
    axes.legend(frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return figure


def _lineage_plot(plt, _stats, lineages: list[list[Step]]):
    depth = max((len(chain) for chain in lineages), default=1)
    figure, axes = plt.subplots(figsize=(2.6 * depth + 0.6, 0.9 * max(1, len(lineages)) + 0.6))
    axes.set(
        xlim=(-0.6, depth - 0.4), ylim=(len(lineages) - 0.5, -0.5), title="A sample of lineages"
    )
    axes.set_axis_off()
    for row, chain in enumerate(lineages):
        for column, step in enumerate(chain):
            # A rewrite mostly keeps its parent's words: show what it added.
            added = printable(step.added)
            text = added if len(added) <= 34 else added[:31] + "..."
            text = text if not column else f"+ {text}"
            axes.text(column, row, f"gen {step.generation}\n{text}", ha="center", va="center", fontsize=7,
                      bbox={"boxstyle": "round", "facecolor": "#eef3f8", "edgecolor": "#1f4e79"})  # fmt: skip
            if column:
                axes.annotate("", xy=(column - 0.38, row), xytext=(column - 0.62, row),
                              arrowprops={"arrowstyle": "->", "color": "#1f4e79"})  # fmt: skip
                axes.text(
                    column - 0.5,
                    row - 0.22,
                    printable(step.operation or ""),
                    ha="center",
                    fontsize=6,
                    color="#c55a11",
                )
    return figure


def _difficulty_plot(plt, stats: RunStats, _lineages):
    figure, axes = plt.subplots(figsize=(6.4, 3.4))
    rows = [g for g in stats.generations if g.difficulty_mean is not None]
    if rows:
        axes.bar(
            [g.generation for g in rows],
            [g.difficulty_mean for g in rows],
            yerr=[g.difficulty_sd or 0 for g in rows],
            capsize=4,
            color="#8fb3d9",
            label="difficulty (mean, sd)",
        )
    _plot_by_generation(
        axes,
        stats,
        ("quality_mean", "o-", "answer quality"),
        ("complexity_mean", "s--", "complexity rank"),
    )
    generations = [g.generation for g in stats.generations]
    axes.set(
        title="Scores by generation",
        xlabel="generation",
        ylabel="score",
        xticks=generations,
        ylim=(0, 10.5),
    )
    axes.legend(frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=3, fontsize=8)
    return figure


def _gain_field(stats: RunStats) -> str | None:
    """The score whose gain over the parent the operations have: difficulty, else complexity."""
    for gain in ("difficulty_gain", "complexity_gain"):
        if any(getattr(o, gain) is not None for o in stats.operations.values()):
            return gain
    return None


def _gain_plot(plt, stats: RunStats, _lineages):
    field = _gain_field(stats)
    names = [n for n, o in stats.operations.items() if getattr(o, field) is not None]
    gains = [getattr(stats.operations[n], field) for n in names]
    figure, axes = plt.subplots(figsize=(6.4, 3.4))
    labels = [printable(name) for name in names]
    axes.bar(labels, gains, color=["#548235" if g >= 0 else "#c55a11" for g in gains])
    axes.axhline(0, color="#222", linewidth=0.8)
    score = field.removesuffix("_gain")
    axes.set(
        title=f"Which operations make instructions harder ({score})",
        ylabel="mean gain over the parent",
    )
    axes.tick_params(axis="x", labelrotation=25, labelsize=8)
    return figure


def _diversity_plot(plt, stats: RunStats, _lineages):
    figure, axes = plt.subplots(figsize=(6.4, 3.4))
    _plot_by_generation(
        axes,
        stats,
        ("distinct_1", "o-", "distinct-1"),
        ("distinct_2", "s-", "distinct-2"),
        ("drift_rouge_l", "^--", "ROUGE-L to the seed"),
        ("nearest_rouge_l", "v:", "ROUGE-L to the nearest other"),
    )
    axes.set(
        title="Diversity and drift by generation",
        xlabel="generation",
        ylim=(0, 1.05),
        xticks=[g.generation for g in stats.generations],
    )
    axes.legend(frameon=False, fontsize=8)
    return figure


def _constraint_plot(plt, stats: RunStats, _lineages):
    found = stats.constraints
    assert found is not None
    figure, (rates, tries) = plt.subplots(1, 2, figsize=(9.6, 3.4), width_ratios=(3, 2))
    ids = sorted(found.pass_rate, key=lambda cid: found.pass_rate[cid].rate)
    rates.barh(
        [printable(cid) for cid in ids], [found.pass_rate[c].rate for c in ids], color="#548235"
    )
    rates.set(title="Answers that met each constraint", xlim=(0, 1), xlabel="share of answers")
    rates.tick_params(axis="y", labelsize=7)
    counts = list(found.attempts)
    tries.bar(counts, [found.attempts[n] for n in counts], color="#8fb3d9")
    tries.set(title="Answers drawn per kept record", xlabel="answers", ylabel="records")
    figure.tight_layout()
    return figure


def _plot_by_generation(axes, stats: RunStats, *series: tuple[str, str, str]) -> None:
    """One line per (field of GenerationStats, matplotlib style, label), over the generations
    that have a value."""
    for name, style, label in series:
        points = [(g.generation, getattr(g, name)) for g in stats.generations]
        points = [(x, y) for x, y in points if y is not None]
        if points:
            axes.plot(*zip(*points, strict=True), style, label=label)
