"""evol.llm.batch.ledger: what batches.jsonl and results.jsonl say, rebuilt the same by the next
process. Every change is on disk before it counts: a new Ledger on the same directory (a
restart) sees exactly what the old one held; a batch given up is not counted as a submission;
a batch's end answers each of its requests from its rows, else from the rows kept, else with
the reason it has none."""

from __future__ import annotations

import orjson
import pytest

from evol.errors import TransientBackendError
from evol.llm.batch import RESULTS_FILE, recorded_batches
from evol.llm.batch.client import BatchObject
from evol.llm.batch.ledger import Ledger


def loaded(tmp_path) -> Ledger:
    ledger = Ledger(tmp_path)
    ledger.load()
    return ledger


def created(batch_id: str) -> BatchObject:
    counts = {"total": 3, "completed": 0, "failed": 0}
    return BatchObject.model_validate(
        {"id": batch_id, "status": "in_progress", "request_counts": counts}
    )


def test_a_restart_sees_what_the_last_process_recorded(tmp_path) -> None:
    ledger = loaded(tmp_path)
    first = ledger.intend("t1", "m", "file-1", ["a", "b"])
    ledger.created(first, created("batch_1"))
    second = ledger.intend("t2", "m", "file-2", ["b", "c"])  # its create call never returned
    ledger.close()

    again = loaded(tmp_path)
    assert {c: b.token for c, b in again.in_batch.items()} == {"a": "t1", "b": "t2", "c": "t2"}
    assert again.submissions == {"a": 1, "b": 2, "c": 1}
    assert [(b.id, b.status, b.requests) for b in again.open()] == [
        ("batch_1", "submitted", 2),
        (None, "creating", 2),
    ]
    assert recorded_batches(tmp_path) == {"batch_1": False, "t2": False}
    assert second.busy and not again.batches["t2"].busy


def test_a_batch_given_up_is_no_submission_and_frees_its_requests(tmp_path) -> None:
    ledger = loaded(tmp_path)
    kept = ledger.intend("t1", "m", "file-1", ["a"])
    ledger.created(kept, created("batch_1"))
    lost = ledger.intend("t2", "m", "file-2", ["a", "b"])
    assert ledger.in_batch["a"] is lost  # the newest batch holds it
    assert ledger.abandon(lost) == ["a", "b"]
    assert ledger.submissions == {"a": 1, "b": 0} and ledger.in_batch == {}
    assert [b.status for b in ledger.infos()] == ["in_progress"]  # as the server said
    ledger.close()
    assert loaded(tmp_path).submissions == {"a": 1}
    assert recorded_batches(tmp_path) == {"batch_1": False}


def test_the_submissions_after_max_retries_are_refused(tmp_path) -> None:
    ledger = loaded(tmp_path)
    for token in ("t1", "t2"):
        ledger.intend(token, "m", "file", ["a"])
    ledger.check_submissions("a", 2, "W")
    with pytest.raises(TransientBackendError, match="no answer in the 2 batches"):
        ledger.check_submissions("a", 1, "W")


def test_a_batch_s_end_answers_from_its_rows_then_the_kept_rows_then_missing(tmp_path) -> None:
    row = orjson.dumps({"custom_id": "kept", "status_code": 200, "body": {}}) + b"\n"
    (tmp_path / RESULTS_FILE).write_bytes(row)
    ledger = loaded(tmp_path)
    batch = ledger.intend("t1", "m", "file-1", ["new", "kept", "failed", "none"])
    assert set(ledger.in_batch) == {"new", "failed", "none"}  # "kept" has its row already
    ledger.created(batch, created("batch_1"))
    failed, missing = TransientBackendError("row failed"), TransientBackendError("no row")
    ended = ledger.end(batch, "completed", {"new": 7 << 32 | 10, "failed": failed}, missing)
    assert ended == [
        ("new", 7 << 32 | 10),
        ("kept", 0 << 32 | len(row)),
        ("failed", failed),
        ("none", missing),
    ]
    assert ledger.results.index["new"] == 7 << 32 | 10 and ledger.in_batch == {}
    assert batch.ended and batch.custom_ids == [] and ledger.open() == []
    ledger.close()
    assert recorded_batches(tmp_path) == {"batch_1": True}
    assert [b.request_counts for b in loaded(tmp_path).infos()] == [
        {"total": 3, "completed": 0, "failed": 0}
    ]


def test_a_refusal_names_three_batches_at_most_then_says_there_are_more() -> None:
    from evol.llm.batch import RecordedBatches

    def some(ended: dict[str, bool]) -> str:
        return RecordedBatches(ended).some_running()

    assert some({"batch_1": False, "batch_0": True}) == "batch_1"
    assert some({f"batch_{n}": False for n in range(1, 4)}) == "batch_1, batch_2, batch_3"
    for running in (4, 5):  # one more than it names is "more"
        some_of = {f"batch_{n}": False for n in range(1, running + 1)}
        assert some(some_of) == "batch_1, batch_2, batch_3, ..."
    assert not RecordedBatches({}) and RecordedBatches({"batch_0": True})
    assert RecordedBatches({"batch_0": True}).running == []
