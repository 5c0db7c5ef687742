"""evol.errors: every failure a user can act on is copied and pickled whole, whatever its
own arguments. The batch backend gives each caller waiting on a batch its own copy of the
batch's failure; a StorageError that could not be copied left those callers waiting forever."""

from __future__ import annotations

import copy
import errno
import pickle

import pytest

from evol.errors import (
    ConfigMismatch,
    EvolError,
    SeedFileError,
    StorageError,
    TransientBackendError,
    UsageError,
)

ERRORS = [
    StorageError("run/batch/results.jsonl", OSError(errno.ENOSPC, "No space left on device")),
    SeedFileError("seeds.jsonl", 3, "not a JSON object"),
    ConfigMismatch("run", {"model": ("a", "b")}),
    TransientBackendError("http://127.0.0.1/v1 answered 503: busy", 2.5),
    UsageError("--shard 3/2: the index is not below the count"),
]


@pytest.mark.parametrize("error", ERRORS, ids=lambda error: type(error).__name__)
@pytest.mark.parametrize("duplicate", [copy.copy, lambda e: pickle.loads(pickle.dumps(e))])
def test_a_copy_of_an_error_is_the_same_error(error: EvolError, duplicate) -> None:
    again = duplicate(error)
    assert type(again) is type(error) and again is not error
    assert str(again) == str(error) and again.args == error.args
    assert vars(again) == vars(error)


class KeywordOnly(Exception):
    """Like the SDK's APIConnectionError: copy.copy cannot rebuild it from its args."""

    def __init__(self, *, request: str) -> None:
        super().__init__(f"connection error on {request}")


def test_an_error_for_another_caller_is_a_copy_or_the_error_itself() -> None:
    from evol.errors import own_copy

    error = ERRORS[0]
    again = own_copy(error)
    assert type(again) is type(error) and again is not error and str(again) == str(error)
    foreign = KeywordOnly(request="POST /v1/files")
    with pytest.raises(TypeError):
        copy.copy(foreign)
    assert own_copy(foreign) is foreign
