"""`evol report`: one self-contained HTML page of plots about a run, and the same plots as PNG.

The page needs no network: the plots are PNG images inlined as data URIs, the style is inline,
and every text from the run is HTML-escaped. matplotlib (the `report` extra) draws the plots,
every text as it is: math parsing is off (instructions hold `$`, `\\frac`, `\\left(` that
mathtext would choke on) and control characters are drawn as their escapes. Neither file is
written into a run's own files nor through a link.
What `evol score` left adds plots of its own (`evol.dataset.report_plots`), and the
contamination check's share to the page's summary line. A run whose records
carry verifiable constraints adds the `constraints` plot (pass rate per constraint id, attempts
per kept record) and a line of its figures.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

from evol.dataset.report_lineages import Step, lineage_item, sample_lineages
from evol.dataset.report_plots import draw_plots
from evol.dataset.stats import RunStats, run_stats
from evol.errors import UsageError
from evol.jsonl import atomic_write, write_error
from evol.rundir.layout import ELIMINATED, refuse_run_state

LINEAGE_SAMPLE = 6


def write_report(
    run_dir: Path, out: Path, *, png_dir: Path | None = None
) -> tuple[dict[str, bytes], str]:
    """Write the HTML report (and the PNGs, if asked); returns the plots by name, and the
    run's status."""
    _check_targets(out, png_dir)
    stats = run_stats(run_dir)
    lineages = sample_lineages(run_dir, LINEAGE_SAMPLE)
    plots = draw_plots(stats, lineages)
    files = {out: _page(run_dir, stats, lineages, plots).encode("utf-8")}
    if png_dir is not None:
        files |= {png_dir / f"{name}.png": image for name, image in plots.items()}
    for path, content in files.items():
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise UsageError(write_error(path, error)) from None
        # Renamed into place, never opened in place: a hard link at `path` keeps what it held.
        atomic_write(path, content)
    return plots, stats.status


def _check_targets(out: Path, png_dir: Path | None) -> None:
    """--out a file and --png a folder, neither in a run's own files: said before drawing."""
    refuse_run_state(out, "--out")
    if png_dir is not None:
        refuse_run_state(png_dir, "--png")
    if out.is_dir():
        raise UsageError(f"{out}: is a directory; give --out a file name")
    if png_dir is not None and png_dir.exists() and not png_dir.is_dir():
        raise UsageError(f"{png_dir}: is a file; give --png a folder for the PNG files")


def _page(
    run_dir: Path, stats: RunStats, lineages: list[list[Step]], plots: dict[str, bytes]
) -> str:
    kept = sum(g.kept for g in stats.generations)
    unfinished = (
        f'<p class="warning">This run is {html.escape(stats.status)}, not complete: the figures '
        "cover what was written so far.</p>"
        if stats.status != "complete"
        else ""
    )
    eliminated = sum(sum(g.eliminated.values()) for g in stats.generations)
    cost = "unknown" if stats.total_cost_usd is None else f"${stats.total_cost_usd:.4f}"
    contamination = ""
    if report := stats.contamination:
        contamination = (
            f" {report.flagged} of {report.checked} records ({report.share:.1%}) share "
            f"{report.ngram} words in a row with an evaluation set "
            f"({html.escape(', '.join(report.against))})."
        )
    if found := stats.constraints:
        mean = "-" if found.attempts_mean is None else f"{found.attempts_mean:.2f}"
        contamination += (
            f" {found.kept} kept records carry verifiable constraints, each took {mean} answers "
            f"on average; {found.lost} rewrites lost a constraint, {found.unmet} records met "
            "them in no answer."
        )
    eliminated_file = run_dir / ELIMINATED
    figures = "\n".join(
        f'<figure><img data-plot="{name}" alt="{name.replace("_", " ")}" '
        f'src="data:image/png;base64,{base64.b64encode(image).decode()}"></figure>'
        for name, image in plots.items()
    )
    rows = "\n".join(lineage_item(chain) for chain in lineages)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>evol report: {html.escape(str(run_dir))}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 70rem; color: #222; }}
.figures {{ display: grid; grid-template-columns: repeat(auto-fit, minmax(30rem, 1fr)); gap: 1rem; }}
figure {{ margin: 0; }} img {{ max-width: 100%; }} .op {{ color: #c55a11; }} li {{ margin: .5rem 0; }}
ins {{ background: #e3f3e3; text-decoration: none; }} del {{ color: #999; }} .warning {{ color: #b00; }}
</style></head>
<body>
<h1>evol report</h1>
<p>Run <code>{html.escape(str(run_dir))}</code> ({html.escape(stats.status)}): {kept} records kept,
{eliminated} evolutions eliminated ({html.escape(str(eliminated_file.name))}), estimated cost {cost}.{contamination}</p>
{unfinished}
<div class="figures">
{figures}
</div>
<h2>Lineages</h2>
<ol>
{rows}
</ol>
<script>
window.addEventListener("load", () => {{
  const plots = [...document.querySelectorAll("img[data-plot]")];
  document.body.dataset.plotsLoaded = plots.filter((img) => img.complete && img.naturalWidth > 0).length;
}});
</script>
</body></html>
"""
