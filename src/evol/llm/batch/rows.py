"""Requests as batch input lines, and the rows of output and error files read like live
replies: a request's `custom_id` and line, how lines fill input files, and each row's outcome
(a Completion or the error its status means), never holding more of a row than the cap."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

import orjson
from pydantic import BaseModel, ConfigDict, StrictInt, StrictStr

from evol.errors import BackendError, ContextLengthExceeded, RateLimited, TransientBackendError
from evol.llm.batch.settings import ENDPOINT
from evol.llm.openai_api import (
    ReplyReader,
    SchemaError,
    body_message,
    parse_reply,
    status_error,
)
from evol.llm.protocol import Completion, GenerationParams, Message

_CHUNK = 1 << 16
# How much of each end of an oversize row is kept to find its custom_id.
_ROW_END = 4096
_CUSTOM_ID = re.compile(rb'"custom_id"\s*:\s*"([A-Za-z0-9_.:-]{1,200})"')


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


def reply_outcome(
    status: int, body: Any, model: str, reader: ReplyReader
) -> Completion | Exception:
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


class Schema(BaseModel):
    """What the Batch API sends, read leniently: unknown fields are ignored."""

    model_config = ConfigDict(extra="ignore", frozen=True)


class _RowResponse(Schema):
    status_code: StrictInt
    body: Any = None


class _RowError(Schema):
    code: StrictStr | None = None
    message: StrictStr | None = None


class _Row(Schema):
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
    raw: bytes | OversizeRow, model: str, reader: ReplyReader
) -> tuple[str, Completion | Exception]:
    """One line of an output or error file as (custom_id, outcome); ValueError if garbled.
    A row over the cap is the request's failure, asked again like a dropped reply."""
    if isinstance(raw, OversizeRow):
        if raw.custom_id is None:
            raise ValueError("a row over the cap, with no custom_id at its ends")
        return raw.custom_id, TransientBackendError(
            f"{reader.where} sent a row of {raw.size:,} bytes, over the "
            f"{reader.max_reply_bytes:,}-byte cap (--max-response-mb)"
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
