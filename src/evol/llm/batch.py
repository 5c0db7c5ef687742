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
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import dataclasses
import hashlib
import os
import re
import secrets
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Literal, TypeVar
from urllib.parse import parse_qsl, quote, urlsplit

import aiohttp
import orjson
from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, StrictStr

from evol.errors import (
    BackendError,
    ContextLengthExceeded,
    Deferred,
    EvolError,
    RateLimited,
    RunDirError,
    StorageError,
    TransientBackendError,
    UsageError,
)
from evol.jsonl import (
    append_line,
    open_for_append,
    open_fresh,
    open_to_read,
    repair_torn_tail,
    scan,
    sync_file,
)
from evol.llm.openai_api import (
    DEFAULT_BASE_URL,
    ResponseFormats,
    SchemaError,
    auth_headers,
    body_message,
    json_or_text,
    parse_reply,
    served_model,
    status_error,
)
from evol.llm.protocol import (
    BackendSettings,
    Capabilities,
    Completion,
    GenerationParams,
    LLMRequest,
    Message,
)
from evol.llm.retry import with_retries
from evol.llm.transport import (
    DEFAULT_MAX_RESPONSE_BYTES,
    failure_of,
    proxy_for,
    redirected,
    url_login,
)
from evol.secrets import Secrets, check_api_key, display_url
from evol.version import __version__

ENDPOINT = "/v1/chat/completions"
STATE_FILE = "batches.jsonl"
RESULTS_FILE = "results.jsonl"
TOKEN_KEY = "evol_batch"  # the metadata key that carries a batch's token
_TERMINAL = frozenset({"completed", "expired", "cancelled", "failed"})
# A batch that failed on these is refused for now, not for good (OpenAI: "try again once the
# current jobs have finished").
_TRANSIENT_BATCH_ERRORS = frozenset({"token_limit_exceeded", "rate_limit_exceeded"})
_CHUNK = 1 << 16
# How much of each end of an oversize row is kept to find its custom_id.
_ROW_END = 4096
_CUSTOM_ID = re.compile(rb'"custom_id"\s*:\s*"([A-Za-z0-9_.:-]{1,200})"')
_MAX_PAGES = 10_000  # of 100 batches each, when a batch is looked for by its token
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


# -- requests and rows ----------------------------------------------------------------------


def request_line(
    messages: list[Message], model: str, params: GenerationParams, step: str | None = None
) -> tuple[str, bytes]:
    """The request's custom_id (a hash of its step, model, messages and options) and its
    input line. With the step in it, a step that sends what an earlier one sent (a round that
    retries its parent with the same operation) gets an answer of its own, as it would live."""
    body = {"model": model, "messages": messages, **params.request}
    keyed = {"step": step, "body": body} if step is not None else body
    digest = hashlib.sha256(orjson.dumps(keyed, option=orjson.OPT_SORT_KEYS)).hexdigest()
    custom_id = f"evol-{digest[:32]}"
    line = {"custom_id": custom_id, "method": "POST", "url": ENDPOINT, "body": body}
    return custom_id, orjson.dumps(line) + b"\n"


def plan_files(sizes: Iterable[int], *, max_requests: int, max_bytes: int) -> list[int]:
    """How many of the lines (their sizes in bytes, in order) go into each input file."""
    counts: list[int] = []
    count = size = 0
    for line in sizes:
        if count and (count == max_requests or size + line > max_bytes):
            counts.append(count)
            count = size = 0
        count += 1
        size += line
    if count:
        counts.append(count)
    return counts


@dataclass(frozen=True)
class RowReader:
    """What reading a row needs: where it came from (for messages), the secrets to redact,
    and the most bytes a row may hold (--max-response-mb, as for a live reply)."""

    where: str
    key_source: str
    secrets: Secrets
    max_row_bytes: int = DEFAULT_MAX_RESPONSE_BYTES


def reply_outcome(status: int, body: Any, model: str, reader: RowReader) -> Completion | Exception:
    """A row's response read like a live reply with that status: a Completion or the error."""
    if 200 <= status < 300:
        try:
            return parse_reply(orjson.dumps(body), reader.where, reader.secrets)
        except (TransientBackendError, BackendError) as error:
            return error
    if status < 400:
        return TransientBackendError(f"{reader.where} sent a row with status {status}")
    message = body_message(body, f"status {status}", reader.secrets)
    error = status_error(
        reader.where, reader.key_source, model, status, message, {}, reader.secrets
    )
    if isinstance(error, RateLimited):  # a batch's 429 says nothing about our concurrency
        return TransientBackendError(str(error))
    return error


def is_final(outcome: Completion | Exception) -> bool:
    """Whether an outcome is the request's own answer for good, to keep and never ask again."""
    return isinstance(outcome, Completion) or type(outcome) in (BackendError, ContextLengthExceeded)


