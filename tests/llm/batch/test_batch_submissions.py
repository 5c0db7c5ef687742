"""Promises of the batch backend that the fifth round of mutation survivors (checks 6,120 on,
#22) found unpinned: a batch is created and its file uploaded as the OpenAI API asks for them;
a file full by rows or by bytes goes at once and a part-filled one of another model waits; the
progress line counts each state's batches and requests; run.json's batches name their error
file and the last failure to reach them; a rerun with `no_wait` that asks any one row of an
earlier batch is told it is pending.

Each test drives the backend against the fake Files + Batches API, with the helpers of the batch
tests (tests.support.batch_backend; on 4f7dc9e's tree, where the mutants were found, they are
tests/test_batch.py's).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st

from evol.errors import BackendError, RunDirError, TransientBackendError
from evol.llm import BackendSettings, Completion, GenerationParams
from evol.llm.batch import (
    BatchBackend,
    BatchFailed,
    BatchInfo,
    BatchPending,
    BatchSettings,
    describe_batches,
    request_line,
)
from tests.support.batch_backend import (
    ask,
    ask_all,
    complete_all,
    custom_id,
    expected,
    make_backend,
    texts_of,
    until,
)
from tests.support.batch_server import BatchServer, content_of

MODEL = "fake-model"


def refused(message: str) -> web.Response:
    """A 400 as the OpenAI API words it."""
    error = {"message": message, "type": "invalid_request_error", "code": None}
    return web.json_response({"error": error}, status=400)


class OpenAiStrict(BatchServer):
    """Refuses, as OpenAI does, a create call without the endpoint or with another completion
    window than 24h; keeps the name and type of each uploaded file."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.uploads: list[tuple[str | None, str | None]] = []

    async def _upload(self, request: web.Request) -> web.Response:
        upload = (await request.post()).get("file")
        if isinstance(upload, web.FileField):
            self.uploads.append((upload.filename, upload.content_type))
        return await super()._upload(request)

    async def _create(self, request: web.Request) -> web.Response:
        payload = await request.json()
        if payload.get("endpoint") != "/v1/chat/completions":
            return refused(f"Invalid value for 'endpoint': {payload.get('endpoint')!r}")
        if payload.get("completion_window") != "24h":
            return refused(f"Invalid 'completion_window': {payload.get('completion_window')!r}")
        return await super()._create(request)


def test_a_batch_is_created_and_its_file_uploaded_as_the_openai_api_asks(tmp_path: Path) -> None:
    """The create call names the chat endpoint and the 24h window; the input file goes up as
    a .jsonl file of type application/jsonl, named as written."""
    texts = ["Name a river.", "Name a lake."]
    with OpenAiStrict() as server:
        replies = ask_all(server, tmp_path, texts)
    assert texts_of(replies) == [expected(text) for text in texts]
    (created,) = server.created()
    assert (created["endpoint"], created["completion_window"]) == ("/v1/chat/completions", "24h")
    ((filename, content_type),) = server.uploads
    assert filename is not None and filename.startswith("input-") and filename.endswith(".jsonl")
    assert content_type is not None and content_type.lower() == "application/jsonl"


class Malformed(BatchServer):
    """Answers the upload, or the create call, with an object that is not the API's."""

    malformed: str = "upload"

    async def _upload(self, request: web.Request) -> web.Response:
        if self.malformed == "upload":
            await request.post()
            return web.json_response({"object": "file", "id": 7})
        return await super()._upload(request)

    async def _create(self, request: web.Request) -> web.Response:
        if self.malformed == "create":
            await request.read()
            return web.json_response({"object": "batch", "id": None, "status": 3})
        return await super()._create(request)


@pytest.mark.parametrize(("call", "what"), [("upload", "file object"), ("create", "batch object")])
def test_a_malformed_reply_is_named_with_what_it_should_have_been(
    tmp_path: Path, call: str, what: str
) -> None:
    server = Malformed()
    server.malformed = call
    with server:
        (error,) = ask_all(server, tmp_path, ["Name a river."], max_retries=0)
    assert isinstance(error, TransientBackendError)
    assert str(error).endswith(f"sent a malformed {what}")


