"""evol.llm.batch.client: the Files and Batches endpoints through the openai SDK, call by call,
against a scripted server on 127.0.0.1 (tests/support/hostile_server.py).

- A reply off evol's schema is "a malformed file object / batch object / batch list", a retry,
  never a wrong decision; so is an id the SDK would refuse to put in a path.
- The list of batches is paged by evol: a list that never ends is not read as "no such batch"
  (that would pay for the batch twice), a list that repeats its cursor ends.
- A 404 is "gone" for a batch or a file, "has no Batch API" for the other calls.
- A download is streamed to disk under max_output_bytes, with or without a length, and leaves
  no file behind when refused; a JSON reply is capped at --max-response-mb.
- An upload or a download past the transfer timeout names the call.
- Azure: the key as api-key and the base URL's query on every call.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Awaitable, Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from pydantic import SecretStr

from evol.errors import RunDirError, TransientBackendError, UsageError
from evol.llm import BackendSettings
from evol.llm.batch import BatchSettings
from evol.llm.batch import client as client_module
from evol.llm.batch.client import BatchClient, Gone
from tests.support.hostile_server import HostileServer, Request, response

KEY = "sk-test-BATCH-CLIENT-0123456789abcdef"
BATCH = {"id": "batch_1", "status": "completed", "output_file_id": "file-2", "metadata": {}}
CONTENT = b"".join(b'{"custom_id": "evol-%d"}\n' % n for n in range(5000))


def batch_api(**answers: Any) -> Callable[[Request, Any], Awaitable[bool]]:
    """A well-behaved Batch API whose answer to a call ("upload", "create", "retrieve", "list",
    "content") may be replaced: bytes as they are, an int as that status, else as JSON."""

    async def behaviour(request: Request, writer: asyncio.StreamWriter) -> bool:
        path = urlsplit(request.path).path.removeprefix("/openai").removeprefix("/v1")
        call = {
            ("POST", "/files"): "upload",
            ("POST", "/batches"): "create",
            ("GET", "/batches"): "list",
        }.get((request.method, path))
        if call is None:
            call = "content" if path.endswith("/content") else "retrieve"
        answer = answers.get(call, _usual(call))
        if isinstance(answer, int):
            body = json.dumps({"error": {"message": f"scripted {answer}"}}).encode()
            writer.write(response(f"{answer} Scripted", body))
        elif isinstance(answer, bytes):
            writer.write(response("200 OK", answer))
        else:
            writer.write(response("200 OK", json.dumps(answer).encode()))
        return True

    return behaviour


def _usual(call: str) -> Any:
    if call == "upload":
        return {"id": "file-1", "object": "file"}
    if call == "list":
        return {"data": [BATCH], "has_more": False, "last_id": "batch_1"}
    if call == "content":
        return CONTENT
    return BATCH


def client_for(url: str, tmp_path: Path, **options: Any) -> BatchClient:
    settings = {"base_urls": [url]} | {k: v for k, v in options.items() if k in _BACKEND}
    batch = {k: v for k, v in options.items() if k not in _BACKEND}
    return BatchClient(BackendSettings(**settings), BatchSettings(state_dir=tmp_path, **batch))


_BACKEND = {"api_key", "timeout", "max_response_bytes"}


def outcome(client: BatchClient, call: Callable[[BatchClient], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        try:
            return await call(client)
        except Exception as error:  # the outcome is what the test looks at
            return error
        finally:
            await client.close()

    return asyncio.run(main())


def upload(tmp_path: Path) -> Callable[[BatchClient], Awaitable[str]]:
    path = tmp_path / "input.jsonl"
    path.write_bytes(b'{"custom_id": "evol-1"}\n')
    return lambda client: client.upload(path)


CALLS: dict[str, Callable[[Path], Callable[[BatchClient], Awaitable[Any]]]] = {
    "upload": upload,
    "create": lambda _tmp: lambda client: client.create("file-1", "t" * 32, "24h"),
    "retrieve": lambda _tmp: lambda client: client.retrieve("batch_1"),
    "list": lambda _tmp: lambda client: client.find("t" * 32),
    "content": lambda tmp: lambda client: client.download("file-2", tmp / "output.jsonl"),
}


# -- replies off the schema ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "answer", "what"),
    [
        ("upload", {"id": 5}, "file object"),
        ("upload", {"object": "file"}, "file object"),
        ("upload", b"not json", "file object"),
        ("create", {"id": "batch_1"}, "batch object"),  # no status
        ("create", {"id": "", "status": "validating"}, "batch object"),
        ("retrieve", BATCH | {"output_file_id": ".."}, "batch object"),
        ("retrieve", BATCH | {"request_counts": {"total": "5"}}, "batch object"),
        ("retrieve", BATCH | {"errors": {"data": [{"line": "2"}]}}, "batch object"),
        ("list", {"data": {}}, "batch list"),
        ("list", {"data": [BATCH | {"metadata": []}]}, "batch list"),
        ("list", [BATCH], "batch list"),
    ],
)
def test_a_reply_off_the_schema_is_a_malformed_reply(tmp_path, call, answer, what) -> None:
    with HostileServer(batch_api(**{call: answer})) as server:
        result = outcome(client_for(server.base_url, tmp_path), CALLS[call](tmp_path))
    assert type(result) is TransientBackendError
    assert str(result) == f"{server.base_url} sent a malformed {what}"


def test_each_call_reads_the_reply_it_was_sent(tmp_path) -> None:
    with HostileServer(batch_api()) as server:
        results = {
            name: outcome(client_for(server.base_url, tmp_path), call(tmp_path))
            for name, call in CALLS.items()
        }
    assert results["upload"] == "file-1"
    assert results["create"].id == results["retrieve"].id == "batch_1"
    assert results["list"] is None  # no batch carries the token
    assert results["content"] is None and (tmp_path / "output.jsonl").read_bytes() == CONTENT
    assert sorted(p.name for p in tmp_path.iterdir()) == ["input.jsonl", "output.jsonl"]


# -- the list of batches ------------------------------------------------------------------------


def endless_list(*, repeat: bool) -> Callable[[Request, Any], Awaitable[bool]]:
    """Every page says there is more, behind a new cursor (or the same one, with `repeat`)."""
    pages = iter(range(1, 1_000_000))

    async def behaviour(request: Request, writer: asyncio.StreamWriter) -> bool:
        page = 1 if repeat else next(pages)
        entry = BATCH | {"id": f"batch_{page}", "metadata": {"evol_batch": "another run"}}
        body = {"data": [entry], "has_more": True, "last_id": f"batch_{page}"}
        writer.write(response("200 OK", json.dumps(body).encode()))
        return True

    return behaviour


def test_a_list_without_end_is_an_error_not_no_such_batch(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(client_module, "_MAX_PAGES", 3)
    with HostileServer(endless_list(repeat=False)) as server:
        result = outcome(client_for(server.base_url, tmp_path), CALLS["list"](tmp_path))
        cursors = [parse_qs(urlsplit(r.path).query).get("after") for r in server.requests]
    assert type(result) is TransientBackendError
    assert str(result) == f"{server.base_url} lists batches without end"
    assert cursors == [None, ["batch_1"], ["batch_2"]]


def test_a_list_that_repeats_its_cursor_is_one_without_end_not_an_absent_batch(tmp_path) -> None:
    """Read as absent, the batch's intent would be abandoned and its rows submitted again
    (attack23)."""
    with HostileServer(endless_list(repeat=True)) as server:
        result = outcome(client_for(server.base_url, tmp_path), CALLS["list"](tmp_path))
        pages = len(server.requests)
    assert isinstance(result, TransientBackendError) and "without end" in str(result)
    assert pages == 2


def test_the_batch_is_found_by_its_token_on_a_later_page(tmp_path) -> None:
    ours = BATCH | {"id": "batch_7", "metadata": {"evol_batch": "t" * 32}}
    theirs = BATCH | {"id": "batch_8", "metadata": None}
    first = {"data": [theirs], "has_more": True, "last_id": None}  # the cursor from the data
    pages = iter([first, {"data": [ours], "has_more": False}])

    async def listing(request: Request, writer: asyncio.StreamWriter) -> bool:
        writer.write(response("200 OK", json.dumps(next(pages)).encode()))
        return True

    with HostileServer(listing) as server:
        found = outcome(client_for(server.base_url, tmp_path), CALLS["list"](tmp_path))
        cursors = [parse_qs(urlsplit(r.path).query).get("after") for r in server.requests]
        limits = {tuple(parse_qs(urlsplit(r.path).query)["limit"]) for r in server.requests}
    assert found.id == "batch_7"
    assert cursors == [None, ["batch_8"]] and limits == {("100",)}


def test_a_page_with_more_but_no_batch_and_no_cursor_is_a_list_without_end(tmp_path) -> None:
    """The first page is asked for with no cursor at all (not an empty one); a page that says
    there is more but gives no way to it is a list without end, not an absent batch."""
    page = {"data": [], "has_more": True, "last_id": None}

    async def listing(request: Request, writer: asyncio.StreamWriter) -> bool:
        writer.write(response("200 OK", json.dumps(page).encode()))
        return True

    with HostileServer(listing) as server:
        result = outcome(client_for(server.base_url, tmp_path), CALLS["list"](tmp_path))
        queries = [
            parse_qs(urlsplit(r.path).query, keep_blank_values=True) for r in server.requests
        ]
    assert type(result) is TransientBackendError
    assert str(result) == f"{server.base_url} lists batches without end"
    assert queries == [{"limit": ["100"]}]


# -- a 404 --------------------------------------------------------------------------------------


@pytest.mark.parametrize("call", ["retrieve", "content"])
def test_a_404_for_a_batch_or_a_file_is_gone(tmp_path, call) -> None:
    with HostileServer(batch_api(**{call: 404})) as server:
        result = outcome(client_for(server.base_url, tmp_path), CALLS[call](tmp_path))
    assert type(result) is Gone
    assert list(tmp_path.iterdir()) == []  # nothing of a download is left behind


@pytest.mark.parametrize(
    ("call", "said"),
    [("upload", "POST /files"), ("create", "POST /batches"), ("list", "GET /batches")],
)
def test_a_404_elsewhere_says_the_server_has_no_batch_api(tmp_path, call, said) -> None:
    with HostileServer(batch_api(**{call: 404})) as server:
        result = outcome(client_for(server.base_url, tmp_path), CALLS[call](tmp_path))
    assert type(result) is UsageError
    assert str(result) == (
        f"{server.base_url} has no Batch API, or not all of it ({said} answered 404: scripted "
        "404): the batch backend needs /v1/files and /v1/batches (create, retrieve, list)"
    )


# -- caps and deadlines -------------------------------------------------------------------------


@pytest.mark.parametrize("announced", [True, False], ids=["with a length", "without"])
def test_a_download_over_max_output_bytes_is_refused_and_leaves_no_file(
    tmp_path, announced
) -> None:
    async def content(request: Request, writer: asyncio.StreamWriter) -> bool:
        if announced:
            writer.write(response("200 OK", CONTENT))
        else:  # no length: counted as it comes, up to the connection's end
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n\r\n")
            writer.write(CONTENT)
        return False

    cap = 1000
    with HostileServer(content) as server:
        client = client_for(server.base_url, tmp_path, max_output_bytes=cap)
        result = outcome(client, CALLS["content"](tmp_path))
    assert type(result) is TransientBackendError
    said = str(result)
    assert said.startswith(f"{server.base_url} sent a body of over {cap:,} bytes (")
    assert said.endswith(
        " so far); raise the batch backend's max_output_bytes if an output file is that large"
    )
    if announced:
        assert f"({len(CONTENT):,} so far)" in said
    assert list(tmp_path.iterdir()) == []


def test_a_download_up_to_max_output_bytes_is_kept_whole(tmp_path) -> None:
    with HostileServer(batch_api()) as server:
        client = client_for(server.base_url, tmp_path, max_output_bytes=len(CONTENT))
        assert outcome(client, CALLS["content"](tmp_path)) is None
    assert [p.name for p in tmp_path.iterdir()] == ["output.jsonl"]
    assert (tmp_path / "output.jsonl").read_bytes() == CONTENT


def test_a_json_reply_is_capped_at_max_response_mb_not_at_the_download_cap(tmp_path) -> None:
    big = BATCH | {"metadata": {"padding": "x" * 5000}}
    with HostileServer(batch_api(retrieve=big)) as server:
        client = client_for(server.base_url, tmp_path, max_response_bytes=1000)
        result = outcome(client, CALLS["retrieve"](tmp_path))
    assert type(result) is TransientBackendError
    assert "over the 1,000-byte cap (--max-response-mb)" in str(result)


async def silent(_request: Request, _writer: asyncio.StreamWriter) -> bool:
    await asyncio.sleep(3600)  # never answers; the test's server ends it on shutdown
    return False


@pytest.mark.parametrize(
    ("call", "doing", "deadline"),
    [
        ("upload", "POST /files", "0.2s"),
        ("content", "GET /files/file-2/content", "0.2s"),
        ("retrieve", "GET /batches/batch_1", "0.3s"),
    ],
)
def test_a_call_past_its_deadline_names_the_call(tmp_path, call, doing, deadline) -> None:
    """Uploads and downloads wait `transfer_timeout`, the other calls --timeout."""
    with HostileServer(silent) as server:
        client = client_for(server.base_url, tmp_path, timeout=0.3, transfer_timeout=0.2)
        result = outcome(client, CALLS[call](tmp_path))
    assert type(result) is TransientBackendError
    assert str(result) == f"{server.base_url} timed out after {deadline} ({doing})"


# -- Azure --------------------------------------------------------------------------------------


def test_azure_gets_the_key_as_api_key_and_the_query_on_every_call(tmp_path, monkeypatch) -> None:
    """Through a proxy (the test's server), so that each request names the Azure host."""
    url = "http://res.openai.azure.com/openai/v1?api-version=2025-04-01-preview"
    with HostileServer(batch_api()) as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.base_url.removesuffix("/v1"))
        for call in [*CALLS.values(), lambda _tmp: lambda client: client.models()]:
            outcome(client_for(url, tmp_path, api_key=SecretStr(KEY)), call(tmp_path))
        requests = list(proxy.requests)
    assert [(r.method, urlsplit(r.path).path) for r in requests] == [
        ("POST", "/openai/v1/files"),
        ("POST", "/openai/v1/batches"),
        ("GET", "/openai/v1/batches/batch_1"),
        ("GET", "/openai/v1/batches"),
        ("GET", "/openai/v1/files/file-2/content"),
        ("GET", "/openai/v1/models"),  # the served model, asked when --model is not given
    ]
    for request in requests:
        parts = urlsplit(request.path)
        assert parts.hostname == "res.openai.azure.com"
        assert parse_qs(parts.query)["api-version"] == ["2025-04-01-preview"]
        assert request.headers["api-key"] == KEY and "authorization" not in request.headers


