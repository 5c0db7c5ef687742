"""The batches of one state directory, as `batches.jsonl` records them: which batch each
request waits in, how often each was submitted, and each batch's intent, creation and end,
written (and synced) before it counts. `results.jsonl` keeps the rows that came back.

A restart rebuilds all of it from the two files (`Ledger.load`), so nothing that was paid is
paid again and nothing that was submitted is forgotten, whatever was killed when.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from evol.errors import TransientBackendError
from evol.jsonl import OWN_LINK_REMEDY, refuse_symlinks
from evol.llm.batch.client import BatchObject
from evol.llm.batch.settings import RESULTS_FILE, STATE_FILE, BatchInfo
from evol.llm.batch.state import Entry, Journal, Results


@dataclass
class Batch:
    """One batch this run made, from its intent to its end."""

    token: str
    model: str
    custom_ids: list[str]  # emptied once the batch has ended
    input_file_id: str | None
    id: str | None = None
    status: str = "creating"
    request_counts: dict[str, int] = field(default_factory=dict)
    output_file_id: str | None = None
    error_file_id: str | None = None
    ended: bool = False
    busy: bool = False  # its create call is under way in this process
    note: str | None = None
    requests: int = 0

    def update(self, batch: BatchObject) -> None:
        """Take the state, counts and files the server shows for it."""
        self.status = batch.status
        if batch.request_counts is not None:
            self.request_counts = batch.request_counts.model_dump()
        self.output_file_id, self.error_file_id = batch.output_file_id, batch.error_file_id


class Ledger:
    """What this state directory's batches hold; read on first use (`load`), not before."""

    def __init__(self, state_dir: Path):
        self.state_dir = state_dir
        self.tmp = state_dir / "tmp"  # input files being written, output files downloaded
        self.batches: dict[str, Batch] = {}  # by token
        self.submissions: Counter[str] = Counter()  # custom_id -> batches it was submitted in
        self.in_batch: dict[str, Batch] = {}  # custom_id -> the open batch that holds it
        self._journal: Journal | None = None
        self._results: Results | None = None

    @property
    def journal(self) -> Journal:
        assert self._journal is not None, "load() first"
        return self._journal

    @property
    def results(self) -> Results:
        assert self._results is not None, "load() first"
        return self._results

    def load(self) -> None:
        """Once: rebuild the batches of earlier processes from batches.jsonl.

        Not when the backend is made: that is before the run directory is locked (and, with
        --overwrite, emptied), and reading these files cuts a torn last line.
        """
        if self._journal is not None:
            return
        state = self.state_dir
        # its files are cut, appended to and deleted: never elsewhere
        refuse_symlinks(
            (state, state / STATE_FILE, state / RESULTS_FILE, self.tmp), OWN_LINK_REMEDY
        )
        self._results = Results(state / RESULTS_FILE)
        self._journal = Journal(state / STATE_FILE)
        entries = self.journal.read()
        self.batches = replay(entries)
        abandoned = {entry.token for entry in entries if entry.event == "abandoned"}
        self.submissions = Counter(
            custom_id
            for entry in entries
            if entry.event == "intent" and entry.token not in abandoned
            for custom_id in entry.custom_ids
        )
        for batch in self.batches.values():
            if not batch.ended:
                self.hold(batch)

    def check_submissions(self, custom_id: str, max_retries: int, where: str) -> None:
        """A request that batches never answered after `max_retries` + 1 submissions, in this
        process and earlier ones, is not submitted again: each process starts the engine's
        retries afresh, so without this a --batch-no-wait loop would pay for it forever."""
        submitted = self.submissions[custom_id]
        if submitted > max_retries:
            raise TransientBackendError(
                f"{where}: this request got no answer in the {submitted} batches it was "
                "submitted in (listed in batch/batches.jsonl); raise --max-retries to submit it "
                "again"
            )

    def hold(self, batch: Batch) -> None:
        """Mark the batch's unanswered requests as waiting in it."""
        self.batches[batch.token] = batch
        for custom_id in batch.custom_ids:
            if custom_id not in self.results.index:
                self.in_batch[custom_id] = batch

    def intend(self, token: str, model: str, file_id: str, custom_ids: list[str]) -> Batch:
        """Record a batch before its create call: a crash after it cannot lose the batch."""
        self.journal.append(
            event="intent",
            token=token,
            model=model,
            input_file_id=file_id,
            custom_ids=custom_ids,
            at=time.time(),
        )
        self.submissions.update(custom_ids)
        batch = Batch(token, model, custom_ids, file_id, requests=len(custom_ids), busy=True)
        self.hold(batch)
        return batch

    def created(self, batch: Batch, created: BatchObject) -> None:
        """Record the id the server gave the batch."""
        self.journal.append(event="created", token=batch.token, batch_id=created.id)
        batch.id, batch.note = created.id, None
        batch.update(created)

    def abandon(self, batch: Batch) -> list[str]:
        """Give up a batch the server never created; returns the requests that waited in it."""
        self.journal.append(event="abandoned", token=batch.token)
        custom_ids, batch.custom_ids = batch.custom_ids, []
        self.submissions.subtract(custom_ids)  # never created: never paid
        batch.ended, batch.status = True, "abandoned"
        return self._release(batch, custom_ids)

    def end(
        self, batch: Batch, status: str, outcomes: dict[str, int | Exception], missing: Exception
    ) -> list[tuple[str, int | Exception]]:
        """Record the batch's end; returns each of its requests with its outcome: its place
        in results.jsonl, or the error that says why it has none (`missing` if it has no row)."""
        self.journal.append(
            event="ended",
            token=batch.token,
            batch_id=batch.id,
            status=status,
            request_counts=batch.request_counts,
            output_file_id=batch.output_file_id,
            error_file_id=batch.error_file_id,
        )
        custom_ids, batch.custom_ids = batch.custom_ids, []
        batch.ended, batch.status = True, status
        self._release(batch, custom_ids)
        ended = []
        for custom_id in custom_ids:
            outcome = outcomes.get(custom_id, self.results.index.get(custom_id, missing))
            if isinstance(outcome, int):
                self.results.index.setdefault(custom_id, outcome)
            ended.append((custom_id, outcome))
        return ended

    def open(self) -> list[Batch]:
        """The batches that have not ended, but for one whose create call is under way."""
        return [batch for batch in self.batches.values() if not batch.ended and not batch.busy]

    def infos(self) -> list[BatchInfo]:
        """Every batch that reached the server, oldest first."""
        return [
            BatchInfo(
                id=batch.id,
                status=batch.status,
                model=batch.model,
                requests=batch.requests,
                request_counts=batch.request_counts,
                input_file_id=batch.input_file_id,
                output_file_id=batch.output_file_id,
                error_file_id=batch.error_file_id,
                note=batch.note,
            )
            for batch in self.batches.values()
            if batch.status != "abandoned"
        ]

    def close(self) -> None:
        if self._journal is not None and self._results is not None:
            self._journal.close()
            self._results.close()

    def _release(self, batch: Batch, custom_ids: list[str]) -> list[str]:
        """The requests of `custom_ids` that waited in `batch`, no longer marked so."""
        released = [c for c in custom_ids if self.in_batch.get(c) is batch]
        for custom_id in released:
            del self.in_batch[custom_id]
        return released


