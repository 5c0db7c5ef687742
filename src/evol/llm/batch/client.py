"""The Files and Batches endpoints through the openai SDK, and what evol reads of their replies.

Each call goes through `evol.llm.sdk_client` (no SDK retries, one deadline a call, a capped
body, no redirects, the proxy, login and key handled as for the other HTTP backends). Each reply
is read raw and checked against the schemas below, evol's own: the SDK builds its models
without validating them, and a malformed batch object must be a retry, not a wrong decision.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar
from urllib.parse import quote

import openai
from pydantic import AfterValidator, BaseModel, Field, StrictFloat, StrictInt, StrictStr

from evol.errors import TransientBackendError, UsageError
from evol.jsonl import open_fresh, open_to_read
from evol.llm.batch.rows import Schema
from evol.llm.batch.settings import ENDPOINT, TOKEN_KEY, BatchSettings
from evol.llm.openai_api import ReplyReader, SchemaError, body_message
from evol.llm.protocol import BackendSettings
from evol.llm.sdk_client import SdkEndpoint

_CHUNK = 1 << 16
_MAX_PAGES = 10_000  # of 100 batches each, when a batch is looked for by its token
T = TypeVar("T")
S = TypeVar("S", bound=BaseModel)


def _path_segment(value: str) -> str:
    """An id the SDK will put in a URL path: it refuses an empty one and a dot-segment."""
    if value in ("", ".", ".."):
        raise ValueError("not an id")
    return value


Id = Annotated[StrictStr, AfterValidator(_path_segment)]


class FileObject(Schema):
    """The Files API's answer to an upload: the file's id."""

    id: Id


class _Counts(Schema):
    total: StrictInt = 0
    completed: StrictInt = 0
    failed: StrictInt = 0


class _BatchError(Schema):
    code: StrictStr | None = None
    message: StrictStr | None = None
    line: StrictInt | None = None


class _Errors(Schema):
    data: list[_BatchError] = Field(default_factory=list)


class BatchObject(Schema):
    """A batch as the Batches API shows it: its state, its files and its counts."""

    id: Id
    status: StrictStr
    input_file_id: StrictStr | None = None
    output_file_id: Id | None = None
    error_file_id: Id | None = None
    request_counts: _Counts | None = None
    metadata: dict[str, Any] | None = None
    errors: _Errors | None = None
    created_at: StrictInt | StrictFloat | None = None


class BatchPage(Schema):
    """One page of the Batches API's list, newest first."""

    data: list[BatchObject]
    has_more: bool = False
    last_id: StrictStr | None = None


class Gone(Exception):
    """A 404 for a batch or a file that the server no longer has."""