class SlowUpload(BatchServer):
    """Takes longer over an upload than the client's --timeout (a large file, a slow link)."""

    async def _upload(self, request: web.Request) -> web.Response:
        await asyncio.sleep(4)  # twice the client's --timeout
        return await super()._upload(request)


@pytest.mark.slow  # the server takes 4 s over the upload
def test_an_upload_has_the_transfer_deadline_not_the_request_timeout(tmp_path: Path) -> None:
    """--timeout bounds the JSON calls; an input file's upload gets `transfer_timeout`."""
    with SlowUpload() as server:

        async def main() -> list[Completion | BaseException]:
            backend = BatchBackend(
                BackendSettings(base_urls=[server.base_url], timeout=2.0),
                BatchSettings(
                    state_dir=tmp_path, quiet_period=0.05, poll_interval=0.02, retry_max_wait=0.01
                ),
            )
            try:
                return await complete_all(backend, ["Name a river."])
            finally:
                await backend.aclose()

        replies = asyncio.run(main())
    assert texts_of(replies) == [expected("Name a river.")]


# -- when a file goes ------------------------------------------------------------------------


def line_size(text: str) -> int:
    return len(request_line(ask(text), MODEL, GenerationParams())[1])


@pytest.mark.parametrize("full_by", ["requests", "bytes"])
def test_a_full_file_goes_at_once_and_the_rest_waits_for_it_to_fill(
    tmp_path: Path, full_by: str
) -> None:
    """With no quiet moment ever, three rows fill one file of two and wait with the third;
    a fourth fills the second file, which goes at once too. (Each row's line has the same
    size, so two lines fill a file of two lines' bytes.)"""
    texts = ["question 1", "question 2", "question 3", "question 4"]
    two = 2 * line_size(texts[0])
    assert {line_size(text) for text in texts} == {two // 2}
    limits = {"max_requests": 2} if full_by == "requests" else {"max_bytes": two}
    with BatchServer(**limits) as server:

        async def main() -> list[Completion | BaseException]:
            backend = make_backend(server, tmp_path, quiet_period=3600, **limits)
            try:
                first = asyncio.ensure_future(complete_all(backend, texts[:3]))
                await until(lambda: len(server.batches) == 1)
                last = await complete_all(backend, texts[3:])
                return [*await first, *last]
            finally:
                await backend.aclose()

        replies = asyncio.run(main())
    assert texts_of(replies) == [expected(text) for text in texts]
    assert server.batch_sizes() == [2, 2]


def test_a_part_filled_file_of_another_model_waits_while_a_full_one_goes(tmp_path: Path) -> None:
    """A row of the other model is queued first; then two rows fill a file of two: that file
    goes, the other model's single row waits for quiet (which never comes in this test)."""
    with BatchServer() as server:

        async def main() -> tuple[list[Completion | BaseException], list[int]]:
            backend = make_backend(server, tmp_path, quiet_period=3600, max_requests=2)
            try:
                other = asyncio.ensure_future(
                    complete_all(backend, ["the other model's"], model="other-model")
                )
                await until(lambda: (tmp_path / "tmp").is_dir())  # it is queued
                full = await complete_all(backend, ["question 1", "question 2"])
                sizes = server.batch_sizes()
                other.cancel()
                return full, sizes
            finally:
                await backend.aclose()

        full, sizes = asyncio.run(main())
    assert texts_of(full) == [expected("question 1"), expected("question 2")]
    assert sizes == [2]
    assert server.batch_models() == [{MODEL}]


# -- what the run shows of its batches ----------------------------------------------------------


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["validating", "in_progress", "completed", "failed"]),
            st.integers(0, 60_000),
        ),
        max_size=8,
    )
)
def test_the_progress_line_counts_each_states_batches_and_requests(
    batches: list[tuple[str, int]],
) -> None:
    infos = [
        BatchInfo(id=f"batch_{n}", status=status, model=MODEL, requests=requests)
        for n, (status, requests) in enumerate(batches)
    ]
    counts = Counter(status for status, _ in batches)
    requests = Counter()
    for status, size in batches:
        requests[status] += size
    states = list(dict.fromkeys(status for status, _ in batches))  # in order of first batch
    parts = [f"{counts[s]} {s} ({requests[s]:,} requests)" for s in states]
    assert describe_batches(infos) == "batches: " + (", ".join(parts) if parts else "none yet")


