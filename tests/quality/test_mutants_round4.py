"""Promises of `evol score` and its files that the fourth round of mutation survivors (checks
4,741 on, #22) found unpinned: which lines of scores.jsonl count (a blank line ends nothing, a
last line cut mid-write is left out, a damaged one elsewhere is named), a score given as "7 Out
Of 10", and the refusals of a run without records or with a damaged contamination check.

Each test goes through the CLI or through a function both trees name (imported from where each
tree keeps it), so that it runs on 4f7dc9e's tree, where the mutants were found, as on `main`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from evol.errors import RunDirError
from tests.support.runs import record, write_run

try:
    from evol.quality.contamination import read_contamination
    from evol.quality.readings import read_number
    from evol.quality.scores import SCORES, read_score_lines
except ImportError:  # 4f7dc9e, before the quality package
    from evol.contamination import read_contamination
    from evol.scoring import SCORES, read_number, read_score_lines


def score_line(record_id: str, score: float) -> bytes:
    line = {
        "scorer": "difficulty",
        "model": "fake-model",
        "id": record_id,
        "digest": "0" * 16,
        "score": score,
        "usage": {"prompt_tokens": 10, "completion_tokens": 1},
    }
    return json.dumps(line).encode() + b"\n"


def scored_ids(run: Path) -> list[tuple[str, float | None]]:
    return [(line.id, line.score) for line in read_score_lines(run)]


def test_a_blank_line_in_scores_jsonl_hides_none_of_the_lines_after_it(tmp_path: Path) -> None:
    """Each line after it was paid for: dropped, its record would be scored (and paid) again."""
    (tmp_path / SCORES).write_bytes(score_line("a", 3) + b"\n   \n" + score_line("b", 4))
    assert scored_ids(tmp_path) == [("a", 3.0), ("b", 4.0)]


def test_a_last_line_cut_mid_write_is_left_out_and_the_others_are_kept(tmp_path: Path) -> None:
    """A crash can leave the last line's newline written and its text not (a hole of zeros on
    some file systems): the lines before it count."""
    whole = score_line("a", 3) + score_line("b", 4)
    (tmp_path / SCORES).write_bytes(whole + b"\0" * 20 + b"\n")
    assert scored_ids(tmp_path) == [("a", 3.0), ("b", 4.0)]


@pytest.mark.parametrize(
    ("damaged", "after"),
    [(b"not json\n", score_line("b", 4)), (b"\0" * 20 + b"\n", b'{"scorer": "diffi')],
    ids=["a whole line after it", "a torn tail after it"],
)
def test_a_damaged_line_that_is_not_the_last_write_is_named_with_what_to_do(
    tmp_path: Path, damaged: bytes, after: bytes
) -> None:
    """Only the very end of the file can be a write cut short; a bad line with anything after
    it is named, not passed over."""
    path = tmp_path / SCORES
    path.write_bytes(score_line("a", 3) + damaged + after)
    with pytest.raises(RunDirError) as raised:
        read_score_lines(tmp_path)
    assert str(raised.value) == (
        f"{path}:2: not a score line; delete that line (its record is scored again) or the file"
    )


@pytest.mark.parametrize(
    "reply", ["7 Out Of 10", "I would rate it 7 OUT OF 10, no more.", "It is 7/10"]
)
def test_a_score_out_of_the_maximum_is_read_in_any_case(reply: str) -> None:
    found = read_number(reply, 10)
    assert found is not None and found[0] == 7.0
    assert reply[found[1] : found[2]] == "7"


def test_a_run_without_records_is_not_scored(evol, tmp_path: Path) -> None:
    run = write_run(tmp_path / "run", [record("s1", "Name a river.")])
    for path in run.glob("gen_*.jsonl"):
        path.unlink()
    result = evol("score", run, "--base-url", "http://127.0.0.1:9/v1", "--no-metrics")
    assert result.exit_code == 2
    assert result.stderr == f"evol: error: {run}: the run has no records yet\n"


@pytest.mark.parametrize(
    ("content", "why"),
    [
        ('{"ngram": 13', r"Expecting ',' delimiter: line 1 column 13 \(char 12\)"),
        ('{"ngram": "thirteen"}', r"\d+ validation errors? for ContaminationReport"),
    ],
    ids=["not JSON", "not a report"],
)
def test_a_damaged_contamination_check_is_named_with_its_first_fault(
    tmp_path: Path, content: str, why: str
) -> None:
    path = tmp_path / "contamination.json"
    path.write_text(content)
    with pytest.raises(RunDirError) as raised:
        read_contamination(tmp_path)
    expected = re.escape(f"{path}: unreadable (") + why
    assert re.fullmatch(
        expected + re.escape("); check again with evol score --against"), str(raised.value)
    )