class BatchClient:
    """The Files and Batches endpoints through the openai SDK, with the limits of
    `evol.llm.sdk_client`; each reply is read raw and checked against our own schemas.

    Two SDK clients: one for the JSON replies (capped at --max-response-mb), one for the
    downloads of output and error files (capped at `max_output_bytes`)."""

    def __init__(self, settings: BackendSettings, batch: BatchSettings):
        self.endpoint = SdkEndpoint(settings)
        self.where, self.secrets = self.endpoint.where, self.endpoint.secrets
        self.transfer_timeout, self.max_download = batch.transfer_timeout, batch.max_output_bytes
        self.reader = ReplyReader(
            self.where, settings.api_key_source, self.secrets, settings.max_response_bytes
        )
        self._headers = self.endpoint.request_headers
        self._api = self.endpoint.client(timeout=settings.timeout)
        self._files = self.endpoint.client(
            timeout=batch.transfer_timeout, cap=batch.max_output_bytes, too_big=self._too_big
        )

    async def upload(self, path: Path) -> str:
        """POST /files with purpose `batch`, the file streamed from disk; returns its id."""
        with open_to_read(path, follow_links=False) as content:
            raw = await self._json(
                "POST",
                "/files",
                lambda: self._api.files.with_raw_response.create(
                    file=(path.name, content, "application/jsonl"),
                    purpose="batch",
                    timeout=self.transfer_timeout,
                    extra_headers=self._headers,
                ),
                deadline=self.transfer_timeout,
            )
        return self._parse(FileObject, raw, "file object").id

    async def create(self, input_file_id: str, token: str, window: str) -> BatchObject:
        raw = await self._json(
            "POST",
            "/batches",
            lambda: self._api.batches.with_raw_response.create(
                input_file_id=input_file_id,
                endpoint=ENDPOINT,  # type: ignore[arg-type]
                completion_window=window,  # type: ignore[arg-type]
                metadata={TOKEN_KEY: token},
                extra_headers=self._headers,
            ),
        )
        return self._parse(BatchObject, raw, "batch object")

    async def retrieve(self, batch_id: str) -> BatchObject:
        raw = await self._json(
            "GET",
            f"/batches/{quote(batch_id, safe='')}",
            lambda: self._api.batches.with_raw_response.retrieve(
                batch_id, extra_headers=self._headers
            ),
            gone_ok=True,
        )
        return self._parse(BatchObject, raw, "batch object")

    async def find(self, token: str) -> BatchObject | None:
        """The batch whose metadata carries `token`, looked for through every page of the list.

        Paged here, not by the SDK's `async for`: its pages are not checked against a schema,
        and it follows a list that never ends for as long as the server sends one."""
        after: str | None = None
        seen: set[str] = set()
        for _page in range(_MAX_PAGES):
            cursor = after if after is not None else openai.omit
            raw = await self._json(
                "GET",
                "/batches",
                lambda cursor=cursor: self._api.batches.with_raw_response.list(
                    limit=100, after=cursor, extra_headers=self._headers
                ),
            )
            page = self._parse(BatchPage, raw, "batch list")
            for batch in page.data:
                if (batch.metadata or {}).get(TOKEN_KEY) == token:
                    return batch
            if not page.has_more:
                return None
            after = page.last_id or (page.data[-1].id if page.data else None)
            if after is None or after in seen:
                # More pages, but no way to them (no cursor, or one seen before): a list that
                # never ends, not an absent batch.
                break
            seen.add(after)
        # Not "absent": giving the batch up on a list that never ends could pay for it twice.
        raise TransientBackendError(f"{self.where} lists batches without end")

    async def download(self, file_id: str, dest: Path) -> None:
        """GET /files/{id}/content streamed to `dest`, at most `max_output_bytes`."""
        part = dest.with_name(dest.name + ".part")

        async def save() -> None:
            async with self._files.files.with_streaming_response.content(
                file_id, extra_headers=self._headers
            ) as reply:
                with open_fresh(part) as out:
                    async for chunk in reply.iter_bytes(_CHUNK):
                        out.write(chunk)

        path = f"/files/{quote(file_id, safe='')}/content"
        try:
            await self._call("GET", path, save, deadline=self.transfer_timeout, gone_ok=True)
            os.replace(part, dest)
        finally:
            part.unlink(missing_ok=True)

    async def models(self) -> bytes:
        """The /models reply, as it came (`served_model` reads it)."""
        return await self._json(
            "GET",
            "/models",
            lambda: self._api.models.with_raw_response.list(extra_headers=self._headers),
        )

    async def close(self) -> None:
        await self._api.close()
        await self._files.close()

    async def _json(
        self,
        method: str,
        path: str,
        request: Callable[[], Awaitable[Any]],
        *,
        deadline: float | None = None,
        gone_ok: bool = False,
    ) -> bytes:
        """The body of a raw SDK response, read within the call's deadline."""

        async def read() -> bytes:
            response = await request()
            return await response.http_response.aread()

        return await self._call(method, path, read, deadline=deadline, gone_ok=gone_ok)

    async def _call(
        self,
        method: str,
        path: str,
        send: Callable[[], Awaitable[T]],
        *,
        deadline: float | None = None,
        gone_ok: bool = False,
    ) -> T:
        """One call of the API with one deadline around all of it; a 404 is `Gone` where
        the caller asked (a batch or a file), else a server without the Batch API."""

        async def answered() -> T:
            try:
                return await send()
            except openai.NotFoundError as error:
                if gone_ok:
                    raise Gone(path) from None
                raise self._no_batch_api(method, path, error) from None

        return await self.endpoint.call(answered, deadline=deadline, doing=f" ({method} {path})")

    def _no_batch_api(self, method: str, path: str, error: openai.APIStatusError) -> UsageError:
        message = body_message(error.body, "", self.secrets)
        return UsageError(
            f"{self.where} has no Batch API, or not all of it ({method} "
            f"/{path.split('/')[1]} answered 404{': ' + message if message else ''}): "
            "the batch backend needs /v1/files and /v1/batches (create, retrieve, list)"
        )

    def _too_big(self, size: int, _announced: bool) -> TransientBackendError:
        return TransientBackendError(
            f"{self.where} sent a body of over {self.max_download:,} bytes ({size:,} so far); "
            "raise the batch backend's max_output_bytes if an output file is that large"
        )

    def _parse(self, schema: type[S], raw: bytes, what: str) -> S:
        try:
            return schema.model_validate_json(raw)
        except SchemaError:
            raise TransientBackendError(f"{self.where} sent a malformed {what}") from None
