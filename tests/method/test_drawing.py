"""Drawing a verifiable constraint (evol.method.drawing): --constraint-ids read and checked, and
the draw restricted to the ids named."""

from __future__ import annotations

import random
from typing import Any

import pytest

from evol.errors import UsageError
from evol.method.constraints import Constraint
from evol.method.drawing import parse_ids, pick

pytestmark = pytest.mark.usefixtures("private_cache")


def c(cid: str, **kwargs: Any) -> Constraint:
    return Constraint(id=cid, kwargs=kwargs)


def test_constraint_ids_are_checked_and_restrict_the_draw() -> None:
    assert parse_ids(None) is None and parse_ids(" ") is None
    assert parse_ids("startend:quotation, punctuation:no_comma,startend:quotation") == [
        "punctuation:no_comma",
        "startend:quotation",
    ]
    with pytest.raises(UsageError, match="unknown id 'startend:nope'; known: change_case"):
        parse_ids("punctuation:no_comma,startend:nope")
    for nothing in (",", " , ,"):  # names no id: a usage error, not an empty pool
        with pytest.raises(UsageError, match="names no id"):
            parse_ids(nothing)
    ids = ["punctuation:no_comma", "startend:quotation"]
    drawn = {pick(random.Random(n), [], ids).id for n in range(40)}
    assert drawn == set(ids)
    assert pick(random.Random(0), [c("startend:quotation")], ids).id == "punctuation:no_comma"
    assert pick(random.Random(0), [c("startend:quotation"), c("punctuation:no_comma")], ids) is None
