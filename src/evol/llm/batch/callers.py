"""The callers of the batch backend that wait for a row: one future a request, shared by every
caller that asks the same thing, settled once with its answer, its error or `BatchPending`."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from evol.errors import RateLimited, TransientBackendError, own_copy
from evol.llm.batch.ledger import Batch
from evol.llm.batch.settings import BatchPending
from evol.llm.protocol import Completion


@dataclass
class Waiter:
    """The callers of one request: one future, and the line to submit again if need be."""

    future: asyncio.Future[Completion]
    model: str
    line: bytes


class Callers:
    """The requests someone waits for in this process, by custom_id."""

    def __init__(self) -> None:
        self._waiting: dict[str, Waiter] = {}

    def get(self, custom_id: str) -> Waiter | None:
        return self._waiting.get(custom_id)

    def add(self, custom_id: str, model: str, line: bytes) -> Waiter:
        """A future for a request nobody waited for yet (in the running loop)."""
        future = asyncio.get_running_loop().create_future()
        future.add_done_callback(_retrieve)
        waiter = self._waiting[custom_id] = Waiter(future, model, line)
        return waiter

    def take(self, custom_id: str) -> Waiter | None:
        """The request's waiter, no longer waiting: its caller is about to be answered."""
        return self._waiting.pop(custom_id, None)

    def answer(self, waiter: Waiter, outcome: Completion | Exception) -> None:
        settle(waiter.future, own_copy(outcome) if isinstance(outcome, Exception) else outcome)

    def fail(self, custom_ids: list[str], error: Exception) -> None:
        """Fail the waiting callers of these requests with `error`."""
        if isinstance(error, RateLimited):  # the Batch API's limits are not the engine's
            error = TransientBackendError(str(error), error.retry_after)
        for custom_id in custom_ids:
            if (waiter := self.take(custom_id)) is not None:
                settle(waiter.future, own_copy(error))

    def pend(self, batch: Batch) -> None:
        """With `no_wait`: tell the batch's callers it is pending instead of waiting for it."""
        for custom_id in batch.custom_ids:
            if (waiter := self.take(custom_id)) is not None:
                settle(waiter.future, BatchPending(batch.id, batch.status))

    def fail_all(self, error: BaseException) -> None:
        """Every waiting caller gets `error` (a background task crashed with it)."""
        for waiter in self._waiting.values():
            settle(waiter.future, own_copy(error))
        self._waiting.clear()

    def cancel_all(self) -> None:
        for waiter in self._waiting.values():
            waiter.future.cancel()
        self._waiting.clear()


def settle(future: asyncio.Future[Completion], outcome: Completion | BaseException) -> None:
    if future.done():
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)


def _retrieve(future: asyncio.Future[Completion]) -> None:
    """Mark a shared future's error as seen: its callers may all have gone."""
    if not future.cancelled():
        future.exception()
