"""evol.llm.batch.state: results.jsonl, fed from the downloaded output files. A downloaded part
is evol's own file in batch/tmp: a link in its place is refused, what it points at is neither
read nor touched, and nothing is appended for it. A stored answer without its status or body is
a one-line error."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from evol.errors import RunDirError
from evol.llm.batch import RESULTS_FILE
from evol.llm.batch.state import Results
from evol.llm.openai_api import ReplyReader
from evol.secrets import Secrets

READER = ReplyReader("http://x/v1 batch b1", "OPENAI_API_KEY", Secrets("sk-secret-key-123"))
BODY = {"choices": [{"message": {"content": "hi"}, "finish_reason": "stop"}], "usage": None}


def row(custom_id: str) -> bytes:
    return orjson.dumps({"custom_id": custom_id, "response": {"status_code": 200, "body": BODY}})


def test_a_downloaded_part_is_ingested_and_removed(tmp_path: Path) -> None:
    part = tmp_path / "download-1.jsonl"
    part.write_bytes(row("evol-1") + b"\n")
    results = Results(tmp_path / RESULTS_FILE)
    outcomes = results.ingest([part], frozenset({"evol-1"}), "m", READER)
    assert list(outcomes) == ["evol-1"] and isinstance(outcomes["evol-1"], int)
    assert not part.exists()
    assert orjson.loads((tmp_path / RESULTS_FILE).read_bytes())["custom_id"] == "evol-1"


def test_a_link_in_a_downloaded_parts_place_is_refused_and_its_target_untouched(
    tmp_path: Path,
) -> None:
    theirs = tmp_path / "theirs.jsonl"
    theirs.write_bytes(row("evol-1") + b"\n")
    link = tmp_path / "download-1.jsonl"
    link.symlink_to(theirs)
    results = Results(tmp_path / RESULTS_FILE)
    with pytest.raises(RunDirError) as raised:
        results.ingest([link], frozenset({"evol-1"}), "m", READER)
    assert str(raised.value) == f"{link}: is a symbolic link; remove it (evol made none)"
    assert theirs.read_bytes() == row("evol-1") + b"\n"
    assert not link.is_symlink()  # the link is removed as the parts are, never what it names
    assert (tmp_path / RESULTS_FILE).read_bytes() == b""


@pytest.mark.parametrize("row", [b'{"custom_id":"a"}\n', b'{"custom_id":"a","status_code":200}\n'])
def test_a_stored_answer_without_its_status_or_body_is_a_one_line_error(
    tmp_path: Path, row: bytes
) -> None:
    path = tmp_path / "results.jsonl"
    path.write_bytes(row)
    with pytest.raises(RunDirError, match=r"results\.jsonl:1: not a stored answer"):
        Results(path)
