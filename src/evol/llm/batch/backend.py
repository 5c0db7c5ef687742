"""`BatchBackend`, the `ChatBackend` whose requests travel in batches, and its submitter:
requests that arrive together are queued, written to one input file per model, uploaded and
submitted as one batch, each step recorded in the ledger before it counts. The poller
(`evol.llm.batch.poller`) waits for the batches and answers the callers."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable
from typing import Any

from evol.errors import (
    BackendError,
    EvolError,
    RunDirError,
    StorageError,
    TransientBackendError,
    own_copy,
)
from evol.jsonl import open_fresh
from evol.llm.batch.callers import Callers, Waiter
from evol.llm.batch.client import BatchClient, BatchObject
from evol.llm.batch.ledger import Batch, Ledger
from evol.llm.batch.poller import Poller
from evol.llm.batch.rows import plan_files, reply_outcome, request_line
from evol.llm.batch.settings import BatchFailed, BatchInfo, BatchPending, BatchSettings, retried
from evol.llm.openai_api import ResponseFormats, served_model
from evol.llm.protocol import (
    BackendSettings,
    Capabilities,
    Completion,
    GenerationParams,
    LLMRequest,
)


class _Refused(Exception):
    """The create call itself was refused (4xx): the server made no batch."""

    def __init__(self, error: EvolError):
        super().__init__(str(error))
        self.error = error


class BatchBackend:
    """A `ChatBackend` whose requests travel in batches; see `evol.llm.batch`."""

    capabilities = Capabilities(needs_key=True, batchable=True, several_choices=True)

    def __init__(self, settings: BackendSettings, batch: BatchSettings):
        self.settings = batch
        self.client = BatchClient(settings, batch)
        self.where = self.client.where
        # Read on first use (`ledger.load()`), when the run holds its directory's lock.
        self.ledger = Ledger(batch.state_dir)
        self.callers = Callers()
        self.poller = Poller(self.ledger, self.client, batch, self.callers, self._requeue)
        self._queue: dict[str, dict[str, bytes]] = {}  # model -> custom_id -> line
        self._queued_bytes: dict[str, int] = {}
        self._arrival = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._broken: BaseException | None = None
        self.formats = ResponseFormats()  # the schemas this endpoint's rows refused

    async def complete(self, request: LLMRequest) -> Completion:
        """The request's answer from a batch; a row refused for its response_format is asked
        again without it, in a later batch, as a live endpoint would be."""

        def send(options: dict[str, Any]) -> Awaitable[Completion]:
            return self._complete(request.with_params(GenerationParams.model_validate(options)))

        return await self.formats.send(request.params, send)

    async def _complete(self, request: LLMRequest) -> Completion:
        model = request.model
        custom_id, line = request_line(request.messages, model, request.params, request.step)
        self.ledger.load()
        if (stored := self.ledger.results.get(custom_id)) is not None:
            return _returned(reply_outcome(*stored, model, self.client.reader))
        if self._broken is not None:
            raise own_copy(self._broken)
        batch = self.ledger.in_batch.get(custom_id)
        if batch is not None and self.settings.no_wait and self.poller.attached:
            raise BatchPending(batch.id, batch.status)
        waiter = self.callers.get(custom_id)
        if waiter is None and batch is None:
            self.ledger.check_submissions(custom_id, self.settings.max_retries, self.where)
        if waiter is None:
            if len(line) > self.settings.max_bytes:
                raise BackendError(
                    f"a request of {len(line):,} bytes does not fit a batch input file "
                    f"({self.settings.max_bytes:,} bytes at most)"
                )
            waiter = self.callers.add(custom_id, model, line)
            if batch is None:
                self._enqueue(custom_id, waiter)
        self._start()
        return await asyncio.shield(waiter.future)

    async def default_model(self) -> str:
        """The server's model when it serves exactly one; else ask for --model."""
        return served_model(await self.client.models(), self.where, self.client.secrets)

    def batches(self) -> list[BatchInfo]:
        """Every batch of this state directory that reached the server, oldest first."""
        self.ledger.load()
        return self.ledger.infos()

    def pending(self) -> int:
        """Requests waiting in batches that have not ended."""
        self.ledger.load()
        return len(self.ledger.in_batch)

    async def aclose(self) -> None:
        """Stop submitting and polling; what is pending stays recorded for the next process."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.poller.ingesting is not None:  # a thread appending results: let it finish
            await asyncio.wait({self.poller.ingesting})
        self.callers.cancel_all()
        await self.client.close()
        self.ledger.close()

    def _start(self) -> None:
        """Start submitting and polling; the state directory is made only now, when needed."""
        if self._tasks:
            return
        tmp = self.ledger.tmp
        try:
            tmp.mkdir(parents=True, exist_ok=True)
            for leftover in tmp.iterdir():  # files a killed process was writing
                leftover.unlink()
        except OSError as error:
            raise StorageError(tmp, error) from None
        for work in (self._submit_loop(), self.poller.run()):
            task = asyncio.get_running_loop().create_task(work)
            task.add_done_callback(self._task_ended)
            self._tasks.append(task)

    def _task_ended(self, task: asyncio.Task[None]) -> None:
        """A background task that crashed fails every caller instead of leaving them waiting."""
        if task.cancelled() or task.exception() is None:
            return
        self._broken = task.exception()
        self.callers.fail_all(self._broken)

    # -- submitting -----------------------------------------------------------------------

    def _enqueue(self, custom_id: str, waiter: Waiter) -> None:
        self._queue.setdefault(waiter.model, {})[custom_id] = waiter.line
        self._queued_bytes[waiter.model] = self._queued_bytes.get(waiter.model, 0) + len(
            waiter.line
        )
        self._arrival.set()

    def _requeue(self, custom_ids: list[str]) -> None:
        """Queue again the waiting requests of a batch the server never made."""
        for custom_id in custom_ids:
            if (waiter := self.callers.get(custom_id)) is not None:
                self._enqueue(custom_id, waiter)

    def _full(self, model: str | None = None) -> bool:
        """Whether the queue of `model` (of any model if None) fills an input file."""
        return any(
            len(self._queue[name]) >= self.settings.max_requests
            or self._queued_bytes[name] >= self.settings.max_bytes
            for name in ([model] if model else self._queue)
        )

    async def _submit_loop(self) -> None:
        """Submit what is queued once no request arrived for `quiet_period`, or a file is full."""
        arrival = self._arrival
        while True:
            await arrival.wait()
            quiet = False
            while not quiet and not self._full():
                arrival.clear()
                try:
                    async with asyncio.timeout(self.settings.quiet_period):
                        await arrival.wait()
                except TimeoutError:
                    quiet = True
            arrival.clear()
            await self._submit_queued(everything=quiet)
            if self._queue:
                arrival.set()  # the rest of a queue that filled a file: wait for quiet again

    async def _submit_queued(self, *, everything: bool) -> None:
        """One file per model and per `max_requests`/`max_bytes`; a part-filled file waits
        for quiet unless `everything`."""
        for model in list(self._queue):
            queue = self._queue[model]
            while queue and (everything or self._full(model)):
                custom_ids = list(queue)
                counts = plan_files(
                    (len(queue[c]) for c in custom_ids),
                    max_requests=self.settings.max_requests,
                    max_bytes=self.settings.max_bytes,
                )
                chunk = custom_ids[: counts[0]]
                lines = [queue.pop(custom_id) for custom_id in chunk]
                self._queued_bytes[model] -= sum(map(len, lines))
                await self._submit_file(model, chunk, lines)
            if not queue:
                del self._queue[model], self._queued_bytes[model]

    async def _submit_file(self, model: str, custom_ids: list[str], lines: list[bytes]) -> None:
        token = secrets.token_hex(16)
        path = self.ledger.tmp / f"input-{token}.jsonl"
        try:
            with open_fresh(path) as out:
                out.writelines(lines)
            file_id = await retried(lambda: self.client.upload(path), self.settings)
        except (TransientBackendError, EvolError, OSError) as error:
            return self.callers.fail(
                custom_ids, _submission_error(error, "upload a batch input file")
            )
        finally:
            path.unlink(missing_ok=True)
        batch = self.ledger.intend(token, model, file_id, custom_ids)
        try:
            created = await self._create(batch)
        except _Refused as refused:  # the server answered no: there is no such batch
            self.ledger.abandon(batch)
            return self.callers.fail(custom_ids, _submission_error(refused.error, "create a batch"))
        except (TransientBackendError, EvolError) as error:
            # Created or not, we cannot tell: the poller looks for it before anything else.
            batch.note = str(error)
            return self.callers.fail(batch.custom_ids, error)
        finally:
            batch.busy = False
        self.ledger.created(batch, created)
        if self.settings.no_wait:
            self.callers.pend(batch)

    async def _create(self, batch: Batch) -> BatchObject:
        """Create the batch once: after a failed attempt, look for it before creating again."""
        sent = False

        async def attempt() -> BatchObject:
            nonlocal sent
            if sent and (found := await self.client.find(batch.token)) is not None:
                return found
            sent = True
            assert batch.input_file_id is not None
            try:
                return await self.client.create(
                    batch.input_file_id, batch.token, self.settings.completion_window
                )
            except EvolError as error:
                raise _Refused(error) from None

        return await retried(attempt, self.settings)


def _submission_error(error: BaseException, what: str) -> Exception:
    """A refused upload or create is a refused batch, not a verdict on its requests."""
    if isinstance(error, OSError):
        return RunDirError(f"cannot write a batch input file: {error.strerror}")
    if type(error) is BackendError:
        return BatchFailed(f"could not {what}: {error}")
    assert isinstance(error, Exception)
    return error


def _returned(outcome: Completion | Exception) -> Completion:
    if isinstance(outcome, Exception):
        raise outcome
    return outcome
