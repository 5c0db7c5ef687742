"""The run directory's names (evol.rundir.layout): which files are a run's own, and the generation
files in number order."""

from __future__ import annotations

from pathlib import Path

import pytest


def test_evols_own_files_are_known_by_name_and_place(tmp_path: Path) -> None:
    from evol.errors import UsageError
    from evol.rundir.layout import refuse_run_state

    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text("{}")
    for name in ("gen_0.jsonl", "dataset.jsonl.tmp", "scores.jsonl", ".evol.lock", "batch"):
        with pytest.raises(UsageError):
            refuse_run_state(run / name, "--out")
    for path in (run / "notes.txt", run / "export.jsonl", tmp_path / "gen_0.jsonl"):
        refuse_run_state(path, "--out")  # not a run's own file: allowed


def test_generation_files_come_in_number_order_past_nine(tmp_path: Path) -> None:
    from evol.rundir.layout import generation_files

    for generation in (10, 2, 0, 11, 1):
        (tmp_path / f"gen_{generation}.jsonl").write_text("")
    (tmp_path / "gen_x.jsonl").write_text("")  # not a generation
    assert [p.name for p in generation_files(tmp_path)] == [
        "gen_0.jsonl", "gen_1.jsonl", "gen_2.jsonl", "gen_10.jsonl", "gen_11.jsonl",
    ]  # fmt: skip
