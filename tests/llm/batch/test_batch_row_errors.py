"""What each kind of row a batch's output holds means for its request, in a whole batch run
against the fake Batch API: only a 2xx row is an answer to keep (a 1xx or 3xx row with a chat
completion in it is asked again); an error row is the error a live reply with that status
would be, in the same words, naming the server, the batch, the model and the key's source; a
results.jsonl that cannot be written stops the batch's requests with the file named, and the
next process collects the batch without paying for it again.
"""

from __future__ import annotations

import asyncio
import copy
import errno
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from evol.errors import (
    AuthenticationFailed,
    BackendError,
    ModelNotFound,
    StorageError,
    TransientBackendError,
)
from evol.llm import BackendSettings, Completion, LLMRequest
from evol.llm.batch import RESULTS_FILE, BatchBackend, BatchSettings, request_line
from evol.llm.retry import with_retries
from tests.support.batch_backend import MODEL, PARAMS, expected, file_size_limit
from tests.support.batch_backend import ask as messages
from tests.support.batch_server import BatchServer

# A row's new (response, error), made from the row the server wrote.
Rewrite = Callable[[dict[str, Any]], tuple[dict[str, Any] | None, dict[str, Any] | None]]


def custom_id(text: str) -> str:
    return request_line(messages(text), MODEL, PARAMS)[0]  # type: ignore[arg-type]


class Scripted(BatchServer):
    """Writes, the first time a question is asked, the row `rows[question]` makes in place of
    the one it would have written (in the same file)."""

    rows: dict[str, Rewrite]

    def _finish(self, batch: Any) -> None:
        super()._finish(batch)
        scripted = {
            line["custom_id"]: self.rows[line["body"]["messages"][0]["content"]]
            for line, times in zip(batch.lines, batch.times, strict=True)
            if times == 0 and line["body"]["messages"][0]["content"] in self.rows
        }
        for name in ("output_file_id", "error_file_id"):
            file_id = batch.object.get(name)
            if file_id is None:
                continue
            rows = [json.loads(line) for line in self.files[file_id].splitlines()]
            for row in rows:
                if row["custom_id"] in scripted:
                    row["response"], row["error"] = scripted[row["custom_id"]](row)
            self.files[file_id] = b"".join(json.dumps(row).encode() + b"\n" for row in rows)


def ask_all(
    server: BatchServer, state_dir: Path, texts: list[str], *, retries: int = 0
) -> dict[str, Completion | BaseException]:
    """One process's life: a batch backend on `state_dir` asks every text at once (each
    retried `retries` times, as the engine retries a transient failure, and submitted in as
    many batches), then closes."""

    async def one(backend: BatchBackend, text: str) -> Completion:
        async def call() -> Completion:
            return await backend.complete(LLMRequest(messages(text), MODEL, PARAMS))

        return await with_retries(call, max_retries=retries, max_wait=0.01)

    async def main() -> list[Completion | BaseException]:
        backend = BatchBackend(
            BackendSettings(base_urls=[server.base_url]),
            BatchSettings(
                state_dir=state_dir,
                quiet_period=0.05,
                poll_interval=0.02,
                retry_max_wait=0.01,
                max_retries=retries,
            ),
        )
        try:
            async with asyncio.timeout(600):  # a guard against a hang, never a pace
                return await asyncio.gather(
                    *(one(backend, text) for text in texts), return_exceptions=True
                )
        finally:
            await backend.aclose()

    return dict(zip(texts, asyncio.run(main()), strict=True))


def status(code: int, body: Any) -> Rewrite:
    return lambda _row: ({"status_code": code, "body": body}, None)


def answered_with(code: int) -> Rewrite:
    """The row's own chat completion, with another answer and `code` for its status."""

    def rewrite(row: dict[str, Any]) -> tuple[dict[str, Any], None]:
        response = copy.deepcopy(row["response"])
        response["status_code"] = code
        response["body"]["choices"][0]["message"]["content"] = f"the body of a {code}"
        return response, None

    return rewrite


