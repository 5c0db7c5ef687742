"""`evol report`: a self-contained page whose every plot renders in headless Chromium."""

from __future__ import annotations

import base64
import html
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from evol.dataset.report_plots import PLOT_NAMES
from tests.support.fake_server import FakeServer, VerifiableResponder
from tests.support.runs import read_jsonl, run_args, write_seeds
from tests.support.verifiable import POOL, verifiable_run

SEEDS = [
    {"instruction": "Explain <script>alert('x')</script> tags {safely}"},
    {"instruction": "List three rivers"},
    {"instruction": "[sorry] Describe a cat"},
    {"instruction": "[equal] Describe a dog"},
]
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


@pytest.fixture
def report(evol, server, tmp_path: Path) -> tuple[Path, Path]:
    seeds, run = write_seeds(tmp_path / "seeds.jsonl", SEEDS), tmp_path / "run"
    assert evol(*run_args(server, seeds, run, "--generations", "2")).exit_code == 0
    page, pngs = tmp_path / "report.html", tmp_path / "png"
    result = evol("report", run, "--out", page, "--png", pngs)
    assert result.exit_code == 0, result.stderr
    return page, pngs


def test_the_page_is_self_contained_and_escapes_run_text(report: tuple[Path, Path]) -> None:
    page, pngs = report
    text = page.read_text()
    assert not re.search(r"""(src|href)=["']?(https?:|//)""", text), "the page must need no network"
    images = dict(re.findall(r'data-plot="(\w+)"[^>]*src="data:image/png;base64,([^"]+)"', text))
    assert set(images) == set(PLOT_NAMES)
    for name, encoded in images.items():
        image = base64.b64decode(encoded)
        assert image.startswith(b"\x89PNG\r\n\x1a\n")
        assert (pngs / f"{name}.png").read_bytes() == image
    assert (
        "<script>alert" not in text and "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in text
    )
    assert "{safely}" in text