class _SamePage(BaseHTTPRequestHandler):
    """Answers every list request with one page that says there is more: its cursor cycles."""

    def log_message(self, *_args: object) -> None:
        pass

    def do_GET(self) -> None:
        page = {"data": [{"id": "batch_other", "status": "in_progress"}], "has_more": True}
        body = json.dumps(page).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def test_a_batch_list_whose_cursor_cycles_is_no_proof_that_the_batch_is_absent(
    tmp_path: Path,
) -> None:
    """Reading it as absent would abandon the intent and submit its requests again."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _SamePage)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()

    async def find() -> object:
        client = BatchClient(
            BackendSettings(base_urls=[f"http://127.0.0.1:{httpd.server_port}/v1"], timeout=5),
            BatchSettings(state_dir=tmp_path),
        )
        try:
            return await client.find("token")
        finally:
            await client.close()

    try:
        with pytest.raises(TransientBackendError, match="without end"):
            asyncio.run(find())
    finally:
        httpd.shutdown()
        httpd.server_close()


# -- no file is read through a link -------------------------------------------------------------


def test_an_upload_reads_no_input_file_through_a_link(tmp_path) -> None:
    """The input file is evol's own (made afresh in batch/tmp): a link in its place is refused
    before any call, and the file it points at is neither sent nor touched."""
    theirs = tmp_path / "theirs.jsonl"
    theirs.write_bytes(b'{"private": "not for the server"}\n')
    link = tmp_path / "input.jsonl"
    link.symlink_to(theirs)
    error = outcome(client_for("http://127.0.0.1:9/v1", tmp_path), lambda c: c.upload(link))
    assert isinstance(error, RunDirError)
    assert str(error) == f"{link}: is a symbolic link; remove it (evol made none)"
    assert theirs.read_bytes() == b'{"private": "not for the server"}\n' and link.is_symlink()
