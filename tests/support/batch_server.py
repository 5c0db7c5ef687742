"""A fake OpenAI Files + Batches API on 127.0.0.1 for the batch backend's tests.

It serves, from its own thread and event loop:

    POST /v1/files                   multipart upload (purpose `batch`)
    GET  /v1/files/{id}/content      an uploaded, output or error file
    POST /v1/batches                 create: validates the input file as OpenAI does
    GET  /v1/batches/{id}            the batch; it ends on the first look after `delay` seconds
                                     (or after `release()` while `hold` is set)
    GET  /v1/batches?limit=&after=   the batches, newest first, with their metadata
    GET  /v1/models

Answers come from the same deterministic `Responder` as tests/support/fake_server.py. Output and error
rows are shuffled. How a batch ends is scripted by `batch_fate(serial) -> Fate` (completed,
expired, cancelled, failed, null file ids), and each row by `row_fate(line, times) -> str`,
where `times` is how often its custom_id was submitted before:

    "ok"            answered (in the output file)
    "missing"       no row anywhere
    "unfinished"    in the error file with code batch_expired / batch_cancelled
    "error:500"     in the error file with that HTTP status and an error body
    "output:500"    in the output file with that HTTP status and an error body
    "garbled"       a broken line in the output file
    "malformed"     a 200 row whose body is not a chat completion
    "huge:<bytes>"  a 200 row whose answer is padded to that many bytes

An error row's message is `error_text(line)` when that is set (a test plants text in it).

Every row of every created batch is counted in `submitted`, every 200 answer in `answered`
(what a user would pay for), and every HTTP request in `requests`.
"""

from __future__ import annotations

import base64
import json
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.support.background_server import AppServer, error_response
from tests.support.fake_server import ContextOverflow, Responder, replies_to

INPUT_LIMIT_REQUESTS = 50_000
INPUT_LIMIT_BYTES = 200_000_000


@dataclass
class Fate:
    """How one batch ends."""

    status: str = "completed"  # completed, expired, cancelled or failed
    null_output: bool = False  # output_file_id is null whatever the rows
    null_error: bool = False  # error_file_id is null whatever the rows
    errors: list[dict[str, Any]] | None = None  # why a failed batch failed


@dataclass
class _Batch:
    serial: int
    object: dict[str, Any]
    lines: list[dict[str, Any]]
    times: list[int]  # how often each line's custom_id was submitted before
    done_at: float
    looks: int = 0


