"""evol.llm.batch.state: the batch backend's files in its state directory, read back; what it
refuses to read."""

from __future__ import annotations

from pathlib import Path

import pytest

from evol.errors import RunDirError
from evol.llm.batch.state import Results


@pytest.mark.parametrize("row", [b'{"custom_id":"a"}\n', b'{"custom_id":"a","status_code":200}\n'])
def test_a_stored_answer_without_its_status_or_body_is_a_one_line_error(
    tmp_path: Path, row: bytes
) -> None:
    path = tmp_path / "results.jsonl"
    path.write_bytes(row)
    with pytest.raises(RunDirError, match=r"results\.jsonl:1: not a stored answer"):
        Results(path)
