"""The record models (evol.rundir.records): a record without verifiable constraints keeps the
fields and order it always had; one with them adds its own at the end."""

from __future__ import annotations

from evol.method.elimination import Reason
from evol.rundir.records import EliminatedRecord, Record

OLD_KEYS = [
    "id", "parent_id", "root_id", "generation", "round", "operation", "instruction", "input",
    "output", "judge", "metadata", "usage", "detail",
]  # fmt: skip


def test_a_record_without_constraints_keeps_its_shape_and_one_with_them_adds_its_fields():
    record = Record(
        id="s1.1", parent_id="s1", root_id="s1", generation=1, round=1, operation="deepen",
        instruction="x", output="y",
    )  # fmt: skip
    assert list(record.model_dump(mode="json")) == OLD_KEYS
    gone = EliminatedRecord(**record.model_dump(), reason=Reason.SORRY)
    assert list(gone.model_dump(mode="json")) == [*OLD_KEYS, "reason", "duplicate_of"]
    record.constraints, record.attempts = [{"id": "punctuation:no_comma", "kwargs": {}}], 1
    assert list(record.model_dump(mode="json")) == [*OLD_KEYS, "constraints", "attempts"]
    record.rejected_output, record.unmet = "a, b", {"punctuation:no_comma": 1}
    assert list(record.model_dump())[-4:] == ["constraints", "attempts", "rejected_output", "unmet"]