@dataclass
class BatchServer(AppServer):
    """The Batch API, scripted; `with BatchServer(...) as server:` runs it."""

    kind = "batch"

    responder: Callable[[dict[str, Any]], Any] = field(default_factory=Responder)
    models: tuple[str, ...] = ("fake-model", "other-model")
    batch_fate: Callable[[int], Fate] | None = None
    row_fate: Callable[[dict[str, Any], int], str] | None = None
    hold: bool = False  # batches stay in_progress until release()
    hold_create: bool = False  # create calls get their reply only after release()
    # For the next create calls, in order: "after" / "before" creating, a 500; "refuse": a 400.
    create_faults: list[str] = field(default_factory=list)
    delay: float = 0.0  # seconds from creation before a batch ends
    missing_files: bool = False  # every file's content is a 404 (another project's key)
    seed: int = 0
    api_key: str | None = None
    login: tuple[str, str] | None = None  # HTTP Basic auth every request must carry
    error_text: Callable[[dict[str, Any]], str] | None = None
    max_requests: int = INPUT_LIMIT_REQUESTS
    max_bytes: int = INPUT_LIMIT_BYTES
    page_size: int = 100  # the most batches one list page holds, whatever `limit` asks
    has_batch_api: bool = True
    # Also answer live chat completions (with `responder`): for commands that send some calls
    # live beside their batches (evol optimize's optimizer).
    live_chat: bool = False
    port: int = 0

    def __post_init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, _Batch] = {}
        self.submitted: Counter[str] = Counter()
        self.answered: Counter[str] = Counter()
        self.requests: list[str] = []
        self.held_creates = 0
        self._serials = 0
        self.headers: list[dict[str, str]] = []

    # -- what the tests read and do -----------------------------------------------------

    def created(self) -> list[dict[str, Any]]:
        """Every batch created, oldest first, as the API shows it."""
        return [batch.object for batch in self.batches.values()]

    def batch_sizes(self) -> list[int]:
        return [len(batch.lines) for batch in self.batches.values()]

    def batch_models(self) -> list[set[str]]:
        return [{line["body"]["model"] for line in b.lines} for b in self.batches.values()]

    def forget(self, batch_id: str) -> None:
        """Drop a batch, as a provider does with old ones: its URL answers 404."""
        self._loop.call_soon_threadsafe(self.batches.pop, batch_id)  # type: ignore[union-attr]

    def release(self) -> None:
        """Let held batches end and held create calls answer."""
        self.hold = False
        self.hold_create = False
        if self._loop and self._gate:
            self._loop.call_soon_threadsafe(self._gate.set)

    def _application(self) -> web.Application:
        app = web.Application(middlewares=[self._record], client_max_size=1 << 30)
        app.router.add_get("/v1/models", self._models)
        if self.has_batch_api:
            app.router.add_post("/v1/files", self._upload)
            app.router.add_get("/v1/files/{id}/content", self._content)
            app.router.add_post("/v1/batches", self._create)
            app.router.add_get("/v1/batches", self._list)
            app.router.add_get("/v1/batches/{id}", self._retrieve)
        if self.live_chat:
            app.router.add_post("/v1/chat/completions", self._chat)
        return app

    # -- handlers --------------------------------------------------------------------------

    @web.middleware
    async def _record(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.requests.append(f"{request.method} {request.path}")
        self.headers.append(dict(request.headers))
        if self.api_key is not None and (
            request.headers.get("Authorization") != f"Bearer {self.api_key}"
        ):
            return error_response(401, "Incorrect API key provided.", "invalid_api_key")
        if self.login is not None and request.headers.get("Authorization") != basic(*self.login):
            return error_response(401, "This server wants HTTP Basic auth.", "invalid_login")
        return await handler(request)

    async def _models(self, _request: web.Request) -> web.Response:
        data = [{"id": name, "object": "model", "owned_by": "fake"} for name in self.models]
        return web.json_response({"object": "list", "data": data})

    async def _chat(self, request: web.Request) -> web.Response:
        body = await request.json()
        reply = self.responder(body)
        text = reply[0] if isinstance(reply, tuple) else reply
        choice = {"index": 0, "message": {"role": "assistant", "content": text}}
        usage = {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
        return web.json_response(
            {"id": "chatcmpl-live", "object": "chat.completion", "created": 0,
             "model": body["model"], "choices": [choice | {"finish_reason": "stop"}],
             "usage": usage}
        )  # fmt: skip

    async def _upload(self, request: web.Request) -> web.Response:
        form = await request.post()
        upload = form.get("file")
        if form.get("purpose") != "batch" or not isinstance(upload, web.FileField):
            return error_response(400, "expected purpose=batch and a file", "invalid_request")
        file_id = f"file-{len(self.files) + 1}"
        self.files[file_id] = upload.file.read()
        return web.json_response(
            {"id": file_id, "object": "file", "purpose": "batch", "filename": upload.filename}
        )

    async def _content(self, request: web.Request) -> web.Response:
        content = self.files.get(request.match_info["id"])
        if content is None or self.missing_files:
            return error_response(404, "No such file", "not_found")
        return web.Response(body=content, content_type="application/octet-stream")

    async def _create(self, request: web.Request) -> web.Response:
        payload = await request.json()
        fault = self.create_faults.pop(0) if self.create_faults else None
        if fault == "before":
            return error_response(500, "injected 500 before creating", "server_error")
        if fault == "refuse":
            return error_response(400, "Invalid metadata: refused", "invalid_request")
        if payload.get("input_file_id") not in self.files:
            return error_response(400, "No such input file", "invalid_request")
        batch = self._new_batch(payload)
        if self.hold_create:
            assert self._gate is not None
            self.held_creates += 1
            await self._gate.wait()
        if fault == "after":
            return error_response(500, "injected 500 after creating", "server_error")
        return web.json_response(batch.object)

    async def _retrieve(self, request: web.Request) -> web.Response:
        batch = self.batches.get(request.match_info["id"])
        if batch is None:
            return error_response(404, "No such batch", "not_found")
        batch.looks += 1
        running = batch.object["status"] == "in_progress"
        if running and not self.hold and time.monotonic() >= batch.done_at:
            self._finish(batch)
        return web.json_response(batch.object)

    async def _list(self, request: web.Request) -> web.Response:
        newest_first = list(reversed(self.batches))
        after = request.query.get("after")
        if after in self.batches:
            newest_first = newest_first[newest_first.index(after) + 1 :]
        limit = min(int(request.query.get("limit", "20")), self.page_size)
        page = newest_first[:limit]
        return web.json_response(
            {
                "object": "list",
                "data": [self.batches[batch_id].object for batch_id in page],
                "first_id": page[0] if page else None,
                "last_id": page[-1] if page else None,
                "has_more": len(newest_first) > limit,
            }
        )

    # -- batches ---------------------------------------------------------------------------

    def _new_batch(self, payload: dict[str, Any]) -> _Batch:
        serial, self._serials = self._serials, self._serials + 1
        batch_id = f"batch_{serial + 1}"
        content = self.files[payload["input_file_id"]]
        fate = self.batch_fate(serial) if self.batch_fate else Fate()
        lines, errors = self._validate(content)
        if fate.status == "failed":
            errors = errors or fate.errors or [{"code": "invalid_request", "message": "scripted"}]
        times = []
        if not errors:
            for line in lines:
                times.append(self.submitted[line["custom_id"]])
                self.submitted[line["custom_id"]] += 1
        status = "failed" if errors else "in_progress"
        obj = {
            "id": batch_id,
            "object": "batch",
            "endpoint": payload.get("endpoint"),
            "input_file_id": payload["input_file_id"],
            "completion_window": payload.get("completion_window"),
            "status": status,
            "output_file_id": None,
            "error_file_id": None,
            "created_at": int(time.time()),
            "request_counts": {"total": len(lines), "completed": 0, "failed": 0},
            "metadata": payload.get("metadata"),
            "errors": {"object": "list", "data": errors} if errors else None,
        }
        batch = _Batch(serial, obj, lines, times, time.monotonic() + self.delay)
        self.batches[batch_id] = batch
        return batch

    def _validate(self, content: bytes) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """The lines, and the reasons OpenAI would fail the batch for."""
        errors: list[dict[str, Any]] = []
        if len(content) > self.max_bytes:
            errors.append({"code": "file_too_large", "message": f"{len(content)} bytes"})
        lines = [json.loads(raw) for raw in content.splitlines()]
        if len(lines) > self.max_requests:
            errors.append({"code": "too_many_requests", "message": f"{len(lines)} requests"})
        ids = [line.get("custom_id") for line in lines]
        if len(set(ids)) != len(ids):
            errors.append({"code": "duplicate_custom_id", "message": "custom_ids repeat"})
        models = {line.get("body", {}).get("model") for line in lines}
        if len(models) > 1:
            errors.append({"code": "mixed_models", "message": f"models {sorted(models)}"})
        for number, line in enumerate(lines, 1):
            if line.get("method") != "POST" or line.get("url") != "/v1/chat/completions":
                errors.append({"code": "invalid_url", "message": "bad url", "line": number})
            elif line["body"].get("model") not in self.models:
                errors.append({"code": "model_not_found", "message": "no model", "line": number})
        return lines, errors[:5]

    def _finish(self, batch: _Batch) -> None:
        fate = self.batch_fate(batch.serial) if self.batch_fate else Fate()
        output: list[bytes] = []
        failed: list[bytes] = []
        for number, (line, times) in enumerate(zip(batch.lines, batch.times, strict=True)):
            kind = self.row_fate(line, times) if self.row_fate else "ok"
            self._row(batch, number, line, kind, fate.status, output, failed)
        rng = random.Random(self.seed + batch.serial)
        rng.shuffle(output)
        rng.shuffle(failed)
        obj = batch.object
        obj["status"] = fate.status if fate.status != "failed" else "completed"
        obj["request_counts"] = {
            "total": len(batch.lines),
            "completed": len(output),
            "failed": len(failed),
        }
        if output and not fate.null_output:
            obj["output_file_id"] = self._file(b"".join(output))
        if failed and not fate.null_error:
            obj["error_file_id"] = self._file(b"".join(failed))

    def _row(
        self,
        batch: _Batch,
        number: int,
        line: dict[str, Any],
        kind: str,
        status: str,
        output: list[bytes],
        failed: list[bytes],
    ) -> None:
        custom_id = line["custom_id"]
        row_id = f"{batch.object['id']}_req_{number}"
        if kind == "missing":
            return
        if kind == "garbled":
            output.append(f'{{"id": "{row_id}", "custom_id": "{custom_id}", "resp\n'.encode())
            return
        if kind == "unfinished":
            code = "batch_cancelled" if status == "cancelled" else "batch_expired"
            error = {"code": code, "message": "The request was not run before the batch ended."}
            failed.append(_line(row_id, custom_id, None, error))
            return
        if kind.startswith(("error:", "output:")):
            where, _, code = kind.partition(":")
            message = self.error_text(line) if self.error_text else f"injected {code}"
            response = {"status_code": int(code), "body": _error_body(message)}
            (failed if where == "error" else output).append(
                _line(row_id, custom_id, response, None)
            )
            return
        if kind == "malformed":
            response = {"status_code": 200, "body": {"id": "x", "choices": []}}
            output.append(_line(row_id, custom_id, response, None))
            return
        if kind.startswith("huge:"):
            reply = "x" * int(kind.partition(":")[2])
            self.answered[custom_id] += 1
            response = {"status_code": 200, "body": _completion(line["body"], reply, row_id)}
            output.append(_line(row_id, custom_id, response, None))
            return
        try:
            reply = replies_to(self.responder, line["body"])
        except ContextOverflow:
            message = "This model's maximum context length is 4096 tokens."
            response = {"status_code": 400, "body": _error_body(message)}
            failed.append(_line(row_id, custom_id, response, None))
            return
        self.answered[custom_id] += 1
        response = {"status_code": 200, "body": _completion(line["body"], reply, row_id)}
        output.append(_line(row_id, custom_id, response, None))

    def _file(self, content: bytes) -> str:
        file_id = f"file-{len(self.files) + 1}"
        self.files[file_id] = content
        return file_id


def basic(user: str, password: str) -> str:
    """The Authorization header of HTTP Basic auth."""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def content_of(line: dict[str, Any]) -> str:
    """The first message of a submitted line: what a test's row_fate looks at."""
    return line["body"]["messages"][0]["content"]


def _completion(body: dict[str, Any], reply: Any, row_id: str) -> dict[str, Any]:
    """A chat completion of one reply, or of a list of them (the choices of a row with n)."""
    replies = reply if isinstance(reply, list) else [reply]
    choices = [r if isinstance(r, tuple) else (r, "stop") for r in replies]
    prompt_tokens = sum(len(m["content"].split()) for m in body["messages"])
    return {
        "id": f"chatcmpl-{row_id}",
        "object": "chat.completion",
        "model": body["model"],
        "choices": [
            {
                "index": index,
                "message": {"role": "assistant", "content": text},
                "finish_reason": finish_reason,
            }
            for index, (text, finish_reason) in enumerate(choices)
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": sum(len(text.split()) for text, _ in choices),
        },
    }


def _line(
    row_id: str, custom_id: str, response: dict[str, Any] | None, error: dict[str, Any] | None
) -> bytes:
    if response is not None:
        response = {"request_id": f"req_{row_id}", **response}
    row = {"id": row_id, "custom_id": custom_id, "response": response, "error": error}
    return json.dumps(row).encode() + b"\n"


def _error_body(message: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": "invalid_request_error", "code": None}}