@pytest.mark.slow
def test_every_plot_renders_in_headless_chromium(report: tuple[Path, Path], tmp_path: Path) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        if os.environ.get("CI"):
            pytest.fail("CI must install Debian's chromium (see .ci/run)")
        pytest.skip("needs Debian's chromium: apt-get install chromium")
    page, _ = report
    result = subprocess.run(
        [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000",
         "--enable-logging=stderr", "--v=0", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert f'data-plots-loaded="{len(PLOT_NAMES)}"' in result.stdout
    console_errors = [
        line
        for line in result.stderr.splitlines()
        if "CONSOLE" in line and ("Error" in line or "Uncaught" in line)
    ]
    assert console_errors == []


def test_report_of_a_directory_without_a_run(evol, tmp_path: Path) -> None:
    result = evol("report", tmp_path, "--out", tmp_path / "r.html")
    assert result.exit_code == 2 and "no run here" in result.stderr


@pytest.mark.slow
def test_the_lineage_view_shows_what_each_rewrite_added(report: tuple[Path, Path]) -> None:
    text = report[0].read_text()
    assert re.search(r"<ins>Also consider case [0-9a-f]{6}\.</ins>", text)
    assert "(complete)" in text and 'class="warning"' not in text


@pytest.mark.slow
def test_an_unfinished_run_is_said_so_by_report_and_stats(evol, server, tmp_path: Path) -> None:
    seeds, run = write_seeds(tmp_path / "seeds.jsonl", SEEDS[1:2]), tmp_path / "run"
    assert evol(*run_args(server, seeds, run, "--generations", "1")).exit_code == 0
    manifest = json.loads((run / "run.json").read_text())
    manifest["status"] = "interrupted"
    (run / "run.json").write_text(json.dumps(manifest))
    warning = f"evol: warning: {run} is interrupted, not complete"
    page = evol("report", run, "--out", tmp_path / "r.html")
    assert page.exit_code == 0 and warning in page.stderr
    assert "This run is interrupted, not complete" in (tmp_path / "r.html").read_text()
    stats = evol("stats", run)
    assert stats.stdout.startswith(f"run: {run} (interrupted)") and warning in stats.stderr
    assert json.loads(evol("stats", run, "--json").stdout)["status"] == "interrupted"


@pytest.mark.slow
def test_a_scored_run_adds_its_plots_and_contamination(evol, server, tmp_path: Path) -> None:
    from evol.dataset.report_plots import SCORE_PLOT_NAMES
    from tests.support.scoring import ScoringResponder

    seeds, run = write_seeds(tmp_path / "seeds.jsonl", SEEDS), tmp_path / "run"
    assert evol(*run_args(server, seeds, run, "--generations", "2")).exit_code == 0
    bench = tmp_path / "bench.jsonl"
    bench.write_text('{"prompt": "List three rivers"}\n')
    with FakeServer(responder=ScoringResponder()) as scorer:
        scored = evol(
            "score",
            run,
            "--base-url",
            scorer.base_url,
            "--answers",
            "--against",
            bench,
            "--ngram",
            "3",
        )
    assert scored.exit_code == 0, scored.output
    page, pngs = tmp_path / "report.html", tmp_path / "png"
    assert evol("report", run, "--out", page, "--png", pngs).exit_code == 0
    text = page.read_text()
    images = dict(re.findall(r'data-plot="(\w+)"[^>]*src="data:image/png;base64,([^"]+)"', text))
    assert set(images) == set(PLOT_NAMES) | set(SCORE_PLOT_NAMES)
    for name, encoded in images.items():
        assert (pngs / f"{name}.png").read_bytes() == base64.b64decode(encoded)
    dataset = read_jsonl(run / "dataset.jsonl")
    flagged = sum("list three rivers" in r["instruction"].lower() for r in dataset)
    assert flagged >= 1  # the seed itself
    share = f"{flagged} of {len(dataset)} records ({flagged / len(dataset):.1%})"
    assert f"{share} share 3 words in a row" in text

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        return
    result = subprocess.run(
        [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000",
         "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert f'data-plots-loaded="{len(images)}"' in result.stdout


# Seeds as GSM8K and MATH write them: mathtext would parse each `$...$` and choke.
MATH_SEEDS = [
    r"What is $\boxed{42}$ divided by $6$?",
    r"Show that $a \le b$ implies $a + c \le b + c$.",
    r"Find $x$ such that $3x \equiv 2 \pmod{7}$.",
    r"Simplify $\tfrac{3}{4} + \frac{1}{8}$.",
    r"Compute $\det \begin{pmatrix} 1 & 2 \\ 3 & 4 \end{pmatrix}$.",
    r"Evaluate $\left( \sum_{k=1}^{n} k \right)^2$ for $n = 10$.",
    r"Natalia sold clips for $5 each and $3 for two; how much is $8?",  # lone dollars
    r"Is {x | x > 0} closed under $\sqrt{\,}$? Braces } and { alone.",
    "Clear \x1b[2J the \u202eterminal\x07 and \x00 then $ $$ \\",  # controls
    r"An unclosed \left( bracket, then $\frac{1}{",
]


def math_run(tmp_path: Path) -> Path:
    from tests.support.runs import record, write_run

    records, eliminated = [], []
    for number, text in enumerate(MATH_SEEDS, start=1):
        seed = f"s{number}"
        records.append(record(seed, text))
        # What the lineage plot shows is the added words, cut at 31 characters: mid-`\left(`.
        records.append(
            record(f"{seed}.1", text + r" Then prove $\left(\frac{a}{b}\right)^2 \ge 0$.")
        )
        records.append(
            record(f"{seed}.1.2", text + r" $\sqrt{2}$", operation=r"$\mathrm{op}_{\x1b[31m}")
        )
        eliminated.append(
            # A reason is one of evol's own (the record model refuses any other).
            record(f"{seed}.2", text + " $", output=None, reason="sorry")
        )
    return write_run(tmp_path / "run", records, eliminated)


@pytest.mark.slow
def test_the_report_draws_any_text_latex_dollars_braces_and_controls(evol, tmp_path: Path) -> None:
    run = math_run(tmp_path)
    page, pngs = tmp_path / "report.html", tmp_path / "png"
    result = evol("report", run, "--out", page, "--png", pngs)
    assert result.exit_code == 0, result.output
    assert sorted(p.stem for p in pngs.iterdir()) == sorted(PLOT_NAMES)
    text = page.read_text()
    assert html.escape(r"$\boxed{42}$") in text and "\x1b" not in text.split("<ol>")[0]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (("--out", "{tmp}"), "{tmp}: is a directory; give --out a file name"),
        (("--out", "{tmp}/r.html", "--png", "{tmp}/a-file"), "{tmp}/a-file: is a file; give --png"),
        (("--out", "{tmp}/r.html", "--png", "{tmp}/a-file/png"), "{tmp}/a-file/png/"),
        (("--out", "{tmp}/a-file/r.html"), "{tmp}/a-file/r.html: cannot write it:"),
    ],
)
def test_a_bad_place_to_write_the_report_is_one_line(
    evol, tmp_path: Path, options: tuple[str, ...], message: str
) -> None:
    from tests.support.runs import record, write_run

    run = write_run(tmp_path / "run", [record("s1", "Name a river")])
    (tmp_path / "a-file").write_text("mine")
    result = evol("report", run, *(option.format(tmp=tmp_path) for option in options))
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert len(result.stderr.splitlines()) == 1 and message.format(tmp=tmp_path) in result.stderr
    assert (tmp_path / "a-file").read_text() == "mine"


@pytest.mark.usefixtures("private_cache")
def test_the_report_draws_the_constraints(evol, tmp_path: Path) -> None:
    with FakeServer(responder=VerifiableResponder(pass_rate=0.5)) as server:
        out = verifiable_run(evol, server, tmp_path, "--generations", "1", "--constraint-ids", POOL)
    result = evol("report", out, "--out", tmp_path / "r.html", "--png", tmp_path / "png")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "png" / "constraints.png").read_bytes().startswith(b"\x89PNG")
    assert "kept records carry verifiable constraints" in (tmp_path / "r.html").read_text()
