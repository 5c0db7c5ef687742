"""A record file read (evol.rundir.record_files): each line checked against the record model, blank
lines passed over, a line that is not strict JSON a corrupt record."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evol.errors import RunDirError
from evol.rundir.record_files import iter_records
from tests.support.runs import bare_record


def test_the_record_files_are_streamed_past_blank_lines(tmp_path: Path) -> None:
    lines = [json.dumps(bare_record("a")), "", json.dumps(bare_record("b")), ""]
    (tmp_path / "gen_0.jsonl").write_text("\n".join(lines) + "\n")
    assert [data["id"] for data in iter_records(tmp_path)] == ["a", "b"]


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity"])
def test_a_line_that_is_not_strict_json_is_a_corrupt_record(tmp_path: Path, value: str) -> None:
    # Read as the store reads them when a run opens (orjson): what one refuses, both do.
    path = tmp_path / "gen_0.jsonl"
    path.write_text(json.dumps(bare_record("a")) + "\n" + '{"id": "b", "score": ' + value + "}\n")
    with pytest.raises(RunDirError) as raised:
        list(iter_records(tmp_path))
    assert str(raised.value) == f"{path}:2: corrupt record"
