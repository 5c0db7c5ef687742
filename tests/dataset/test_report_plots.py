"""The report's plots as drawn: room for what they label."""

from __future__ import annotations

from evol.dataset.stats import OperationStats, RunStats


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
