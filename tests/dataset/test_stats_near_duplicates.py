"""Promises of `evol stats` that the fifth round of mutation survivors (checks 6,120 on, #22)
found unpinned: the near-duplicate share of each generation, measured by `evol score` into
metrics.json, is the one `evol stats` shows.

Through the CLI, on a run written by hand, so that it runs on 4f7dc9e's tree, where the mutants
were found, as on `main`.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.support.runs import record, write_run

GREEK = "alpha beta gamma delta epsilon zeta eta theta iota kappa"
# Generation 0: s1 and s2 are each other's nearest at ROUGE-L 0.9, s3 shares no word: 2 of 3
# have a near copy. Generation 1: s1.1 and s2.1 at 10 of 11 words; s3.1 and s4.1 alone: 2 of 4.
RECORDS = [
    record("s1", GREEK),
    record("s2", GREEK.replace("kappa", "lambda")),
    record("s3", "one two three four"),
    record("s1.1", GREEK + " mu"),
    record("s2.1", GREEK.replace("kappa", "lambda") + " mu"),
    record("s3.1", "five six seven eight"),
    record("s4.1", "red green blue yellow"),
]


def test_stats_show_each_generations_near_duplicate_share_as_measured(evol, tmp_path: Path) -> None:
    run = write_run(tmp_path / "run", RECORDS)
    result = evol("score", run, "--no-difficulty", "--no-complexity")
    assert result.exit_code == 0, result.output
    measured = {
        row["generation"]: row["near_duplicates"]
        for row in json.loads((run / "metrics.json").read_text())["generations"]
    }
    assert measured == {0: round(2 / 3, 4), 1: 0.5}

    stats = evol("stats", run, "--json")
    assert stats.exit_code == 0, stats.output
    rows = json.loads(stats.stdout)["generations"]
    assert {row["generation"]: row["near_duplicates"] for row in rows} == measured
    table = evol("stats", run).stdout.splitlines()
    header = next(i for i, line in enumerate(table) if line.split()[-1:] == ["near-dup"])
    last_column = [line.split()[-1] for line in table[header + 2 : header + 4]]
    assert last_column == ["0.67", "0.50"], table