class _Schema(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class _RowResponse(_Schema):
    status_code: StrictInt
    body: Any = None


class _RowError(_Schema):
    code: StrictStr | None = None
    message: StrictStr | None = None


class _Row(_Schema):
    custom_id: StrictStr
    response: _RowResponse | None = None
    error: _RowError | None = None


@dataclass(frozen=True)
class OversizeRow:
    """A line longer than a row may be, passed over unread: the custom_id found at its ends."""

    custom_id: str | None
    size: int


def bounded_lines(lines: BinaryIO, cap: int) -> Iterator[bytes | OversizeRow]:
    """Each line of `lines`, holding at most `cap` bytes of it in memory: a longer line is
    read past in pieces and comes as an `OversizeRow` (OpenAI writes a row's custom_id before
    its response; its last bytes are looked at too)."""
    while line := lines.readline(cap + 1):
        if len(line) <= cap or line.endswith(b"\n"):
            yield line
            continue
        head, tail, size = line[:_ROW_END], line[-_ROW_END:], len(line)
        while piece := lines.readline(_CHUNK):
            tail, size = (tail + piece)[-_ROW_END:], size + len(piece)
            if piece.endswith(b"\n"):
                break
        found = _CUSTOM_ID.search(head) or _CUSTOM_ID.search(tail)
        yield OversizeRow(found[1].decode() if found else None, size)


def row_outcome(
    raw: bytes | OversizeRow, model: str, reader: RowReader
) -> tuple[str, Completion | Exception]:
    """One line of an output or error file as (custom_id, outcome); ValueError if garbled.
    A row over the cap is the request's failure, asked again like a dropped reply."""
    if isinstance(raw, OversizeRow):
        if raw.custom_id is None:
            raise ValueError("a row over the cap, with no custom_id at its ends")
        return raw.custom_id, TransientBackendError(
            f"{reader.where} sent a row of {raw.size:,} bytes, over the "
            f"{reader.max_row_bytes:,}-byte cap (--max-response-mb)"
        )
    try:
        row = _Row.model_validate_json(raw)
    except SchemaError:
        raise ValueError("not a batch output row") from None
    if row.response is not None:
        return row.custom_id, reply_outcome(
            row.response.status_code, row.response.body, model, reader
        )
    error = row.error or _RowError()
    why = reader.secrets.cut(f"{error.code or 'error'}: {error.message or 'no message'}")
    return row.custom_id, TransientBackendError(f"{reader.where}: {why}")


# -- the files in state_dir -----------------------------------------------------------------


def _read_lines(path: Path, repair: bool = True) -> Iterator[tuple[int, int, int, Any]]:
    """(line number, offset, length, its JSON) of each whole line; a last line a crash left
    torn is skipped, and with `repair` cut off. Any other line that is not JSON is an error."""
    if not path.exists():
        return
    if repair:
        repair_torn_tail(path)

    def damaged(number: int, _error: ValueError) -> RunDirError:
        return RunDirError(
            f"{path}:{number}: a damaged line before the last one: restore the file, or remove "
            "the batch state (what it held is then paid again)"
        )

    with open_to_read(path) as lines:
        # A blank line is damage too: evol writes none. Once repaired, the file has no torn
        # tail left: a bad last line then is one that stood before it, and is refused.
        yield from scan(lines, orjson.loads, damaged, skip_blank=False, torn_last=not repair)


class _Entry(BaseModel):
    """One line of batches.jsonl."""

    model_config = ConfigDict(extra="ignore")

    event: Literal["intent", "created", "ended", "abandoned"]
    token: str
    model: str = ""
    input_file_id: str | None = None
    custom_ids: list[str] = Field(default_factory=list)
    at: float = 0.0
    batch_id: str | None = None
    status: str | None = None
    request_counts: dict[str, int] = Field(default_factory=dict)
    output_file_id: str | None = None
    error_file_id: str | None = None


class _Journal:
    """batches.jsonl: what was submitted, created and ended; a line is synced before it counts."""

    def __init__(self, path: Path):
        self.path = path
        self._file: BinaryIO | None = None

    def read(self, *, repair: bool = True) -> list[_Entry]:
        entries = []
        for number, _offset, _length, data in _read_lines(self.path, repair):
            try:
                entries.append(_Entry.model_validate(data))
            except SchemaError:
                raise RunDirError(f"{self.path}:{number}: not a batch state line") from None
        return entries

    def append(self, **entry: Any) -> None:
        if self._file is None:
            self._file = open_for_append(self.path)
        append_line(self._file, entry, sync=True)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class _Results:
    """results.jsonl: each answered row once, {custom_id, status_code, body}, found by offset."""

    def __init__(self, path: Path):
        self.path = path
        # custom_id -> offset << 32 | length: about 170 bytes of memory an answered request.
        self.index: dict[str, int] = {}
        for _number, offset, length, data in _read_lines(path):
            custom_id = data.get("custom_id") if isinstance(data, dict) else None
            if isinstance(custom_id, str):
                self.index.setdefault(custom_id, offset << 32 | length)
        self._reader: BinaryIO | None = None

    def get(self, custom_id: str) -> tuple[int, Any] | None:
        """The stored (status_code, body) of a request, or None if it has none."""
        place = self.index.get(custom_id)
        if place is None:
            return None
        if self._reader is None:
            self._reader = open_to_read(self.path)
        self._reader.seek(place >> 32)
        row = orjson.loads(self._reader.read(place & 0xFFFFFFFF))
        return row["status_code"], row["body"]

    def ingest(
        self, paths: list[Path], expected: frozenset[str], model: str, reader: RowReader
    ) -> dict[str, int | Exception]:
        """Read downloaded output/error files (run in a thread); append the final rows here.

        Returns, for each expected custom_id that has a row, its place in this file or the
        error that says why it has no answer. Rows of other requests and garbled lines are
        ignored (a garbled row's request gets no answer and is asked again). The downloaded
        files are removed afterwards.
        """
        try:
            return self._ingest(paths, expected, model, reader)
        except OSError as error:
            raise StorageError(self.path, error) from None
        finally:
            for path in paths:
                path.unlink(missing_ok=True)

    def _ingest(
        self, paths: list[Path], expected: frozenset[str], model: str, reader: RowReader
    ) -> dict[str, int | Exception]:
        outcomes: dict[str, int | Exception] = {}
        with open_for_append(self.path) as out:
            for path in paths:
                with path.open("rb") as lines:
                    for raw in bounded_lines(lines, reader.max_row_bytes):
                        try:
                            custom_id, outcome = row_outcome(raw, model, reader)
                        except ValueError:
                            continue
                        if custom_id not in expected or isinstance(outcomes.get(custom_id), int):
                            continue
                        if not is_final(outcome):
                            outcomes[custom_id] = outcome  # type: ignore[assignment]
                            continue
                        response = orjson.loads(raw)["response"]
                        stored = _stored_row(custom_id, response, reader.secrets)
                        start = append_line(out, stored)
                        outcomes[custom_id] = start << 32 | (len(stored) + 1)
            sync_file(out)  # the rows are paid for: kept through a power cut
        return outcomes

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None


def _stored_row(custom_id: str, response: dict[str, Any], secrets: Secrets) -> bytes:
    """A final row as results.jsonl keeps it. An error row's body is a server's words, which
    may echo a secret in pieces (split by an escaped newline): it keeps only what is read from
    it again, its message, redacted as it is shown."""
    status, body = response["status_code"], response["body"]
    if status >= 400:
        body = {"error": {"message": body_message(body, f"status {status}", secrets)}}
    return orjson.dumps({"custom_id": custom_id, "status_code": status, "body": body})


# -- the HTTP API ---------------------------------------------------------------------------


class _FileObject(_Schema):
    id: StrictStr


class _Counts(_Schema):
    total: StrictInt = 0
    completed: StrictInt = 0
    failed: StrictInt = 0


class _BatchError(_Schema):
    code: StrictStr | None = None
    message: StrictStr | None = None
    line: StrictInt | None = None


class _Errors(_Schema):
    data: list[_BatchError] = Field(default_factory=list)


class _BatchObject(_Schema):
    id: StrictStr
    status: StrictStr
    input_file_id: StrictStr | None = None
    output_file_id: StrictStr | None = None
    error_file_id: StrictStr | None = None
    request_counts: _Counts | None = None
    metadata: dict[str, Any] | None = None
    errors: _Errors | None = None
    created_at: StrictInt | StrictFloat | None = None


class _BatchPage(_Schema):
    data: list[_BatchObject]
    has_more: bool = False
    last_id: StrictStr | None = None


class _Gone(Exception):
    """A 404 for a batch or a file that the server no longer has."""


class _Refused(Exception):
    """The create call itself was refused (4xx): the server made no batch."""

    def __init__(self, error: EvolError):
        super().__init__(str(error))
        self.error = error


class BatchApi:
    """The Files and Batches endpoints over aiohttp: one deadline a request, capped bodies,
    no redirects followed, proxies as the `openai` backend takes them."""

    def __init__(self, settings: BackendSettings, batch: BatchSettings):
        base_url = (settings.base_urls[0] if settings.base_urls else DEFAULT_BASE_URL).rstrip("/")
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UsageError(f"--base-url {display_url(base_url)}: not an http:// or https:// URL")
        self.where = display_url(base_url)
        self.key = settings.api_key.get_secret_value() if settings.api_key else None
        self.secrets = settings.secrets()
        self.key_source = settings.api_key_source
        base_url, login = url_login(base_url, self.key, self.key_source)
        parts = urlsplit(base_url)
        self.base = parts._replace(query="", fragment="").geturl().rstrip("/")
        self.query = dict(parse_qsl(parts.query))  # Azure's ?api-version=... on every request
        self.headers = {"User-Agent": f"evol/{__version__}", "Accept": "application/json"}
        self.headers |= login
        if self.key is not None:
            check_api_key(self.key, self.key_source)
            self.headers |= auth_headers(base_url, self.key)
        self.options: dict[str, Any] = {}
        self.proxy = proxy_for(base_url)
        if self.proxy:
            self.options |= {"proxy": self.proxy.url, "proxy_auth": self.proxy.auth}
        self.timeout, self.transfer_timeout = settings.timeout, batch.transfer_timeout
        self.max_json, self.max_download = settings.max_response_bytes, batch.max_output_bytes
        self.reader = RowReader(self.where, self.key_source, self.secrets, self.max_json)
        self.answered = False
        self._session: aiohttp.ClientSession | None = None

    async def upload(self, path: Path) -> str:
        """POST /files with purpose `batch`, the file streamed from disk; returns its id."""
        with path.open("rb") as content:
            form = aiohttp.FormData()
            form.add_field("purpose", "batch")
            form.add_field("file", content, filename=path.name, content_type="application/jsonl")
            raw = await self._json("POST", "/files", data=form, timeout=self.transfer_timeout)
        return self._parse(_FileObject, raw, "file object").id

    async def create(self, input_file_id: str, token: str, window: str) -> _BatchObject:
        payload = {
            "input_file_id": input_file_id,
            "endpoint": ENDPOINT,
            "completion_window": window,
            "metadata": {TOKEN_KEY: token},
        }
        raw = await self._json("POST", "/batches", data=orjson.dumps(payload))
        return self._parse(_BatchObject, raw, "batch object")

    async def retrieve(self, batch_id: str) -> _BatchObject:
        raw = await self._json("GET", f"/batches/{quote(batch_id, safe='')}", gone_ok=True)
        return self._parse(_BatchObject, raw, "batch object")

    async def find(self, token: str) -> _BatchObject | None:
        """The batch whose metadata carries `token`, looked for through every page of the list."""
        after: str | None = None
        seen: set[str] = set()
        for _page in range(_MAX_PAGES):
            query = {"limit": "100"} | ({"after": after} if after else {})
            page = self._parse(
                _BatchPage, await self._json("GET", "/batches", query=query), "batch list"
            )
            for batch in page.data:
                if (batch.metadata or {}).get(TOKEN_KEY) == token:
                    return batch
            after = page.last_id or (page.data[-1].id if page.data else None)
            if not page.has_more or after is None or after in seen:
                return None
            seen.add(after)
        # Not "absent": giving the batch up on a list that never ends could pay for it twice.
        raise TransientBackendError(f"{self.where} lists batches without end")

    async def download(self, file_id: str, dest: Path) -> None:
        """GET /files/{id}/content streamed to `dest`, at most `max_output_bytes`."""
        part = dest.with_name(dest.name + ".part")
        path = f"/files/{quote(file_id, safe='')}/content"
        try:
            async with self._request(
                "GET", path, timeout=self.transfer_timeout, gone_ok=True
            ) as reply:
                if (reply.content_length or 0) > self.max_download:
                    raise self._too_big(reply.content_length or 0)
                size = 0
                with open_fresh(part) as out:
                    async for chunk in reply.content.iter_chunked(_CHUNK):
                        size += len(chunk)
                        if size > self.max_download:
                            raise self._too_big(size)
                        out.write(chunk)
            os.replace(part, dest)
        finally:
            part.unlink(missing_ok=True)

    async def models(self) -> bytes:
        """The /models reply, as it came (`served_model` reads it)."""
        return await self._json("GET", "/models")

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _json(
        self,
        method: str,
        path: str,
        *,
        data: Any = None,
        query: dict[str, str] | None = None,
        timeout: float | None = None,
        gone_ok: bool = False,
    ) -> bytes:
        headers = {"Content-Type": "application/json"} if isinstance(data, bytes) else None
        async with self._request(
            method, path, data=data, query=query, headers=headers, timeout=timeout, gone_ok=gone_ok
        ) as reply:
            return await self._body(reply, self.max_json)

    @contextlib.asynccontextmanager
    async def _request(
        self,
        method: str,
        path: str,
        *,
        data: Any = None,
        query: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        timeout: float | None = None,
        gone_ok: bool = False,
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """One request with one deadline around all of it (the caller's reading included)."""
        session = self._session or self._open()
        deadline = timeout or self.timeout
        try:
            async with (
                asyncio.timeout(deadline),
                session.request(
                    method,
                    self.base + path,
                    data=data,
                    params=self.query | (query or {}),
                    headers=headers,
                    allow_redirects=False,
                    **self.options,
                ) as reply,
            ):
                self.answered = True
                if not 200 <= reply.status < 300:
                    raw = await self._body(reply, 1 << 20)
                    if reply.status == 404 and gone_ok:
                        raise _Gone(path)
                    raise self._status_error(method, path, reply.status, raw, reply.headers)
                yield reply
        except (TimeoutError, aiohttp.ClientError) as error:
            doing = f" ({method} {path})"
            failure = failure_of(
                error,
                self.where,
                deadline,
                answered=self.answered,
                doing=doing,
                secrets=self.secrets,
                proxy=self.proxy,
            )
            raise failure from None

    def _status_error(
        self, method: str, path: str, status: int, raw: bytes, headers: Any
    ) -> Exception:
        if 300 <= status < 400:
            return redirected(self.where, headers.get("Location"), status, self.secrets)
        message = body_message(json_or_text(raw), "", self.secrets)
        if status == 404:
            return UsageError(
                f"{self.where} has no Batch API, or not all of it ({method} "
                f"/{path.split('/')[1]} answered 404{': ' + message if message else ''}): "
                "the batch backend needs /v1/files and /v1/batches (create, retrieve, list)"
            )
        return status_error(self.where, self.key_source, "", status, message, headers, self.secrets)

    async def _body(self, reply: aiohttp.ClientResponse, cap: int) -> bytes:
        if (reply.content_length or 0) > cap:
            raise self._too_big(reply.content_length or 0, cap)
        parts, size = [], 0
        async for chunk in reply.content.iter_chunked(_CHUNK):
            size += len(chunk)
            if size > cap:
                raise self._too_big(size, cap)
            parts.append(chunk)
        return b"".join(parts)

    def _too_big(self, size: int, cap: int | None = None) -> TransientBackendError:
        cap = cap or self.max_download
        return TransientBackendError(
            f"{self.where} sent a body of over {cap:,} bytes ({size:,} so far); "
            "raise the batch backend's max_output_bytes if an output file is that large"
        )

    def _parse(self, schema: type[T], raw: bytes, what: str) -> T:
        try:
            return schema.model_validate_json(raw)  # type: ignore[attr-defined]
        except SchemaError:
            raise TransientBackendError(f"{self.where} sent a malformed {what}") from None

    def _open(self) -> aiohttp.ClientSession:
        # Made inside the running loop; the deadline is ours (asyncio.timeout) around it all.
        self._session = aiohttp.ClientSession(
            headers=self.headers,
            cookie_jar=aiohttp.DummyCookieJar(),
            timeout=aiohttp.ClientTimeout(
                total=None, connect=None, sock_connect=None, sock_read=None
            ),
            trust_env=False,
            max_line_size=16 * 1024,
            max_field_size=16 * 1024,
        )
        return self._session


# -- the backend ----------------------------------------------------------------------------


@dataclass
class _Batch:
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

    def update(self, batch: _BatchObject) -> None:
        self.status = batch.status
        if batch.request_counts is not None:
            self.request_counts = batch.request_counts.model_dump()
        self.output_file_id, self.error_file_id = batch.output_file_id, batch.error_file_id


@dataclass
class _Waiter:
    """The callers of one request: one future, and the line to submit again if need be."""

    future: asyncio.Future[Completion]
    model: str
    line: bytes


class BatchBackend:
    """A `ChatBackend` whose requests travel in batches; see the module's docstring."""

    capabilities = Capabilities(needs_key=True, batchable=True)

    def __init__(self, settings: BackendSettings, batch: BatchSettings):
        self.settings = batch
        self.api = BatchApi(settings, batch)
        self.where = self.api.where
        self._tmp = batch.state_dir / "tmp"
        # Read on first use (`_load`), when the run holds its directory's lock.
        self._journal_file: _Journal | None = None
        self._results_file: _Results | None = None
        self._batches: dict[str, _Batch] = {}
        self._submissions: Counter[str] = Counter()  # custom_id -> batches it was submitted in
        self._in_batch: dict[str, _Batch] = {}  # custom_id -> the open batch that holds it
        self._waiting: dict[str, _Waiter] = {}
        self._queue: dict[str, dict[str, bytes]] = {}  # model -> custom_id -> line
        self._queued_bytes: dict[str, int] = {}
        self._arrival = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._attached = False  # the batches of earlier processes have been looked at
        self._broken: BaseException | None = None
        self._ingesting: asyncio.Future[Any] | None = None
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
        self._load()
        if (stored := self._results.get(custom_id)) is not None:
            return _returned(reply_outcome(*stored, model, self.api.reader))
        if self._broken is not None:
            raise copy.copy(self._broken)
        batch = self._in_batch.get(custom_id)
        if batch is not None and self.settings.no_wait and self._attached:
            raise BatchPending(batch.id, batch.status)
        waiter = self._waiting.get(custom_id)
        if waiter is None and batch is None:
            self._check_submissions(custom_id)
        if waiter is None:
            if len(line) > self.settings.max_bytes:
                raise BackendError(
                    f"a request of {len(line):,} bytes does not fit a batch input file "
                    f"({self.settings.max_bytes:,} bytes at most)"
                )
            future = asyncio.get_running_loop().create_future()
            future.add_done_callback(_retrieve)
            waiter = self._waiting[custom_id] = _Waiter(future, model, line)
            if batch is None:
                self._enqueue(custom_id, waiter)
        self._start()
        return await asyncio.shield(waiter.future)

    async def default_model(self) -> str:
        """The server's model when it serves exactly one; else ask for --model."""
        return served_model(await self.api.models(), self.where, self.api.secrets)

    def batches(self) -> list[BatchInfo]:
        """Every batch of this state directory that reached the server, oldest first."""
        self._load()
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
            for batch in self._batches.values()
            if batch.status != "abandoned"
        ]

    def pending(self) -> int:
        """Requests waiting in batches that have not ended."""
        self._load()
        return len(self._in_batch)

    async def aclose(self) -> None:
        """Stop submitting and polling; what is pending stays recorded for the next process."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._ingesting is not None:  # a thread appending results: let it finish its file
            await asyncio.wait({self._ingesting})
        for waiter in self._waiting.values():
            waiter.future.cancel()
        self._waiting.clear()
        await self.api.close()
        if self._journal_file is not None and self._results_file is not None:
            self._journal_file.close()
            self._results_file.close()

    # -- state ----------------------------------------------------------------------------

    @property
    def _journal(self) -> _Journal:
        assert self._journal_file is not None, "_load() first"
        return self._journal_file

    @property
    def _results(self) -> _Results:
        assert self._results_file is not None, "_load() first"
        return self._results_file

    def _load(self) -> None:
        """Once: rebuild the batches of earlier processes from batches.jsonl.

        Not in __init__: the backend is made before the run directory is locked (and, with
        --overwrite, emptied), and reading these files cuts a torn last line.
        """
        if self._journal_file is not None:
            return
        state = self.settings.state_dir
        for path in (state, state / STATE_FILE, state / RESULTS_FILE, self._tmp):
            if path.is_symlink():  # its files are cut, appended to and deleted: never elsewhere
                raise RunDirError(f"{path}: is a symbolic link; remove it (evol made none)")
        self._results_file = _Results(self.settings.state_dir / RESULTS_FILE)
        self._journal_file = _Journal(self.settings.state_dir / STATE_FILE)
        entries = self._journal.read()
        self._batches = _replay(entries)
        abandoned = {entry.token for entry in entries if entry.event == "abandoned"}
        self._submissions = Counter(
            custom_id
            for entry in entries
            if entry.event == "intent" and entry.token not in abandoned
            for custom_id in entry.custom_ids
        )
        for batch in self._batches.values():
            if not batch.ended:
                self._hold(batch)

    def _check_submissions(self, custom_id: str) -> None:
        """A request that batches never answered after `max_retries` + 1 submissions, in this
        process and earlier ones, is not submitted again: each process starts the engine's
        retries afresh, so without this a --batch-no-wait loop would pay for it forever."""
        submitted = self._submissions[custom_id]
        if submitted > self.settings.max_retries:
            raise TransientBackendError(
                f"{self.where}: this request got no answer in the {submitted} batches it was "
                "submitted in (listed in batch/batches.jsonl); raise --max-retries to submit it "
                "again"
            )

    def _hold(self, batch: _Batch) -> None:
        """Mark the batch's unanswered requests as waiting in it."""
        self._batches[batch.token] = batch
        for custom_id in batch.custom_ids:
            if custom_id not in self._results.index:
                self._in_batch[custom_id] = batch

    # -- submitting -----------------------------------------------------------------------

    def _enqueue(self, custom_id: str, waiter: _Waiter) -> None:
        self._queue.setdefault(waiter.model, {})[custom_id] = waiter.line
        self._queued_bytes[waiter.model] = self._queued_bytes.get(waiter.model, 0) + len(
            waiter.line
        )
        self._arrival.set()

    def _start(self) -> None:
        """Start submitting and polling; the state directory is made only now, when needed."""
        if self._tasks:
            return
        try:
            self._tmp.mkdir(parents=True, exist_ok=True)
            for leftover in self._tmp.iterdir():  # files a killed process was writing
                leftover.unlink()
        except OSError as error:
            raise StorageError(self._tmp, error) from None
        for work in (self._submit_loop(), self._poll_loop()):
            task = asyncio.get_running_loop().create_task(work)
            task.add_done_callback(self._task_ended)
            self._tasks.append(task)

    def _task_ended(self, task: asyncio.Task[None]) -> None:
        """A background task that crashed fails every caller instead of leaving them waiting."""
        if task.cancelled() or task.exception() is None:
            return
        self._broken = task.exception()
        for waiter in self._waiting.values():
            _settle(waiter.future, copy.copy(self._broken))
        self._waiting.clear()

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
        path = self._tmp / f"input-{token}.jsonl"
        try:
            with open_fresh(path) as out:
                out.writelines(lines)
            file_id = await self._retrying(lambda: self.api.upload(path))
        except (TransientBackendError, EvolError, OSError) as error:
            return self._fail(custom_ids, _submission_error(error, "upload a batch input file"))
        finally:
            path.unlink(missing_ok=True)
        # The intent is on disk before the create call: a crash after it cannot lose the batch.
        self._journal.append(
            event="intent",
            token=token,
            model=model,
            input_file_id=file_id,
            custom_ids=custom_ids,
            at=time.time(),
        )
        self._submissions.update(custom_ids)
        batch = _Batch(token, model, custom_ids, file_id, requests=len(custom_ids), busy=True)
        self._hold(batch)
        try:
            created = await self._create(batch)
        except _Refused as refused:  # the server answered no: there is no such batch
            self._abandon(batch, requeue=False)
            return self._fail(custom_ids, _submission_error(refused.error, "create a batch"))
        except (TransientBackendError, EvolError) as error:
            # Created or not, we cannot tell: the poller looks for it before anything else.
            batch.note = str(error)
            return self._fail(batch.custom_ids, error)
        finally:
            batch.busy = False
        self._created(batch, created)
        if self.settings.no_wait:
            self._pend(batch)

    async def _create(self, batch: _Batch) -> _BatchObject:
        """Create the batch once: after a failed attempt, look for it before creating again."""
        sent = False

        async def attempt() -> _BatchObject:
            nonlocal sent
            if sent and (found := await self.api.find(batch.token)) is not None:
                return found
            sent = True
            assert batch.input_file_id is not None
            try:
                return await self.api.create(
                    batch.input_file_id, batch.token, self.settings.completion_window
                )
            except EvolError as error:
                raise _Refused(error) from None

        return await self._retrying(attempt)

    def _created(self, batch: _Batch, created: _BatchObject) -> None:
        self._journal.append(event="created", token=batch.token, batch_id=created.id)
        batch.id, batch.note = created.id, None
        batch.update(created)

    def _abandon(self, batch: _Batch, *, requeue: bool) -> None:
        """Give up a batch the server never created; its waiting requests go in a new one."""
        self._journal.append(event="abandoned", token=batch.token)
        custom_ids, batch.custom_ids = batch.custom_ids, []
        self._submissions.subtract(custom_ids)  # never created: never paid
        batch.ended, batch.status = True, "abandoned"
        for custom_id in custom_ids:
            if self._in_batch.get(custom_id) is batch:
                del self._in_batch[custom_id]
                if requeue and (waiter := self._waiting.get(custom_id)) is not None:
                    self._enqueue(custom_id, waiter)

    # -- polling --------------------------------------------------------------------------

    async def _poll_loop(self) -> None:
        """Look at the open batches now (those of earlier processes too), then every
        `poll_interval`; with `no_wait`, only now."""
        await self._poll_open()
        self._attached = True
        if self.settings.no_wait:
            for batch in self._open():
                self._pend(batch)
            return
        while True:
            await asyncio.sleep(self.settings.poll_interval)
            await self._poll_open()

    def _open(self) -> list[_Batch]:
        return [batch for batch in self._batches.values() if not batch.ended and not batch.busy]

    async def _poll_open(self) -> None:
        for batch in self._open():
            try:
                if batch.id is None:
                    await self._reattach(batch)
                else:
                    await self._poll(batch)
            except TransientBackendError as error:
                batch.note = str(error)
                self._fail(batch.custom_ids, error)  # their callers retry; the batch stays open
            except EvolError as error:  # the key, the URL: nothing here will get better
                self._fail(batch.custom_ids, error)

    async def _reattach(self, batch: _Batch) -> None:
        """An intent with no batch id: the process stopped during the create call."""
        found = await self._retrying(lambda: self.api.find(batch.token))
        if found is None:
            return self._abandon(batch, requeue=True)
        self._created(batch, found)
        if found.status in _TERMINAL:
            await self._collect(batch, found)

    async def _poll(self, batch: _Batch) -> None:
        assert batch.id is not None
        try:
            current = await self._retrying(lambda: self.api.retrieve(batch.id or ""))
        except _Gone:
            raise self._unknown(batch, "the batch") from None
        batch.update(current)
        batch.note = None
        if current.status in _TERMINAL:
            await self._collect(batch, current)

    async def _collect(self, batch: _Batch, current: _BatchObject) -> None:
        """Fetch a finished batch's rows, keep the answers, and settle every request in it."""
        if current.status == "failed":
            return await self._end(batch, {}, self._refusal(batch, current), current.status)
        paths: list[Path] = []
        try:
            for file_id in (current.output_file_id, current.error_file_id):
                if file_id is not None:
                    paths.append(await self._download(batch, file_id))
        except BaseException:
            for path in paths:
                path.unlink(missing_ok=True)
            raise
        expected = frozenset(c for c in batch.custom_ids if c not in self._results.index)
        # In a thread: an output file may hold 50,000 rows. Shielded, so that aclose() can
        # wait for it to finish appending rather than leave a torn line behind.
        self._ingesting = asyncio.get_running_loop().run_in_executor(
            None, self._results.ingest, paths, expected, batch.model, self._reader(batch)
        )
        outcomes = await asyncio.shield(self._ingesting)
        self._ingesting = None
        why = f"{self._reader(batch).where} {current.status} without a row for this request"
        await self._end(batch, outcomes, TransientBackendError(why), current.status)

    async def _download(self, batch: _Batch, file_id: str) -> Path:
        dest = self._tmp / f"download-{secrets.token_hex(8)}.jsonl"
        try:
            await self._retrying(lambda: self.api.download(file_id, dest))
        except _Gone:
            raise self._unknown(batch, f"its file {file_id}") from None
        return dest

    async def _end(
        self,
        batch: _Batch,
        outcomes: dict[str, int | Exception],
        missing: Exception,
        status: str,
    ) -> None:
        """Record the batch's end, then answer each of its waiting requests."""
        self._journal.append(
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
        for custom_id in custom_ids:
            if self._in_batch.get(custom_id) is batch:
                del self._in_batch[custom_id]
            outcome = outcomes.get(custom_id, self._results.index.get(custom_id, missing))
            if isinstance(outcome, int):
                self._results.index.setdefault(custom_id, outcome)
            waiter = self._waiting.pop(custom_id, None)
            if waiter is None:
                continue
            if isinstance(outcome, int):
                stored = self._results.get(custom_id)
                assert stored is not None
                outcome = reply_outcome(*stored, waiter.model, self.api.reader)
            _settle(
                waiter.future, copy.copy(outcome) if isinstance(outcome, Exception) else outcome
            )

    def _refusal(self, batch: _Batch, current: _BatchObject) -> Exception:
        """The error a `failed` batch means for its requests."""
        errors = current.errors.data if current.errors else []
        secrets = self.api.secrets
        reasons = "; ".join(
            secrets.cut(f"{error.code or 'error'}: {error.message or 'no message'}")
            + (f" (line {error.line})" if error.line is not None else "")
            for error in errors[:3]
        )
        reasons = reasons or "no reason given"
        where = self._reader(batch).where
        if any(error.code in _TRANSIENT_BATCH_ERRORS for error in errors):
            return TransientBackendError(f"{where} failed: {reasons}")
        return BatchFailed(f"{where} failed validation: {reasons}")

    def _pend(self, batch: _Batch) -> None:
        """With `no_wait`: tell the batch's callers it is pending instead of waiting for it."""
        for custom_id in batch.custom_ids:
            if (waiter := self._waiting.pop(custom_id, None)) is not None:
                _settle(waiter.future, BatchPending(batch.id, batch.status))

    def _fail(self, custom_ids: list[str], error: Exception) -> None:
        """Fail the waiting callers of these requests with `error`."""
        if isinstance(error, RateLimited):  # the Batch API's limits are not the engine's
            error = TransientBackendError(str(error), error.retry_after)
        for custom_id in custom_ids:
            if (waiter := self._waiting.pop(custom_id, None)) is not None:
                _settle(waiter.future, copy.copy(error))

    def _reader(self, batch: _Batch) -> RowReader:
        return dataclasses.replace(self.api.reader, where=f"{self.where} batch {batch.id}")

    def _unknown(self, batch: _Batch, what: str) -> BatchUnknown:
        """A 404 for a batch this run made, or for a file it names: the batch stays open, since
        its rows may be running and paid for; nothing is submitted again."""
        return BatchUnknown(
            f"{self.where} does not know {what} (batch {batch.id}, made by this run): check "
            "--base-url and the API key (a batch belongs to the project whose key made it); "
            "its requests are not submitted again"
        )

    def _retrying(self, call: Callable[[], Awaitable[T]]) -> Awaitable[T]:
        return with_retries(
            call, max_retries=self.settings.max_retries, max_wait=self.settings.retry_max_wait
        )


def _replay(entries: list[_Entry]) -> dict[str, _Batch]:
    """The batches that batches.jsonl records, by token, each as its last line left it."""
    batches: dict[str, _Batch] = {}
    for entry in entries:
        if entry.event == "intent":
            batches[entry.token] = _Batch(
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
    entries = _Journal(state_dir / STATE_FILE).read(repair=False)
    return {b.id or b.token: b.ended for b in _replay(entries).values() if b.status != "abandoned"}


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


def _settle(future: asyncio.Future[Completion], outcome: Completion | Exception) -> None:
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