def replay(entries: list[Entry]) -> dict[str, Batch]:
    """The batches that batches.jsonl records, by token, each as its last line left it."""
    batches: dict[str, Batch] = {}
    for entry in entries:
        if entry.event == "intent":
            batches[entry.token] = Batch(
                entry.token,
                entry.model,
                entry.custom_ids,
                entry.input_file_id,
                requests=len(entry.custom_ids),
            )
            continue
        batch = batches.get(entry.token)
        if batch is None:
            continue
        if entry.event == "created":
            batch.id, batch.status = entry.batch_id, "submitted"
        elif entry.event == "ended":
            batch.ended, batch.custom_ids = True, []
            batch.status = entry.status or "ended"
            batch.request_counts = entry.request_counts
            batch.output_file_id, batch.error_file_id = entry.output_file_id, entry.error_file_id
        else:
            batch.ended, batch.custom_ids, batch.status = True, [], "abandoned"
    return batches


def recorded_batches(state_dir: Path) -> dict[str, bool]:
    """Each batch that `state_dir` records, by id (or, before its create call returned, its
    token), and whether it has ended. Reads only: no torn line is cut."""
    entries = Journal(state_dir / STATE_FILE).read(repair=False)
    return {b.id or b.token: b.ended for b in replay(entries).values() if b.status != "abandoned"}


@dataclass(frozen=True)
class RecordedBatches:
    """The batches a state directory records (none where there is no directory), for the
    checks that refuse what would pay for their rows again."""

    ended: dict[str, bool]

    @classmethod
    def of(cls, state_dir: Path) -> RecordedBatches:
        return cls(recorded_batches(state_dir) if state_dir.is_dir() else {})

    def __bool__(self) -> bool:
        return bool(self.ended)

    @property
    def running(self) -> list[str]:
        return [name for name, ended in self.ended.items() if not ended]

    def some_running(self) -> str:
        """The running batches for a message: three names at most, then "..."."""
        running = self.running
        return ", ".join(running[:3]) + (", ..." if len(running) > 3 else "")
