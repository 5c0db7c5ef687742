"""Diversity and drift per generation, on a hand-built run whose figures are worked out below."""

from __future__ import annotations

import json
from pathlib import Path

from tests.support.runs import record, write_run

GREEK = "alpha beta gamma delta epsilon zeta eta theta iota kappa"
HAND_BUILT = [
    record("s1", GREEK),
    record("s2", GREEK.replace("kappa", "lambda")),  # 9 of 10 words in order: ROUGE-L 0.9
    record("s3", "one two three four"),
    record("s1.1", GREEK + " mu nu"),  # its seed whole, plus two words: 2 * 10 / 22
    record("s3.1", "five six seven eight"),  # nothing of its seed: 0
    record("s4.1", "red green blue yellow"),  # seed eliminated below: 2 * 3 / 7
]
FAILED_SEED = record("s4", "Red, green; BLUE!", output=None, reason="sorry")


def test_figures_of_a_hand_built_run(evol, tmp_path: Path) -> None:
    run = write_run(tmp_path / "run", HAND_BUILT, [FAILED_SEED])
    # Every LLM scorer off: the CPU figures need no backend (none is configured here).
    result = evol("score", run, "--no-difficulty", "--no-complexity")
    assert result.exit_code == 0, result.output
    metrics = json.loads((run / "metrics.json").read_text())
    gen0, gen1 = metrics["generations"]
    assert gen0 == {
        "generation": 0,
        "records": 3,
        # 24 words, 15 distinct (GREEK's 10, lambda, one..four); 21 pairs, 13 distinct.
        "distinct_1": round(15 / 24, 4),
        "distinct_2": round(13 / 21, 4),
        "drift_rouge_l": None,
        # s1 and s2 are each other's nearest at 0.9; s3 shares no word with anyone: 0.
        "nearest_rouge_l": round((0.9 + 0.9 + 0) / 3, 4),
        "near_duplicates": round(2 / 3, 4),
    }
    assert gen1 == {
        "generation": 1,
        "records": 3,
        "distinct_1": 1.0,  # 20 words, no repeat
        "distinct_2": 1.0,
        "drift_rouge_l": round((20 / 22 + 0 + 6 / 7) / 3, 4),
        "nearest_rouge_l": 0.0,
        "near_duplicates": 0.0,
    }
    assert metrics["files"] == {p.name: p.stat().st_size for p in run.glob("gen_*.jsonl")}

    stats = json.loads(evol("stats", run, "--json").stdout)
    rows = {row["generation"]: row for row in stats["generations"]}
    assert rows[1]["drift_rouge_l"] == gen1["drift_rouge_l"]
    assert rows[0]["distinct_2"] == gen0["distinct_2"] and stats["metrics_stale"] is False
    table = evol("stats", run).stdout
    assert "distinct-1" in table and "0.59" in table  # the drift of generation 1

    # The run grows: the figures are shown as out of date until measured again.
    with (run / "gen_1.jsonl").open("a") as fp:
        fp.write(json.dumps(record("s2.1", "something else entirely")) + "\n")
    assert json.loads(evol("stats", run, "--json").stdout)["metrics_stale"] is True
    assert (
        "diversity and drift were measured before the run grew: run evol score again"
        in evol("stats", run).stdout.splitlines()
    )


def test_a_run_never_measured_shows_no_diversity(evol, tmp_path: Path) -> None:
    run = write_run(tmp_path / "run", HAND_BUILT)
    stats = json.loads(evol("stats", run, "--json").stdout)
    assert stats["metrics_stale"] is None
    assert all(row["distinct_1"] is None for row in stats["generations"])
    assert "distinct-1" not in evol("stats", run).stdout
