"""The `batch` backend: chat completions through the OpenAI Batch API (half price, its own limits).

The engine does not know about batches: each `complete()` call becomes one line of a batch
input file and waits for its row. Requests that arrive together (until `quiet_period` passes
with no new one, or a file is full) are uploaded as one file per model and submitted as one
batch; a poller downloads a finished batch's output and error files and joins their rows on
`custom_id` (the output is in no particular order). The `custom_id` is a hash of the request
itself, so identical requests share one row and a restarted process knows its earlier rows.

Nothing is lost or paid twice, whatever is killed when:

- every row that came back is appended to `results.jsonl` in `state_dir`; a request answered
  there is never sent again, not even after a restart;
- `batches.jsonl` records each batch before its create call (an intent: its requests, its input
  file and a random token, also sent as the batch's metadata), after it (the batch id) and when
  the batch ends. A restart polls the batches that had not ended, and finds one whose create
  call was cut short by listing the batches and matching the token: only a batch the server
  does not know is given up, and its requests are submitted again.

A request that got no answer (a failed row, an expired or cancelled batch, a row missing from a
completed one) is a `TransientBackendError` for its caller, like a dropped connection for the
`openai` backend: the engine's one retry policy asks again, and only those requests go into a
later batch. A row that carries an HTTP error is read like a live reply with that status.

    settings.py   BatchSettings, BatchInfo, the file names, the errors only batches raise
    rows.py       a request's custom_id and input line; output and error rows read as replies
    state.py      batches.jsonl (the intent journal) and results.jsonl (the rows kept)
    ledger.py     the batches those files record, each change written before it counts
    client.py     the Files and Batches endpoints through the openai SDK, and their schemas
    callers.py    the futures of the callers waiting for a row
    poller.py     polling, finding a batch by its token, downloading and keeping the rows
    backend.py    BatchBackend: the queue, the input files, the create calls
"""

from evol.llm.batch.backend import BatchBackend
from evol.llm.batch.ledger import RecordedBatches, recorded_batches
from evol.llm.batch.rows import (
    OversizeRow,
    bounded_lines,
    is_final,
    plan_files,
    reply_outcome,
    request_line,
    row_outcome,
)
from evol.llm.batch.settings import (
    ENDPOINT,
    RESULTS_FILE,
    STATE_FILE,
    TOKEN_KEY,
    BatchFailed,
    BatchInfo,
    BatchPending,
    BatchSettings,
    BatchUnknown,
    describe_batches,
)

__all__ = [
    "ENDPOINT",
    "RESULTS_FILE",
    "STATE_FILE",
    "TOKEN_KEY",
    "BatchBackend",
    "BatchFailed",
    "BatchInfo",
    "BatchPending",
    "BatchSettings",
    "BatchUnknown",
    "OversizeRow",
    "RecordedBatches",
    "bounded_lines",
    "describe_batches",
    "is_final",
    "plan_files",
    "recorded_batches",
    "reply_outcome",
    "request_line",
    "row_outcome",
]