@pytest.mark.parametrize("code", [199, 300, 399])
def test_only_a_two_hundred_row_is_an_answer_kept(tmp_path: Path, code: int) -> None:
    """A row with a chat completion but a 1xx or 3xx status is asked again, and the next
    batch's answer is the one returned and kept; with no retry left, the request fails in
    words that name the status."""
    text = "Name a river."
    for state_dir in ("once", "again"):
        server = Scripted()
        server.rows = {text: answered_with(code)}
        with server:
            if state_dir == "once":
                failed = ask_all(server, tmp_path / state_dir, [text])[text]
                where = f"{server.base_url} batch batch_1"
            else:
                reply = ask_all(server, tmp_path / state_dir, [text], retries=1)[text]
                asked = server.submitted[custom_id(text)]
    assert type(failed) is TransientBackendError, failed
    assert str(failed) == f"{where} sent a row with status {code}"
    assert isinstance(reply, Completion) and reply.text == expected(text), reply
    assert asked == 2
    kept = [json.loads(line) for line in (tmp_path / "again" / RESULTS_FILE).open("rb")]
    assert [(row["custom_id"], row["status_code"]) for row in kept] == [(custom_id(text), 200)]


def test_an_error_row_is_the_error_a_live_reply_would_be_in_its_words(tmp_path: Path) -> None:
    """Each error names the server (and the batch, for one that is asked again), and what to
    check: the model, the key's source; a body without a message is named by its status."""
    rows = {
        "no such model": status(404, {"error": {"message": "The model does not exist"}}),
        "bad key": status(401, {"error": {"message": "Incorrect API key provided"}}),
        "no message": status(400, {}),
        "too many": status(429, {"error": {"message": "Rate limit reached"}}),
        "not a completion": status(200, {"id": "x", "choices": []}),
        "no reason": lambda _row: (None, {}),
    }
    server = Scripted()
    server.rows = rows
    with server:
        replies = ask_all(server, tmp_path, list(rows))
        where = f"{server.base_url} batch batch_1"
    said = {text: (type(reply), str(reply)) for text, reply in replies.items()}
    assert said == {
        "no such model": (
            ModelNotFound,
            f"{where} has no model 'fake-model' (The model does not exist); check --model, "
            "and that --base-url ends in /v1",
        ),
        "bad key": (
            AuthenticationFailed,
            f"authentication failed for {where}: check OPENAI_API_KEY",
        ),
        # kept for good, and read back from results.jsonl as any later process reads it
        "no message": (BackendError, f"{server.base_url} rejected the request (400): status 400"),
        "too many": (TransientBackendError, f"{where} answered 429: Rate limit reached"),
        "not a completion": said["not a completion"],
        "no reason": (TransientBackendError, f"{where}: error: no message"),
    }
    error = replies["not a completion"]
    assert isinstance(error, TransientBackendError)
    assert str(error).startswith(f"{where} sent a reply that is not a chat completion (choices")


def test_a_results_file_that_cannot_be_written_is_named_and_the_batch_collected_later(
    tmp_path: Path,
) -> None:
    """results.jsonl past the file-size limit: the request fails with the file and the remedy
    named; once the limit is raised, the next process collects the same batch, paid once."""
    server = Scripted(row_fate=lambda line, _times: "huge:60000" if "long" in str(line) else "ok")
    server.rows = {}
    with server:
        first = ask_all(server, tmp_path, ["a long answer"])["a long answer"]
        assert isinstance(first, Completion), first
        assert (tmp_path / RESULTS_FILE).stat().st_size > 60_000
        with file_size_limit(50_000):
            failed = ask_all(server, tmp_path, ["Name a river."])["Name a river."]
        later = ask_all(server, tmp_path, ["Name a river."])["Name a river."]
        asked = server.submitted[custom_id("Name a river.")]
    assert isinstance(failed, StorageError), failed
    assert str(failed) == (
        f"{tmp_path / RESULTS_FILE}: cannot write it: {os.strerror(errno.EFBIG)}: the file-size "
        "limit of 50,000 bytes (ulimit -f) is reached: raise it, then run the same command again"
    )
    assert isinstance(later, Completion) and later.text == expected("Name a river."), later
    assert asked == 1
