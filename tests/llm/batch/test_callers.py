"""The callers waiting for batch rows: every one of them is settled, whatever the failure."""

from __future__ import annotations

import asyncio

import pytest

from evol.errors import StorageError
from evol.llm.batch.callers import Callers


class KeywordOnly(Exception):
    """Like the SDK's APIConnectionError: its __init__ takes what its args do not hold, so
    copy.copy cannot rebuild it."""

    def __init__(self, *, request: str) -> None:
        super().__init__(f"connection error on {request}")
        self.request = request


FAILURES = [
    KeywordOnly(request="POST /v1/files"),
    StorageError("results.jsonl", OSError(28, "No space left on device")),
    RuntimeError("a poller bug"),
]


def waiting(callers: Callers, count: int) -> list[asyncio.Future]:
    return [callers.add(f"row-{n}", "m", b"{}").future for n in range(count)]


@pytest.mark.parametrize("error", FAILURES, ids=lambda e: type(e).__name__)
def test_a_crash_reaches_every_waiting_caller(error: Exception) -> None:
    async def main() -> list[BaseException | None]:
        callers = Callers()
        futures = waiting(callers, 3)
        callers.fail_all(error)
        return [f.exception() if f.done() else None for f in futures]

    raised = asyncio.run(main())
    assert [type(e) for e in raised] == [type(error)] * 3
    assert all(str(e) == str(error) for e in raised)


@pytest.mark.parametrize("error", FAILURES, ids=lambda e: type(e).__name__)
def test_a_failed_submission_reaches_each_of_its_callers_and_no_other(error: Exception) -> None:
    async def main() -> tuple[list[BaseException | None], bool]:
        callers = Callers()
        futures = waiting(callers, 3)
        callers.fail(["row-0", "row-2"], error)
        return [f.exception() if f.done() else None for f in futures], futures[1].done()

    raised, other_done = asyncio.run(main())
    assert [type(e) for e in raised] == [type(error), type(None), type(error)]
    assert other_done is False


@pytest.mark.parametrize("error", FAILURES, ids=lambda e: type(e).__name__)
def test_a_row_s_error_is_its_caller_s(error: Exception) -> None:
    async def main() -> BaseException | None:
        callers = Callers()
        (future,) = waiting(callers, 1)
        callers.answer(callers.take("row-0"), error)
        return future.exception() if future.done() else None

    assert type(asyncio.run(main())) is type(error)
