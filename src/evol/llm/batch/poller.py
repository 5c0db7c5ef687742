"""The batch backend's poller: it looks at the open batches (those of earlier processes too),
finds a batch whose create call was cut short by its token, downloads a finished batch's output
and error files, keeps the answered rows in results.jsonl and answers each waiting caller."""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

from evol.errors import EvolError, TransientBackendError
from evol.llm.batch.callers import Callers
from evol.llm.batch.client import BatchClient, BatchObject, Gone
from evol.llm.batch.ledger import Batch, Ledger
from evol.llm.batch.rows import reply_outcome
from evol.llm.batch.settings import BatchFailed, BatchSettings, BatchUnknown, retried
from evol.llm.openai_api import ReplyReader

_TERMINAL = frozenset({"completed", "expired", "cancelled", "failed"})
# A batch that failed on these is refused for now, not for good (OpenAI: "try again once the
# current jobs have finished").
_TRANSIENT_BATCH_ERRORS = frozenset({"token_limit_exceeded", "rate_limit_exceeded"})


class Poller:
    """Polls the ledger's open batches through the client and answers their callers;
    `requeue` submits again the waiting requests of a batch the server never made."""

    def __init__(
        self,
        ledger: Ledger,
        client: BatchClient,
        settings: BatchSettings,
        callers: Callers,
        requeue: Callable[[list[str]], None],
    ):
        self.ledger, self.client, self.settings = ledger, client, settings
        self.callers, self.requeue = callers, requeue
        self.attached = False  # the batches of earlier processes have been looked at
        self.ingesting: asyncio.Future[Any] | None = None  # rows being appended, in a thread

    async def run(self) -> None:
        """Look at the open batches now, then every `poll_interval`; with `no_wait`, only now."""
        await self._poll_open()
        self.attached = True
        if self.settings.no_wait:
            for batch in self.ledger.open():
                self.callers.pend(batch)
            return
        while True:
            await asyncio.sleep(self.settings.poll_interval)
            await self._poll_open()

    async def _poll_open(self) -> None:
        for batch in self.ledger.open():
            try:
                if batch.id is None:
                    await self._reattach(batch)
                else:
                    await self._poll(batch)
            except TransientBackendError as error:
                batch.note = str(error)
                self.callers.fail(batch.custom_ids, error)  # they retry; the batch stays open
            except EvolError as error:  # the key, the URL: nothing here will get better
                self.callers.fail(batch.custom_ids, error)

    async def _reattach(self, batch: Batch) -> None:
        """An intent with no batch id: the process stopped during the create call."""
        found = await retried(lambda: self.client.find(batch.token), self.settings)
        if found is None:
            return self.requeue(self.ledger.abandon(batch))
        self.ledger.created(batch, found)
        if found.status in _TERMINAL:
            await self._collect(batch, found)

    async def _poll(self, batch: Batch) -> None:
        assert batch.id is not None
        try:
            current = await retried(lambda: self.client.retrieve(batch.id or ""), self.settings)
        except Gone:
            raise self._unknown(batch, "the batch") from None
        batch.update(current)
        batch.note = None
        if current.status in _TERMINAL:
            await self._collect(batch, current)

    async def _collect(self, batch: Batch, current: BatchObject) -> None:
        """Fetch a finished batch's rows, keep the answers, and settle every request in it."""
        if current.status == "failed":
            return self._end(batch, {}, self._refusal(batch, current), current.status)
        paths: list[Path] = []
        try:
            for file_id in (current.output_file_id, current.error_file_id):
                if file_id is not None:
                    paths.append(await self._download(batch, file_id))
        except BaseException:
            for path in paths:
                path.unlink(missing_ok=True)
            raise
        results = self.ledger.results
        expected = frozenset(c for c in batch.custom_ids if c not in results.index)
        # In a thread: an output file may hold 50,000 rows. Shielded, so that aclose() can
        # wait for it to finish appending rather than leave a torn line behind.
        self.ingesting = asyncio.get_running_loop().run_in_executor(
            None, results.ingest, paths, expected, batch.model, self._reader(batch)
        )
        outcomes = await asyncio.shield(self.ingesting)
        self.ingesting = None
        why = f"{self._reader(batch).where} {current.status} without a row for this request"
        self._end(batch, outcomes, TransientBackendError(why), current.status)

    async def _download(self, batch: Batch, file_id: str) -> Path:
        dest = self.ledger.tmp / f"download-{secrets.token_hex(8)}.jsonl"
        try:
            await retried(lambda: self.client.download(file_id, dest), self.settings)
        except Gone:
            raise self._unknown(batch, f"its file {file_id}") from None
        return dest

    def _end(
        self, batch: Batch, outcomes: dict[str, int | Exception], missing: Exception, status: str
    ) -> None:
        """Record the batch's end, then answer each of its waiting requests."""
        for custom_id, outcome in self.ledger.end(batch, status, outcomes, missing):
            waiter = self.callers.take(custom_id)
            if waiter is None:
                continue
            if isinstance(outcome, int):
                stored = self.ledger.results.get(custom_id)
                assert stored is not None
                outcome = reply_outcome(*stored, waiter.model, self.client.reader)
            self.callers.answer(waiter, outcome)

    def _refusal(self, batch: Batch, current: BatchObject) -> Exception:
        """The error a `failed` batch means for its requests."""
        errors = current.errors.data if current.errors else []
        cut = self.client.secrets.cut
        reasons = "; ".join(
            cut(f"{error.code or 'error'}: {error.message or 'no message'}")
            + (f" (line {error.line})" if error.line is not None else "")
            for error in errors[:3]
        )
        reasons = reasons or "no reason given"
        where = self._reader(batch).where
        if any(error.code in _TRANSIENT_BATCH_ERRORS for error in errors):
            return TransientBackendError(f"{where} failed: {reasons}")
        return BatchFailed(f"{where} failed validation: {reasons}")

    def _reader(self, batch: Batch) -> ReplyReader:
        return dataclasses.replace(
            self.client.reader, where=f"{self.client.where} batch {batch.id}"
        )

    def _unknown(self, batch: Batch, what: str) -> BatchUnknown:
        """A 404 for a batch this run made, or for a file it names: the batch stays open, since
        its rows may be running and paid for; nothing is submitted again."""
        return BatchUnknown(
            f"{self.client.where} does not know {what} (batch {batch.id}, made by this run): "
            "check --base-url and the API key (a batch belongs to the project whose key made "
            "it); its requests are not submitted again"
        )
