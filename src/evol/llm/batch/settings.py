"""What the batch backend is told (`BatchSettings`), what it shows (`BatchInfo`), its names on
disk and on the wire, its retry policy, and the errors only it raises."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, Field

from evol.errors import Deferred, EvolError
from evol.llm.retry import with_retries

ENDPOINT = "/v1/chat/completions"
STATE_FILE = "batches.jsonl"
RESULTS_FILE = "results.jsonl"
TOKEN_KEY = "evol_batch"  # the metadata key that carries a batch's token
T = TypeVar("T")


class BatchPending(Deferred):
    """With `no_wait`: the request waits in a batch that has not ended; run again later."""

    def __init__(self, batch_id: str | None, status: str):
        self.batch_id, self.status = batch_id, status
        super().__init__(f"waiting in batch {batch_id or '(being created)'} ({status})")


class BatchFailed(EvolError):
    """The server refused a whole batch (its validation failed): no retry would change it.

    Not a `BackendError`: it says nothing about the requests in it, so none is eliminated;
    the run stops and a resume submits them again once the cause is fixed.
    """

    exit_code = 1


class BatchUnknown(EvolError):
    """The server answers 404 for a batch this run made, or for its output or error file:
    another server or another project's key, most likely. Read as "gone", it would submit
    (and pay for) the batch's rows again while they may still run: the run stops instead."""

    exit_code = 2


class BatchSettings(BaseModel):
    """How the batch backend groups, submits and waits; `state_dir` belongs to the run."""

    model_config = ConfigDict(extra="forbid")

    state_dir: Path
    quiet_period: float = Field(1.0, ge=0)  # seconds with no new request before submitting
    max_requests: int = Field(50_000, ge=1)  # requests per input file (OpenAI: 50,000)
    max_bytes: int = Field(200_000_000, ge=1)  # bytes per input file (OpenAI: 200 MB)
    poll_interval: float = Field(60.0, gt=0)
    no_wait: bool = False  # submit what is due, then raise BatchPending instead of waiting
    completion_window: str = "24h"
    max_output_bytes: int = Field(2 << 30, ge=1)  # cap on one downloaded output or error file
    transfer_timeout: float = Field(1800.0, gt=0)  # seconds for one upload or download
    max_retries: int = Field(5, ge=0)  # of an upload, a download, a create or a poll
    retry_max_wait: float = Field(60.0, ge=0)


def retried(call: Callable[[], Awaitable[T]], settings: BatchSettings) -> Awaitable[T]:
    """`call` (an upload, a download, a create or a poll) under the batch settings' retries."""
    return with_retries(call, max_retries=settings.max_retries, max_wait=settings.retry_max_wait)


class BatchInfo(BaseModel):
    """One batch as a progress line or run.json shows it."""

    id: str | None
    status: str
    model: str
    requests: int
    request_counts: dict[str, int] = Field(default_factory=dict)
    input_file_id: str | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    note: str | None = None  # the last failure to reach it, if the latest attempt failed


def describe_batches(batches: list[BatchInfo]) -> str:
    """One progress line: how many batches are in each state, and the requests they hold."""
    states: dict[str, list[int]] = {}
    for batch in batches:
        tally = states.setdefault(batch.status, [0, 0])
        tally[0] += 1
        tally[1] += batch.requests
    shown = ", ".join(
        f"{count} {status} ({requests:,} requests)" for status, (count, requests) in states.items()
    )
    return f"batches: {shown or 'none yet'}"
