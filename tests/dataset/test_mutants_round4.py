"""Promises of `evol stats` that the fourth round of mutation survivors (checks 4,741 on, #22)
found unpinned: what `evol score`'s calls cost when their model is in the price table, or when
several models scored the run; which generations the table has rows for; a run.json that names
no backend; the run the figures are of.

Each test goes through the CLI, on a run written by hand, so that it runs on 4f7dc9e's tree,
where the mutants were found, as on `main`.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.support.runs import record, write_run


def scores_line(model: str, record_id: str, prompt: int, completion: int) -> str:
    usage = {"prompt_tokens": prompt, "completion_tokens": completion}
    line = {"scorer": "difficulty", "model": model, "id": record_id, "digest": "0" * 16}
    return json.dumps(line | {"score": 5.0, "usage": usage}) + "\n"


def stats_of(evol, run: Path, *args: str) -> dict:
    result = evol("stats", run, "--json", *args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_the_scoring_calls_are_priced_by_the_table_per_model_and_unknown_with_one_unpriced(
    evol, tmp_path: Path
) -> None:
    run = write_run(tmp_path / "run", [record("s1", "Name a river."), record("s2", "Name two.")])
    scores = run / "scores.jsonl"
    scores.write_text(
        scores_line("gpt-4o-mini", "s1", 1000, 100) + scores_line("gpt-4o-mini", "s2", 3000, 100)
    )
    stats = stats_of(evol, run)
    assert stats["run"] == str(run)
    # gpt-4o-mini: $0.15 and $0.60 per million tokens in, out.
    assert stats["roles"]["score"] == {
        "model": "gpt-4o-mini",
        "prompt_tokens": 4000,
        "completion_tokens": 200,
        "cost_usd": round((4000 * 0.15 + 200 * 0.60) / 1e6, 6),
    }

    with scores.open("a") as out:  # scored again by a model the table does not price
        out.write(scores_line("fake-model", "s1", 10, 1))
    stats = stats_of(evol, run)
    assert stats["roles"]["score"] == {
        "model": "fake-model, gpt-4o-mini",
        "prompt_tokens": 4010,
        "completion_tokens": 201,
        "cost_usd": None,
    }
    assert stats["total_cost_usd"] is None
    priced = stats_of(evol, run, "--price-in", "1", "--price-out", "2")["roles"]["score"]
    assert priced["cost_usd"] == round((4010 + 2 * 201) / 1e6, 6)


def test_a_run_json_that_names_no_backend_still_has_its_stats(evol, tmp_path: Path) -> None:
    """A run.json of an evol before the backend was recorded, or written by another tool: the
    models of its roles are unknown, the scoring calls are priced by their own model."""
    run = write_run(tmp_path / "run", [record("s1", "Name a river."), record("s1.1", "Name two.")])
    manifest = json.loads((run / "run.json").read_text())
    del manifest["backend"]
    (run / "run.json").write_text(json.dumps(manifest))
    (run / "scores.jsonl").write_text(scores_line("gpt-4o-mini", "s1", 1000, 100))
    stats = stats_of(evol, run)
    assert [row["kept"] for row in stats["generations"]] == [1, 1]
    assert stats["roles"]["score"]["cost_usd"] == round((1000 * 0.15 + 100 * 0.60) / 1e6, 6)


def test_the_table_has_a_row_for_every_generation_up_to_the_last_with_records(
    evol, tmp_path: Path
) -> None:
    """Generations 1 and 2 lost every record (eliminated, then the file removed): their rows
    are there, empty, between gen 0 and gen 3."""
    run = write_run(
        tmp_path / "run", [record("s1", "Name a river."), record("s1.1.1.1", "Name four.")]
    )
    rows = stats_of(evol, run)["generations"]
    assert [(row["generation"], row["kept"]) for row in rows] == [(0, 1), (1, 0), (2, 0), (3, 1)]


def test_a_record_of_the_last_generation_a_run_can_make_has_every_row_before_it(
    evol, tmp_path: Path
) -> None:
    run = write_run(
        tmp_path / "run", [record("s1", "Name a river."), record("s1.1", "Far.", generation=100)]
    )
    rows = stats_of(evol, run)["generations"]
    assert [row["generation"] for row in rows] == list(range(101))
    assert [row["kept"] for row in rows] == [1] + [0] * 99 + [1]


def test_a_run_without_records_has_one_empty_row_for_its_seeds(evol, tmp_path: Path) -> None:
    run = write_run(tmp_path / "run", [record("s1", "Name a river.")])
    (run / "gen_0.jsonl").unlink()
    rows = stats_of(evol, run)["generations"]
    assert [(row["generation"], row["kept"]) for row in rows] == [(0, 0)]


def test_an_export_into_folders_that_do_not_exist_yet_makes_them(evol, tmp_path: Path) -> None:
    run = write_run(tmp_path / "run", [record("s1", "Name a river.")])
    out = tmp_path / "exports" / "today" / "data.jsonl"
    result = evol("export", run, "--out", out, "--format", "jsonl")
    assert result.exit_code == 0, result.output
    assert [json.loads(line)["id"] for line in out.read_text().splitlines()] == ["s1"]


def test_an_export_over_a_file_of_the_run_is_refused_naming_the_option(
    evol, tmp_path: Path
) -> None:
    run = write_run(tmp_path / "run", [record("s1", "Name a river.")])
    before = (run / "gen_0.jsonl").read_bytes()
    result = evol("export", run, "--out", run / "gen_0.jsonl", "--format", "jsonl")
    assert result.exit_code == 2
    assert result.stderr == (
        f"evol: error: {run / 'gen_0.jsonl'}: is gen_0.jsonl of the run in {run}; give --out a "
        "path outside the run's own files\n"
    )
    assert (run / "gen_0.jsonl").read_bytes() == before