def test_the_batches_of_a_run_name_their_error_file_and_the_last_failure(tmp_path: Path) -> None:
    """A batch with failed rows names the error file that holds them; a batch whose create
    call got no answer carries that failure as its note, for run.json."""
    failing = lambda line, _times: "error:500" if "[fails]" in content_of(line) else "ok"  # noqa: E731
    with BatchServer(row_fate=failing) as server:

        async def first() -> list[dict[str, Any]]:
            backend = make_backend(server, tmp_path / "errors", max_retries=0)
            try:
                await complete_all(backend, ["fine", "it [fails]"])
                return [info.model_dump() for info in backend.batches()]
            finally:
                await backend.aclose()

        (with_errors,) = asyncio.run(first())
    assert with_errors["error_file_id"] == server.batches["batch_1"].object["error_file_id"]
    assert with_errors["error_file_id"] is not None and with_errors["note"] is None

    with BatchServer(create_faults=["after"]) as server:

        async def second() -> tuple[list[Completion | BaseException], list[dict[str, Any]]]:
            backend = make_backend(
                server, tmp_path / "unanswered", max_retries=0, poll_interval=3600
            )
            try:
                replies = await complete_all(backend, ["Name a river."])
                return replies, [info.model_dump() for info in backend.batches()]
            finally:
                await backend.aclose()

        (error,), (unanswered,) = asyncio.run(second())
    assert isinstance(error, TransientBackendError)
    assert unanswered["note"] == str(error) and "injected 500 after creating" in str(error)


def test_a_request_no_batch_answered_is_refused_in_words_that_say_what_to_do(
    tmp_path: Path,
) -> None:
    doomed = lambda line, _times: "error:500" if "[doomed]" in content_of(line) else "ok"  # noqa: E731
    with BatchServer(row_fate=doomed) as server:
        _fine, lost = ask_all(server, tmp_path, ["fine", "lost [doomed]"], retries=4, max_retries=1)
    assert str(lost).endswith(
        ": this request got no answer in the 2 batches it was submitted in (listed in "
        "batch/batches.jsonl); raise --max-retries to submit it again"
    )
    assert server.submitted[custom_id("lost [doomed]")] == 2


# -- no_wait -------------------------------------------------------------------------------------


@pytest.mark.parametrize("asked", [0, 1, 3], ids=["first", "second", "last"])
def test_with_no_wait_any_one_row_of_an_earlier_open_batch_is_pending(
    tmp_path: Path, asked: int
) -> None:
    """A rerun that asks one row of an earlier process's open batch, wherever it is in the
    batch, is told it is pending; nothing is sent again."""
    texts = [f"question {i}" for i in range(4)]
    with BatchServer(hold=True) as server:
        first = ask_all(server, tmp_path, texts, no_wait=True)
        assert all(isinstance(r, BatchPending) for r in first)
        again = ask_all(server, tmp_path, texts[asked : asked + 1], no_wait=True)
        assert [type(r) for r in again] == [BatchPending]
        assert server.requests.count("POST /v1/batches") == 1
        server.release()
        done = ask_all(server, tmp_path, texts, no_wait=True)
    assert texts_of(done) == [expected(t) for t in texts]
    assert set(server.submitted.values()) == {1}


# -- a batch that could not be submitted -------------------------------------------------------


class RefusesUploads(BatchServer):
    async def _upload(self, request: web.Request) -> web.Response:
        await request.post()
        return refused("File is not in a supported format")


def test_a_refused_upload_fails_its_requests_saying_what_could_not_be_done(
    tmp_path: Path,
) -> None:
    with RefusesUploads() as server:
        (error,) = ask_all(server, tmp_path, ["Name a river."], max_retries=0)
    assert isinstance(error, BatchFailed)
    assert str(error).startswith("could not upload a batch input file: ")
    assert "File is not in a supported format" in str(error)
    assert server.created() == []


