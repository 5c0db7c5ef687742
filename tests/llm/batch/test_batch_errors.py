"""Promises of the batch backend that mutation testing found unguarded (issue #22), each
checked through a whole batch run against tests/support/batch_server.py's fake Batch API, in this
process (mutmut credits only tests that call the code here).

- A server that will not take a batch is one line that says why and what to do: a redirect
  names where it points (without the key), a missing Batch API names the path and the server's
  words, a refused key names where it was set.
- A batch that fails validation says why: up to three of the server's reasons, each with its
  code, message and line; a failure the server will get over is transient and says so.
- The Batch API's 429 reaches the engine as a transient failure with its retry hint, not as
  the engine's own rate limit.
- A batch the server refused to create is given up for good: it is never shown as a batch,
  never looked for again, and the next process submits its requests once.
- A batch or file the server does not know, an output over the cap and an input file that
  cannot be written each say what is wrong and what to do.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from pydantic import SecretStr

from evol.errors import (
    AuthenticationFailed,
    RateLimited,
    Redirected,
    RunDirError,
    TransientBackendError,
    UsageError,
)
from evol.llm import BackendSettings, Completion, GenerationParams, LLMRequest, Message
from evol.llm.batch import (
    BatchBackend,
    BatchFailed,
    BatchInfo,
    BatchSettings,
    BatchUnknown,
    recorded_batches,
)
from evol.llm.retry import with_retries
from tests.support.batch_backend import file_size_limit
from tests.support.batch_server import BatchServer, Fate
from tests.support.fake_server import Responder
from tests.support.runs import write_seeds

MODEL = "fake-model"
PARAMS = GenerationParams()
KEY = "sk-test-BATCH-MUTANTS-0123456789abcdef"


def ask(text: str) -> list[Message]:
    return [{"role": "user", "content": text}]


def expected(text: str) -> str:
    return Responder()({"model": MODEL, "messages": ask(text)})


def one_process(
    server: BatchServer,
    state_dir: Path,
    texts: list[str],
    *,
    api_key: str | None = None,
    key_source: str = "OPENAI_API_KEY",
    **options: Any,
) -> tuple[list[Completion | BaseException], list[BatchInfo]]:
    """One process's life: every text asked at once (no retry by the engine), then the
    batches it reports, then close."""
    settings = {"quiet_period": 0.05, "poll_interval": 0.02, "retry_max_wait": 0.01} | options

    async def main() -> tuple[list[Completion | BaseException], list[BatchInfo]]:
        backend = BatchBackend(
            BackendSettings(
                base_urls=[server.base_url],
                api_key=SecretStr(api_key) if api_key else None,
                api_key_source=key_source,
            ),
            BatchSettings(state_dir=state_dir, **settings),
        )
        try:

            async def one(text: str) -> Completion:
                call = lambda: backend.complete(LLMRequest(ask(text), MODEL, PARAMS))  # noqa: E731
                return await with_retries(call, max_retries=0, max_wait=0.01)

            async with asyncio.timeout(600):  # a guard against a hang, never a pace
                replies = await asyncio.gather(*map(one, texts), return_exceptions=True)
            return replies, backend.batches()
        finally:
            await backend.aclose()

    return asyncio.run(main())


def only_error(replies: list[Completion | BaseException]) -> BaseException:
    errors = {type(reply) for reply in replies}
    assert len(errors) == 1 and len({str(reply) for reply in replies}) == 1, replies
    return replies[0]


# -- a server that will not take the batch ---------------------------------------------------


class _Redirecting(BatchServer):
    def __init__(self, status: int, location: str | None):
        super().__init__()
        self.status, self.location = status, location

    async def _upload(self, _request: web.Request) -> web.Response:
        headers = {"Location": self.location} if self.location else {}
        return web.Response(status=self.status, headers=headers)


@pytest.mark.parametrize("status", [300, 301, 307, 308])
def test_a_redirected_upload_names_where_it_points_without_the_key(tmp_path, status) -> None:
    location = f"http://elsewhere.example/v1/files?key={KEY}"
    with _Redirecting(status, location) as server:
        replies, batches = one_process(server, tmp_path, ["a", "b"], api_key=KEY)
    error = only_error(replies)
    assert isinstance(error, Redirected)
    assert str(error).startswith(f"{server.base_url} redirects to http://elsewhere.example/v1/")
    assert str(error).endswith(f" ({status}): point --base-url at the final address")
    assert KEY not in str(error)
    assert batches == [] and server.submitted == {}


def test_a_redirect_without_a_location_says_so(tmp_path) -> None:
    with _Redirecting(302, None) as server:
        replies, _ = one_process(server, tmp_path, ["a"])
    assert str(only_error(replies)) == (
        f"{server.base_url} redirects to (no Location header) (302): "
        "point --base-url at the final address"
    )


class _NoFilesEndpoint(BatchServer):
    def __init__(self, body: bytes):
        super().__init__()
        self.body = body

    async def _upload(self, _request: web.Request) -> web.Response:
        return web.Response(status=404, body=self.body, content_type="application/json")


@pytest.mark.parametrize(
    ("body", "said"),
    [
        (b'{"error": {"message": "Unknown request URL: POST /v1/files"}}', True),
        (b"", False),
    ],
)
def test_a_server_without_the_files_endpoint_says_what_the_backend_needs(
    tmp_path, body, said
) -> None:
    with _NoFilesEndpoint(body) as server:
        replies, _ = one_process(server, tmp_path, ["a"])
    words = ": Unknown request URL: POST /v1/files" if said else ""
    assert str(only_error(replies)) == (
        f"{server.base_url} has no Batch API, or not all of it (POST /files answered 404"
        f"{words}): the batch backend needs /v1/files and /v1/batches (create, retrieve, list)"
    )
    assert isinstance(only_error(replies), UsageError)


def test_a_refused_key_names_the_server_and_where_the_key_was_set(tmp_path) -> None:
    with BatchServer(api_key="sk-the-right-one") as server:
        replies, _ = one_process(server, tmp_path, ["a"], api_key=KEY, key_source="EVOL_API_KEY")
    error = only_error(replies)
    assert isinstance(error, AuthenticationFailed)
    assert str(error) == f"authentication failed for {server.base_url}: check EVOL_API_KEY"
    assert server.submitted == {}


# -- a batch that fails validation -----------------------------------------------------------


class _FailsWithoutReasons(BatchServer):
    """Every batch fails validation and its `errors` is null, as a terse server sends it."""

    def _new_batch(self, payload: dict[str, Any]) -> Any:
        batch = super()._new_batch(payload)
        batch.object["errors"] = None
        return batch


def test_a_batch_failed_without_a_reason_says_so(tmp_path) -> None:
    with _FailsWithoutReasons(batch_fate=lambda n: Fate(status="failed")) as server:
        replies, _ = one_process(server, tmp_path, ["a", "b"])
    error = only_error(replies)
    assert isinstance(error, BatchFailed)
    assert str(error) == f"{server.base_url} batch batch_1 failed validation: no reason given"


def test_a_failed_batch_shows_its_first_three_reasons_each_with_its_code_and_line(
    tmp_path,
) -> None:
    errors = [
        {"code": "invalid_url", "message": "bad url", "line": 1},
        {"message": "a reason without a code"},
        {"code": "model_not_found", "line": 3},
        {"code": "the_fourth", "message": "never shown", "line": 4},
    ]
    with BatchServer(batch_fate=lambda n: Fate(status="failed", errors=errors)) as server:
        replies, _ = one_process(server, tmp_path, ["a", "b"])
    error = only_error(replies)
    assert isinstance(error, BatchFailed)
    assert str(error) == (
        f"{server.base_url} batch batch_1 failed validation: invalid_url: bad url (line 1); "
        "error: a reason without a code; model_not_found: no message (line 3)"
    )


def test_a_batch_over_the_enqueued_token_limit_is_transient_and_says_so(tmp_path) -> None:
    limit = [{"code": "token_limit_exceeded", "message": "Enqueued token limit reached"}]
    with BatchServer(batch_fate=lambda n: Fate(status="failed", errors=limit)) as server:
        replies, _ = one_process(server, tmp_path, ["a"])
    error = only_error(replies)
    assert type(error) is TransientBackendError
    assert str(error) == (
        f"{server.base_url} batch batch_1 failed: token_limit_exceeded: Enqueued token limit reached"
    )


# -- the Batch API's own rate limit ----------------------------------------------------------


class _ThrottledPolls(BatchServer):
    async def _retrieve(self, _request: web.Request) -> web.Response:
        return web.Response(
            status=429,
            text='{"error": {"message": "Too many batch lookups"}}',
            content_type="application/json",
            headers={"Retry-After": "7"},
        )


def test_a_429_while_polling_reaches_the_engine_as_transient_with_its_hint(tmp_path) -> None:
    with _ThrottledPolls() as server:
        replies, _ = one_process(server, tmp_path, ["a", "b"], max_retries=0)
    error = only_error(replies)
    assert type(error) is TransientBackendError and not isinstance(error, RateLimited)
    assert str(error) == f"{server.base_url} answered 429: Too many batch lookups"
    assert error.retry_after == 7
    assert server.batch_sizes() == [2]  # the batch stays; only the callers were told


# -- a batch given up ------------------------------------------------------------------------


def test_a_refused_create_is_given_up_for_good_and_its_requests_are_paid_once(tmp_path) -> None:
    with BatchServer(create_faults=["refuse"]) as server:
        replies, batches = one_process(server, tmp_path, ["a", "b"])
        assert all(isinstance(reply, BatchFailed) for reply in replies)
        assert batches == []  # never reached the server: no batch to show or pay for
        assert recorded_batches(tmp_path) == {}
        replies, batches = one_process(server, tmp_path, ["a", "b"])
    assert [reply.text for reply in replies] == [expected("a"), expected("b")]  # type: ignore[union-attr]
    assert [batch.status for batch in batches] == ["completed"]
    assert set(server.submitted.values()) == {1}
    assert server.requests.count("GET /v1/batches") == 0  # the given-up one is not looked for


# -- what is wrong, and what to do -----------------------------------------------------------


def test_an_unknown_output_file_says_to_check_the_url_and_key_and_that_nothing_is_resent(
    tmp_path,
) -> None:
    with BatchServer(missing_files=True) as server:
        replies, _ = one_process(server, tmp_path, ["a"])
    error = only_error(replies)
    assert isinstance(error, BatchUnknown)
    assert str(error) == (
        f"{server.base_url} does not know its file file-2 (batch batch_1, made by this run): "
        "check --base-url and the API key (a batch belongs to the project whose key made it); "
        "its requests are not submitted again"
    )


def test_an_output_file_over_the_cap_names_the_setting_to_raise(tmp_path) -> None:
    with BatchServer() as server:
        replies, _ = one_process(server, tmp_path, ["a"], max_output_bytes=100, max_retries=0)
    error = only_error(replies)
    assert isinstance(error, TransientBackendError)
    assert str(error).startswith(f"{server.base_url} sent a body of over 100 bytes (")
    assert str(error).endswith(
        " so far); raise the batch backend's max_output_bytes if an output file is that large"
    )


def test_an_input_file_that_cannot_be_written_is_a_run_directory_error(tmp_path) -> None:
    # The question outgrows the limit; the limit stays far above what pytest's capture holds.
    with BatchServer() as server, file_size_limit(50_000):
        replies, _ = one_process(server, tmp_path, ["word " * 20_000])
    error = only_error(replies)
    assert isinstance(error, RunDirError)
    assert str(error) == "cannot write a batch input file: File too large"
    assert server.requests == []


# -- the model when none is named ------------------------------------------------------------


@pytest.mark.parametrize(
    ("models", "chosen", "refusal"),
    [
        (("only-model",), "only-model", None),
        (("fake-model", "other-model"), None, "name a model with --model: it serves fake-model, "),
        (("bad\x1bid",), None, "{where} serves one model, 'badid', whose id holds control"),
    ],
)
def test_the_model_is_the_servers_only_one_or_the_user_is_asked_to_name_it(
    tmp_path, models, chosen, refusal
) -> None:
    with BatchServer(models=models) as server:
        backend = BatchBackend(
            BackendSettings(base_urls=[server.base_url]), BatchSettings(state_dir=tmp_path)
        )

        async def main() -> str | UsageError:
            try:
                return await backend.default_model()
            except UsageError as error:
                return error
            finally:
                await backend.aclose()

        result = asyncio.run(main())
    if chosen is not None:
        assert result == chosen
    else:
        assert isinstance(result, UsageError)
        assert str(result).startswith(refusal.format(where=server.base_url))
    assert server.requests == ["GET /v1/models"]


class _ThrottledUntilReleased(BatchServer):
    def __init__(self) -> None:
        super().__init__()
        self.throttled = True

    async def _retrieve(self, request: web.Request) -> web.Response:
        if self.throttled:
            self.requests.append("throttled")
            return web.Response(status=429, headers={"Retry-After": "0"})
        return await super()._retrieve(request)


def test_throttled_polls_go_on_and_a_caller_asking_again_gets_the_batchs_answer(tmp_path) -> None:
    """Polls throttled while no caller waits on the batch: it is still polled, and answered."""
    with _ThrottledUntilReleased() as server:

        async def main() -> tuple[BaseException | Completion, Completion]:
            backend = BatchBackend(
                BackendSettings(base_urls=[server.base_url]),
                BatchSettings(state_dir=tmp_path, quiet_period=0.05, poll_interval=0.02),
            )
            try:
                async with asyncio.timeout(600):  # a guard against a hang, never a pace
                    call = lambda: backend.complete(LLMRequest(ask("a"), MODEL, PARAMS))  # noqa: E731
                    first = await asyncio.gather(call(), return_exceptions=True)
                    throttles = server.requests.count("throttled")
                    while server.requests.count("throttled") < throttles + 2:
                        await asyncio.sleep(0.01)  # polled on with nobody waiting
                    server.throttled = False
                    # A poll sent before the switch may still come back 429: the caller retries
                    # a transient failure, as the dispatcher does.
                    return first[0], await with_retries(call, max_retries=5, max_wait=0.05)
            finally:
                await backend.aclose()

        first, second = asyncio.run(main())
    assert type(first) is TransientBackendError
    assert second.text == expected("a")
    assert server.submitted == {next(iter(server.submitted)): 1}


# -- the request a server refused, as HTTP spells it (found by mutation testing) ---------------


# -- the batch backend's errors ----------------------------------------------------------------


def test_a_batch_run_names_the_request_that_was_refused_as_http_spells_it(
    evol, tmp_path: Path
) -> None:
    seeds = write_seeds(tmp_path / "seeds.jsonl", [{"instruction": "Name a river"}])
    with BatchServer() as server:
        elsewhere = server.base_url.replace("/v1", "/elsewhere/v1")  # no API there
        result = evol(
            "run", seeds, "--out", tmp_path / "run", "--batch", "--base-url", elsewhere, "--quiet"
        )
        assert server.requests == ["GET /elsewhere/v1/models"]
    assert result.exit_code == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"evol: error: {elsewhere} has no Batch API, or not all of it (GET ")
    assert "(GET /models answered 404: " in line