@pytest.fixture
def unwritable(tmp_path: Path) -> Iterator[Callable[[], None]]:
    """tmp/ of the batch folder, where no file can be made until the function it gives is
    called: immutable for root (who ignores permissions), else read-only."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    if os.geteuid() == 0:
        if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
            pytest.skip("chattr +i is not available here")

        def writable_again() -> None:
            subprocess.run(["chattr", "-i", str(folder)], check=True)
    else:
        folder.chmod(0o555)

        def writable_again() -> None:
            folder.chmod(0o755)

    yield writable_again
    writable_again()


def test_an_input_file_that_cannot_be_written_fails_only_its_requests_with_the_reason(
    tmp_path: Path, unwritable: Callable[[], None]
) -> None:
    """The batch folder's tmp/ takes no new file: the request fails with the system's reason
    and nothing is uploaded; once it takes files again, the next request is answered."""
    with BatchServer() as server:

        async def main() -> tuple[
            list[Completion | BaseException], list[Completion | BaseException]
        ]:
            backend = make_backend(server, tmp_path, max_retries=0)
            try:
                failed = await complete_all(backend, ["Name a river."])
                assert "POST /v1/files" not in server.requests
                unwritable()
                return failed, await complete_all(backend, ["Name a lake."])
            finally:
                await backend.aclose()

        (error,), later = asyncio.run(main())
    assert isinstance(error, RunDirError), error
    assert str(error).startswith("cannot write a batch input file: ")
    assert texts_of(later) == [expected("Name a lake.")]


def test_the_rows_of_a_refused_batch_are_not_sent_again_behind_their_callers(
    tmp_path: Path,
) -> None:
    """The create call is refused once: its callers are told, and its rows are not queued
    again; a request that comes after goes in a batch of its own."""
    with BatchServer(create_faults=["refuse"]) as server:

        async def main() -> tuple[
            list[Completion | BaseException], list[Completion | BaseException]
        ]:
            backend = make_backend(server, tmp_path, max_retries=0)
            try:
                first = await complete_all(backend, ["question 1", "question 2"])
                later = await complete_all(backend, ["question 3"])
                return first, later
            finally:
                await backend.aclose()

        first, later = asyncio.run(main())
    assert all(isinstance(error, BatchFailed) for error in first), first
    assert texts_of(later) == [expected("question 3")]
    assert server.batch_sizes() == [1]
    assert set(server.submitted) == {custom_id("question 3")}


# -- what a later process knows of an earlier one's batches ------------------------------------


def test_a_later_process_lists_an_earlier_ones_batch_with_its_model_and_input_file(
    tmp_path: Path,
) -> None:
    with BatchServer(hold=True) as server:
        pending = ask_all(server, tmp_path, ["question 1"], no_wait=True)
        assert [type(r) for r in pending] == [BatchPending]

        async def later() -> list[dict[str, Any]]:
            backend = make_backend(server, tmp_path)
            try:
                return [info.model_dump() for info in backend.batches()]
            finally:
                await backend.aclose()

        (listed,) = asyncio.run(later())
    (created,) = server.created()
    assert listed["model"] == MODEL
    assert listed["input_file_id"] == created["input_file_id"] is not None


# -- rows ----------------------------------------------------------------------------------------


class WordlessRefusals(BatchServer):
    """Refuses each row marked [refused] with a 400 whose body says nothing (an empty object)."""

    def _row(self, batch: Any, number: int, line: dict[str, Any], kind: str, *rest: Any) -> None:
        if "[refused]" not in content_of(line):
            return super()._row(batch, number, line, kind, *rest)
        _status, output, _failed = rest
        row_id = f"{batch.object['id']}_req_{number}"
        response = {"request_id": f"req_{row_id}", "status_code": 400, "body": {}}
        row = {"id": row_id, "custom_id": line["custom_id"], "response": response, "error": None}
        output.append(json.dumps(row).encode() + b"\n")


def test_a_refused_row_without_a_message_is_named_by_its_status_and_kept(tmp_path: Path) -> None:
    """The 400 is the request's answer for good: said with its status, kept in results.jsonl,
    and read from there by the next process instead of being asked again."""
    texts = ["Name a river.", "Name a lake [refused]."]
    with WordlessRefusals() as server:
        fine, refused_row = ask_all(server, tmp_path, texts, max_retries=0)
        again = ask_all(server, tmp_path, texts[1:], max_retries=0)
    assert texts_of([fine]) == [expected(texts[0])]
    assert type(refused_row) is BackendError, refused_row
    assert "status 400" in str(refused_row)
    assert [str(error) for error in again] == [str(refused_row)]
    assert set(server.submitted.values()) == {1}
