"""The batch backend against a fake Files + Batches API (tests/support/batch_server.py) on 127.0.0.1.

Rows are counted on the server: `submitted` is every row of every created batch, `answered`
every 200 answer (what a user pays for). A test that waits for a moment (a batch created, a
state line written) waits for that event, never for a time.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from evol.errors import (
    AuthenticationFailed,
    BackendError,
    ContextLengthExceeded,
    GarbledReply,
    ModelNotFound,
    RunDirError,
    TransientBackendError,
    UsageError,
)
from evol.llm import BackendSettings, Completion, GenerationParams, LLMRequest
from evol.llm.batch import (
    RESULTS_FILE,
    STATE_FILE,
    BatchBackend,
    BatchFailed,
    BatchPending,
    BatchSettings,
    BatchUnknown,
    OversizeRow,
    bounded_lines,
    is_final,
    plan_files,
    reply_outcome,
    request_line,
    row_outcome,
)
from evol.llm.openai_api import ReplyReader
from evol.secrets import Secrets
from tests.support.batch_backend import (
    MODEL,
    PARAMS,
    ask,
    ask_all,
    complete_all,
    custom_id,
    events,
    expected,
    make_backend,
    texts_of,
    until,
)
from tests.support.batch_server import BatchServer, Fate, content_of
from tests.support.fake_server import FakeServer
from tests.support.runs import assert_valid_run, write_seeds


def run(coroutine_function: Callable[[], Any]) -> Any:
    return asyncio.run(coroutine_function())


# -- one batch, joined on custom_id ---------------------------------------------------------


def test_concurrent_calls_become_one_batch_and_each_caller_gets_its_own_row(tmp_path) -> None:
    texts = [f"question {i}" for i in range(40)] + ["question 3", "question 3"]
    with BatchServer(seed=7) as server:
        replies = ask_all(server, tmp_path, texts)
        output = server.files[server.created()[0]["output_file_id"]].splitlines()
    assert texts_of(replies) == [expected(text) for text in texts]
    assert server.batch_sizes() == [40]  # the two repeats of "question 3" share its row
    assert set(server.submitted.values()) == {1} and len(server.submitted) == 40
    # The rows came back in another order than they were sent: the join is on custom_id.
    returned = [json.loads(row)["custom_id"] for row in output]
    assert returned != [custom_id(text) for text in texts[:40]]


def test_request_line_is_deterministic_and_names_every_part_of_the_request() -> None:
    base = request_line(ask("q"), MODEL, PARAMS)
    assert request_line(ask("q"), MODEL, PARAMS) == base
    others = [
        request_line(ask("q "), MODEL, PARAMS),
        request_line(ask("q"), "other-model", PARAMS),
        request_line(ask("q"), MODEL, GenerationParams(temperature=0.5)),
        request_line([{"role": "system", "content": "q"}], MODEL, PARAMS),
    ]
    assert len({base[0], *(line[0] for line in others)}) == 5
    line = json.loads(base[1])
    assert line == {
        "custom_id": base[0],
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": MODEL, "messages": ask("q")},
    }
    assert base[1].endswith(b"\n") and base[1].count(b"\n") == 1


# -- rows read like live replies ----------------------------------------------------------

READER = ReplyReader("http://x/v1 batch b1", "OPENAI_API_KEY", Secrets("sk-secret-key-123"))


def completion_body(message: dict[str, Any]) -> dict[str, Any]:
    return {"choices": [{"message": message, "finish_reason": "stop"}], "usage": None}


def error_body(message: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": "invalid_request_error"}}


@pytest.mark.parametrize(
    ("status", "body", "outcome", "final"),
    [
        (200, completion_body({"content": "hi"}), Completion, True),
        (200, {"choices": []}, GarbledReply, False),  # a TransientBackendError: retried
        (200, completion_body({"content": None}), TransientBackendError, False),
        (200, completion_body({"content": None, "refusal": "no"}), BackendError, True),
        (400, error_body("bad parameter"), BackendError, True),
        (400, error_body("maximum context length is 8 tokens"), ContextLengthExceeded, True),
        (401, error_body("Incorrect API key sk-secret-key-123"), AuthenticationFailed, False),
        (404, error_body("no such model"), ModelNotFound, False),
        (429, error_body("slow down"), TransientBackendError, False),  # not RateLimited
        (500, error_body("oops"), TransientBackendError, False),
        (503, "not json at all", TransientBackendError, False),
        (302, None, TransientBackendError, False),
        (199, None, TransientBackendError, False),
    ],
)
def test_a_row_is_read_like_a_live_reply_with_its_status(status, body, outcome, final) -> None:
    result = reply_outcome(status, body, MODEL, READER)
    assert type(result) is outcome
    assert is_final(result) is final
    assert "sk-secret-key-123" not in str(result)


def test_an_error_row_without_a_response_says_why_and_is_asked_again() -> None:
    row = {
        "custom_id": "c1",
        "response": None,
        "error": {"code": "batch_expired", "message": "late"},
    }
    custom, result = row_outcome(json.dumps(row).encode(), MODEL, READER)
    assert custom == "c1" and type(result) is TransientBackendError
    assert "batch_expired: late" in str(result) and not is_final(result)
    with pytest.raises(ValueError):
        row_outcome(b'{"custom_id": 5, "response": null}', MODEL, READER)


# -- files: size, count, model -------------------------------------------------------------


@pytest.mark.parametrize(
    ("sizes", "max_requests", "max_bytes", "files"),
    [
        ([], 3, 100, []),
        ([10, 10, 10], 3, 30, [3]),  # exactly the byte limit fits
        ([10, 10, 10], 3, 29, [2, 1]),  # one byte less does not
        ([10, 10, 10], 2, 100, [2, 1]),
        ([10, 10, 10, 10], 2, 100, [2, 2]),
        ([10, 10, 10], 1, 100, [1, 1, 1]),
        ([5, 20, 5], 10, 25, [2, 1]),
        ([30], 10, 30, [1]),
    ],
)
def test_plan_files(sizes, max_requests, max_bytes, files) -> None:
    assert plan_files(sizes, max_requests=max_requests, max_bytes=max_bytes) == files


@pytest.mark.parametrize(
    ("count", "max_requests", "sizes"),
    [(4, 4, [4]), (5, 4, [4, 1]), (9, 4, [4, 4, 1]), (2, 1, [1, 1])],
)
def test_files_are_split_at_max_requests(tmp_path, count, max_requests, sizes) -> None:
    texts = [f"question {i}" for i in range(count)]
    # The server fails any file over the limit, as OpenAI does over 50,000.
    with BatchServer(max_requests=max_requests) as server:
        replies = ask_all(server, tmp_path, texts, max_requests=max_requests)
    assert texts_of(replies) == [expected(text) for text in texts]
    assert server.batch_sizes() == sizes


@pytest.mark.parametrize(
    ("lines_per_file", "slack", "sizes"), [(3, 0, [3, 3, 1]), (3, -1, [2, 2, 2, 1])]
)
def test_files_are_split_at_the_byte_limit(tmp_path, lines_per_file, slack, sizes) -> None:
    texts = [f"question {i}" for i in range(7)]  # lines of equal length
    line_size = len(request_line(ask(texts[0]), MODEL, PARAMS)[1])
    assert {len(request_line(ask(t), MODEL, PARAMS)[1]) for t in texts} == {line_size}
    max_bytes = lines_per_file * line_size + slack
    with BatchServer(max_bytes=max_bytes) as server:
        replies = ask_all(server, tmp_path, texts, max_bytes=max_bytes)
    assert texts_of(replies) == [expected(text) for text in texts]
    assert server.batch_sizes() == sizes


def test_a_request_larger_than_a_file_fails_alone_and_sends_nothing(tmp_path) -> None:
    with BatchServer() as server:
        short, long = ask_all(server, tmp_path, ["short", "long " * 100], max_bytes=300)
    assert isinstance(short, Completion)
    assert isinstance(long, BackendError) and "does not fit a batch input file" in str(long)
    assert server.batch_sizes() == [1]


def test_one_model_per_file(tmp_path) -> None:
    texts = [f"question {i}" for i in range(5)]
    with BatchServer() as server:

        async def main() -> list[Completion | BaseException]:
            backend = make_backend(server, tmp_path)
            try:
                return await asyncio.gather(
                    *(
                        backend.complete(
                            LLMRequest(ask(t), ("fake-model", "other-model")[i % 2], PARAMS)
                        )
                        for i, t in enumerate(texts)
                    )
                )
            finally:
                await backend.aclose()

        replies = run(main)
    assert texts_of(replies) == [expected(text) for text in texts]
    assert sorted(server.batch_sizes()) == [2, 3]
    assert sorted(map(sorted, server.batch_models())) == [["fake-model"], ["other-model"]]


# -- what did not come back is asked again, and only that ------------------------------------

FLAKY = "[flaky]"


@pytest.mark.parametrize(
    ("row", "fate"),
    [
        ("error:500", Fate()),  # a failed row, in the error file
        ("output:500", Fate()),  # an HTTP error body in the output file
        ("output:429", Fate()),
        ("missing", Fate()),  # a completed batch without the row
        ("garbled", Fate()),  # a broken line where the row should be
        ("malformed", Fate()),  # a 200 row that is not a chat completion
        ("unfinished", Fate(status="expired")),
        ("unfinished", Fate(status="cancelled")),
        ("error:503", Fate(null_error=True)),  # failed rows, and no error file at all
    ],
)
def test_rows_without_an_answer_are_submitted_again_and_only_they(tmp_path, row, fate) -> None:
    texts = [f"question {i}" for i in range(6)] + [f"question {i} {FLAKY}" for i in range(3)]

    def row_fate(line: dict[str, Any], times: int) -> str:
        return row if FLAKY in content_of(line) and times == 0 else "ok"

    with BatchServer(row_fate=row_fate, batch_fate=lambda n: fate if n == 0 else Fate()) as server:
        replies = ask_all(server, tmp_path, texts, retries=2)
    assert texts_of(replies) == [expected(text) for text in texts]
    assert {text: server.submitted[custom_id(text)] for text in texts} == {
        text: 2 if FLAKY in text else 1 for text in texts
    }
    assert set(server.answered.values()) == {1}


def test_a_completed_batch_without_an_output_file_resubmits_its_rows(tmp_path) -> None:
    texts = [f"question {i}" for i in range(4)]
    fates = lambda n: Fate(null_output=True) if n == 0 else Fate()  # noqa: E731
    with BatchServer(batch_fate=fates) as server:
        replies = ask_all(server, tmp_path, texts, retries=2)
    assert texts_of(replies) == [expected(text) for text in texts]
    assert server.created()[0]["output_file_id"] is None
    assert server.batch_sizes() == [4, 4]


@pytest.mark.parametrize(
    ("text", "row", "error"),
    [
        ("question [rejected]", "output:400", BackendError),
        ("question [rejected]", "error:400", BackendError),
        ("<instruction>\n[too-long]\n</instruction>", "ok", ContextLengthExceeded),
    ],
)
def test_a_refused_row_is_the_request_s_answer_for_good(tmp_path, text, row, error) -> None:
    """Read like a live 400: the engine's error, never resubmitted, kept across a restart."""
    row_fate = lambda line, times: row if "[rejected]" in content_of(line) else "ok"  # noqa: E731
    with BatchServer(row_fate=row_fate) as server:

        async def main() -> list[Completion | BaseException]:
            first = make_backend(server, tmp_path)
            try:
                replies = await complete_all(first, [text, "fine"], retries=2)
            finally:
                await first.aclose()
            sent = len(server.requests)
            again = make_backend(server, tmp_path)
            try:
                replies += await complete_all(again, [text], retries=2)
            finally:
                await again.aclose()
            assert len(server.requests) == sent  # from results.jsonl: nothing asked
            return replies

        refused, fine, refused_again = run(main)
    assert type(refused) is error and type(refused_again) is error
    assert str(refused) == str(refused_again)
    assert isinstance(fine, Completion)
    assert server.submitted[custom_id(text)] == 1


def test_a_batch_that_fails_validation_stops_the_run_with_its_reason(tmp_path) -> None:
    errors = [{"code": "invalid_request", "message": "the input file is wrong", "line": 2}]
    with BatchServer(batch_fate=lambda n: Fate(status="failed", errors=errors)) as server:
        replies = ask_all(server, tmp_path, ["a", "b"], retries=2)
    assert all(isinstance(reply, BatchFailed) for reply in replies)
    assert "failed validation: invalid_request: the input file is wrong (line 2)" in str(replies[0])
    assert not isinstance(replies[0], BackendError)  # no item is eliminated for it
    assert server.batch_sizes() == [2]


def test_a_batch_refused_for_the_enqueued_token_limit_is_submitted_again(tmp_path) -> None:
    limit = [{"code": "token_limit_exceeded", "message": "Enqueued token limit reached"}]
    fates = lambda n: Fate(status="failed", errors=limit) if n == 0 else Fate()  # noqa: E731
    with BatchServer(batch_fate=fates) as server:
        replies = ask_all(server, tmp_path, ["a", "b"], retries=2)
    assert texts_of(replies) == [expected("a"), expected("b")]
    assert [batch["status"] for batch in server.created()] == ["failed", "completed"]


# -- create calls: never twice ---------------------------------------------------------------


@pytest.mark.parametrize(("fault", "creates"), [("after", 1), ("before", 2)])
def test_a_create_call_that_fails_is_looked_up_before_it_is_sent_again(
    tmp_path, fault, creates
) -> None:
    """A 500 after the server created the batch must not create a second one."""
    with BatchServer(create_faults=[fault]) as server:
        replies = ask_all(server, tmp_path, ["a", "b"])
    assert texts_of(replies) == [expected("a"), expected("b")]
    assert server.requests.count("POST /v1/batches") == creates
    assert server.batch_sizes() == [2]
    assert "GET /v1/batches" in server.requests


def test_a_refused_create_call_gives_the_batch_up_and_says_why(tmp_path) -> None:
    with BatchServer(create_faults=["refuse"]) as server:
        replies = ask_all(server, tmp_path, ["a", "b"])
    assert all(isinstance(reply, BatchFailed) for reply in replies)
    assert "could not create a batch" in str(replies[0]) and "refused" in str(replies[0])
    assert events(tmp_path) == ["intent", "abandoned"]
    assert server.batches == {}


def test_a_batch_the_server_does_not_know_stops_and_is_not_submitted_again(tmp_path) -> None:
    """A 404 for a batch this run made means another server or another project's key far
    more often than a batch gone for good: its rows may run and be paid for, so they are not
    submitted again; the batch stays open, and the next process asks for it again."""
    with BatchServer(hold=True) as server:

        async def main() -> list[Completion | BaseException]:
            backend = make_backend(server, tmp_path)
            asked = asyncio.ensure_future(complete_all(backend, ["a", "b"], retries=2))
            await until(lambda: server.requests.count("GET /v1/batches/batch_1") >= 1)
            server.forget("batch_1")
            try:
                return await asked
            finally:
                await backend.aclose()

        replies = run(main)
    assert all(isinstance(reply, BatchUnknown) for reply in replies)
    assert "does not know the batch (batch batch_1" in str(replies[0])
    assert "--base-url" in str(replies[0])
    assert set(server.submitted.values()) == {1} and list(server.batches) == []
    assert events(tmp_path) == ["intent", "created"]  # still open


def test_an_output_file_the_server_does_not_know_is_not_read_as_missing_rows(tmp_path) -> None:
    with BatchServer() as server:
        server.missing_files = True
        replies = ask_all(server, tmp_path, ["a", "b"], retries=3)
    assert all(isinstance(reply, BatchUnknown) for reply in replies)
    assert "does not know its file" in str(replies[0])
    assert set(server.submitted.values()) == {1}  # not 4 times, once a retry
    assert events(tmp_path) == ["intent", "created"]


# -- restarts --------------------------------------------------------------------------------


def test_a_restart_returns_answered_rows_without_any_request(tmp_path) -> None:
    texts = [f"question {i}" for i in range(5)]
    with BatchServer() as server:

        async def main() -> tuple[list[Any], list[Any]]:
            first = make_backend(server, tmp_path)
            try:
                replies = await complete_all(first, texts)
            finally:
                await first.aclose()
            sent = len(server.requests)
            again = make_backend(server, tmp_path)
            try:
                replayed = await complete_all(again, texts)
            finally:
                await again.aclose()
            assert len(server.requests) == sent
            return replies, replayed

        replies, replayed = run(main)
    assert texts_of(replayed) == texts_of(replies) == [expected(t) for t in texts]


def test_a_restart_waits_on_a_pending_batch_without_resubmitting(tmp_path) -> None:
    texts = [f"question {i}" for i in range(5)]
    with BatchServer(hold=True) as server:

        async def main() -> list[Completion | BaseException]:
            first = make_backend(server, tmp_path)
            asked = asyncio.ensure_future(complete_all(first, texts))
            await until(lambda: "created" in events(tmp_path))
            await first.aclose()  # the process ends with the batch in progress
            asked.cancel()
            again = make_backend(server, tmp_path)
            try:
                waiting = asyncio.ensure_future(complete_all(again, texts))
                await until(lambda: server.requests.count("GET /v1/batches/batch_1") >= 2)
                server.release()
                return await waiting
            finally:
                await again.aclose()

        replies = run(main)
    assert texts_of(replies) == [expected(t) for t in texts]
    assert server.batch_sizes() == [5]
    assert set(server.submitted.values()) == {1}


def test_a_crash_between_create_and_its_record_reattaches_by_token(tmp_path) -> None:
    """batches.jsonl holds the intent only: the batch is found in the list (on its second
    page here, behind a newer batch of another run) and nothing is submitted again."""
    texts = [f"question {i}" for i in range(5)]
    with BatchServer(hold=True, page_size=1) as server:

        async def main() -> list[Completion | BaseException]:
            first = make_backend(server, tmp_path / "run")
            asked = asyncio.ensure_future(complete_all(first, texts))
            await until(lambda: "created" in events(tmp_path / "run"))
            await first.aclose()
            asked.cancel()
            state = tmp_path / "run" / STATE_FILE
            intent = state.read_text().splitlines()[0]
            state.write_text(intent + "\n")  # as if killed before the id was written
            other = make_backend(server, tmp_path / "other-run")
            newer = asyncio.ensure_future(complete_all(other, ["another run's question"]))
            await until(lambda: len(server.batches) == 2)
            server.release()
            again = make_backend(server, tmp_path / "run")
            try:
                return await complete_all(again, texts)
            finally:
                await again.aclose()
                await newer
                await other.aclose()

        replies = run(main)
    assert texts_of(replies) == [expected(t) for t in texts]
    assert server.batch_sizes() == [5, 1]
    assert set(server.submitted.values()) == {1}
    assert server.requests.count("GET /v1/batches") == 2  # two pages of one batch each
    assert events(tmp_path / "run") == ["intent", "created", "ended"]


def test_an_intent_the_server_never_saw_is_given_up_and_submitted_once(tmp_path) -> None:
    texts = ["a", "b"]
    intent = {
        "event": "intent",
        "token": "0" * 32,
        "model": MODEL,
        "input_file_id": "file-never-used",
        "custom_ids": [custom_id(text) for text in texts],
        "at": 0,
    }
    (tmp_path / STATE_FILE).write_text(json.dumps(intent) + "\n")
    with BatchServer() as server:
        replies = ask_all(server, tmp_path, texts)
    assert texts_of(replies) == [expected(t) for t in texts]
    assert server.batch_sizes() == [2]
    assert events(tmp_path) == ["intent", "abandoned", "intent", "created", "ended"]


CHILD = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path
    from evol.llm import BackendSettings, GenerationParams, LLMRequest
    from evol.llm.batch import BatchBackend, BatchSettings

    async def main(url, state_dir, count):
        backend = BatchBackend(
            BackendSettings(base_urls=[url]),
            BatchSettings(state_dir=Path(state_dir), quiet_period=0.05, poll_interval=0.02),
        )
        await asyncio.gather(*(
            backend.complete(LLMRequest([{"role": "user", "content": f"question {i}"}], "fake-model", GenerationParams()))
            for i in range(count)
        ))
        print("finished")  # never reached: the batch is held until the kill

    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
    """
)


@pytest.mark.parametrize("moment", ["create unanswered", "batch in progress"])
@pytest.mark.slow
def test_kill_9_while_batches_are_pending_then_restart_pays_nothing_twice(tmp_path, moment):
    texts = [f"question {i}" for i in range(20)]
    hold_create = moment == "create unanswered"
    with BatchServer(hold=True, hold_create=hold_create) as server:
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, server.base_url, str(tmp_path), str(len(texts))],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            if hold_create:  # the batch exists; its id never reached the child
                server.wait_until(lambda: server.held_creates == 1)
            else:  # the child has recorded the batch and is polling it
                server.wait_until(lambda: server.requests.count("GET /v1/batches/batch_1") >= 1)
        finally:
            os.kill(child.pid, signal.SIGKILL)
            child.communicate()
        assert child.returncode == -signal.SIGKILL
        assert events(tmp_path) == (["intent"] if hold_create else ["intent", "created"])
        server.release()

        replies = ask_all(server, tmp_path, texts)
    assert texts_of(replies) == [expected(t) for t in texts]
    assert server.batch_sizes() == [20]
    assert set(server.submitted.values()) == {1} and len(server.submitted) == 20


# -- no_wait ---------------------------------------------------------------------------------


def test_no_wait_raises_batch_pending_and_the_next_process_collects(tmp_path) -> None:
    texts = [f"question {i}" for i in range(4)]
    with BatchServer(hold=True) as server:
        first = ask_all(server, tmp_path, texts, no_wait=True)
        assert all(isinstance(r, BatchPending) and r.batch_id == "batch_1" for r in first)
        assert events(tmp_path) == ["intent", "created"]
        second = ask_all(
            server, tmp_path, texts, no_wait=True
        )  # still in progress: pending again, nothing new sent
        assert all(isinstance(r, BatchPending) for r in second)
        assert server.requests.count("POST /v1/batches") == 1
        server.release()
        third = ask_all(server, tmp_path, texts, no_wait=True)
    assert texts_of(third) == [expected(t) for t in texts]
    assert set(server.submitted.values()) == {1}


# -- state files -----------------------------------------------------------------------------


def test_torn_last_lines_are_cut_and_the_next_line_starts_clean(tmp_path) -> None:
    texts = ["a", "b"]
    with BatchServer() as server:
        ask_all(server, tmp_path, texts)
        state, results = tmp_path / STATE_FILE, tmp_path / RESULTS_FILE
        whole = state.read_bytes(), results.read_bytes()
        with state.open("ab") as out:
            out.write(b'{"event": "intent", "tok')
        with results.open("ab") as out:
            out.write(b'{"custom_id": "evol-')
        sent = len(server.requests)
        replies = ask_all(server, tmp_path, texts)
        assert len(server.requests) == sent
        assert (state.read_bytes(), results.read_bytes()) == whole
        ask_all(server, tmp_path, ["c"])  # a new batch: its lines start on lines of their own
    assert events(tmp_path) == ["intent", "created", "ended"] * 2
    assert texts_of(replies) == [expected(t) for t in texts]


def test_the_state_directory_is_made_only_when_a_request_is_sent(tmp_path) -> None:
    """The backend exists before the run directory is claimed: it must not write there yet."""
    state_dir = tmp_path / "run" / "batch"
    BatchBackend(
        BackendSettings(base_urls=["http://127.0.0.1:9/v1"]), BatchSettings(state_dir=state_dir)
    )
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("name", [STATE_FILE, RESULTS_FILE])
def test_a_damaged_line_before_the_end_is_an_error_naming_the_file(tmp_path, name) -> None:
    (tmp_path / name).write_bytes(b"{not json\n" + b'{"event": "ended"}\n')
    backend = BatchBackend(
        BackendSettings(base_urls=["http://127.0.0.1:9/v1"]), BatchSettings(state_dir=tmp_path)
    )
    with pytest.raises(RunDirError, match=f"{name}:1: a damaged line"):
        backend.batches()


def test_the_state_is_read_on_first_use_not_before_the_run_holds_its_lock(tmp_path) -> None:
    """Reading cuts a torn last line: the backend is made before the run directory is locked
    (and emptied by --overwrite), so it must not read, let alone cut, anything yet."""
    torn = b'{"event": "intent", "tok'
    (tmp_path / STATE_FILE).write_bytes(torn)
    backend = BatchBackend(
        BackendSettings(base_urls=["http://127.0.0.1:9/v1"]), BatchSettings(state_dir=tmp_path)
    )
    assert (tmp_path / STATE_FILE).read_bytes() == torn
    assert backend.batches() == [] and backend.pending() == 0
    assert (tmp_path / STATE_FILE).read_bytes() == b""


def test_batches_reports_each_batch_for_progress_and_run_json(tmp_path) -> None:
    with BatchServer(max_requests=2) as server:

        async def main() -> list[Any]:
            backend = make_backend(server, tmp_path, max_requests=2)
            try:
                await complete_all(backend, ["a", "b", "c"])
                return [info.model_dump() for info in backend.batches()]
            finally:
                await backend.aclose()

        batches = run(main)
    assert [(b["id"], b["status"], b["requests"]) for b in batches] == [
        ("batch_1", "completed", 2),
        ("batch_2", "completed", 1),
    ]
    assert batches[0]["request_counts"] == {"total": 2, "completed": 2, "failed": 0}
    assert batches[0]["input_file_id"] and batches[0]["output_file_id"]
    assert batches[0]["error_file_id"] is None


# -- the server's other answers --------------------------------------------------------------


def test_the_key_is_sent_and_never_written_or_shown(tmp_path) -> None:
    key = "sk-test-0123456789abcdef"
    with BatchServer(api_key=key) as server:
        good = ask_all(server, tmp_path / "good", ["a"], api_key=key)
        wrong = ask_all(server, tmp_path / "wrong", ["a"], api_key="sk-wrong-key-000")
        assert server.headers[0]["Authorization"] == f"Bearer {key}"
    assert isinstance(good[0], Completion)
    assert isinstance(wrong[0], AuthenticationFailed) and "wrong" not in str(wrong[0])
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert key.encode() not in path.read_bytes()


def test_a_server_without_the_batch_api_is_one_clear_error(tmp_path) -> None:
    with BatchServer(has_batch_api=False) as server:
        (error,) = ask_all(server, tmp_path, ["a"])
    assert isinstance(error, UsageError) and "has no Batch API" in str(error)


def test_an_output_file_over_the_cap_is_not_kept(tmp_path) -> None:
    with BatchServer() as server:
        (error,) = ask_all(server, tmp_path, ["a"], max_output_bytes=100, max_retries=0)
    assert isinstance(error, TransientBackendError) and "max_output_bytes" in str(error)
    assert not (tmp_path / RESULTS_FILE).exists()
    assert list((tmp_path / "tmp").iterdir()) == []


# -- a row over --max-response-mb -------------------------------------------------------------

CAP = 1 << 20
HUGE = 3 << 20


def test_a_row_over_the_reply_cap_is_asked_again_then_fails_and_is_never_kept(tmp_path) -> None:
    texts = ["question 1", "question 2 [huge]"]
    row_fate = lambda line, _times: f"huge:{HUGE}" if "[huge]" in content_of(line) else "ok"  # noqa: E731
    with BatchServer(row_fate=row_fate) as server:
        fine, huge = ask_all(server, tmp_path, texts, retries=1, max_response_bytes=CAP)
    assert isinstance(fine, Completion) and fine.text == expected(texts[0])
    assert isinstance(huge, TransientBackendError), huge
    assert "over the 1,048,576-byte cap (--max-response-mb)" in str(huge)
    assert server.submitted[custom_id(texts[1])] == 2  # asked again once, then failed
    assert (tmp_path / RESULTS_FILE).stat().st_size < 10_000  # never kept


def _row(custom_id: str, text: str, *, id_last: bool = False) -> bytes:
    response = {"status_code": 200, "body": {"choices": [{"message": {"content": text}}]}}
    row = {"response": response, "custom_id": custom_id} if id_last else {
        "id": "r", "custom_id": custom_id, "response": response
    }  # fmt: skip
    return json.dumps(row).encode() + b"\n"


@pytest.mark.parametrize("id_last", [False, True], ids=["custom_id first", "custom_id last"])
def test_the_row_reader_never_holds_a_row_over_the_cap(tmp_path, id_last) -> None:
    small, huge = _row("evol-a", "hi"), _row("evol-b", "x" * 8 * CAP, id_last=id_last)
    path = tmp_path / "output.jsonl"
    path.write_bytes(small + huge + small + huge[: CAP // 2])  # a torn last line, under the cap
    tracemalloc.start()
    try:
        with path.open("rb") as lines:
            rows = list(bounded_lines(lines, CAP))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert rows == [small, OversizeRow("evol-b", len(huge)), small, huge[: CAP // 2]]
    # readline(cap) may join its pieces (two caps' worth at once), never the whole 8 MB row.
    assert peak < 3 * CAP


def test_a_batch_run_fails_the_step_whose_row_is_over_the_cap(tmp_path, evol) -> None:
    seeds = write_seeds(
        tmp_path / "seeds.jsonl",
        [{"instruction": "Explain topic 1."}, {"instruction": "Explain topic 2 [huge]."}],
    )
    out = tmp_path / "out"
    row_fate = lambda line, _times: f"huge:{HUGE}" if "[huge]" in json.dumps(line) else "ok"  # noqa: E731
    with BatchServer(row_fate=row_fate) as server:
        result = evol(
            "run", seeds, "--out", out, "--base-url", server.base_url, "--batch",
            "--batch-poll-interval", "0.02", "--model", MODEL, "--generations", "0",
            "--max-response-mb", "1", "--max-retries", "1", "--retry-max-wait", "0.01",
            "--quiet", "--json",
        )  # fmt: skip
    assert result.exit_code == 1, result.output
    (failed,) = json.loads(result.stdout)["failed"]
    assert "--max-response-mb" in failed["error"]
    assert [r["instruction"] for r in map(json.loads, (out / "dataset.jsonl").open())] == [
        "Explain topic 1."
    ]
    assert sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) < 1 << 20


# -- through the engine ----------------------------------------------------------------------


@pytest.mark.slow
def test_an_evol_run_through_the_batch_backend(tmp_path, evol) -> None:
    """The engine does not know about batches: a whole run, then a resume that extends it by a
    round; every request is paid once."""
    seeds = write_seeds(
        tmp_path / "seeds.jsonl", [{"instruction": f"Explain topic {i}."} for i in range(6)]
    )
    with BatchServer() as server:
        for generations in ("2", "3"):
            result = evol(
                "run", seeds, "--out", tmp_path / "out", "--base-url", server.base_url,
                "--batch", "--batch-poll-interval", "0.02", "--model", MODEL,
                "--generations", generations, "--quiet",
            )  # fmt: skip
            assert result.exit_code == 0, result.output
            assert_valid_run(tmp_path / "out")
            if generations == "2":
                first_run = sum(server.submitted.values())
    assert set(server.submitted.values()) == {1}
    assert first_run < sum(server.submitted.values())
    assert len(server.batches) >= 4  # seeds' answers, then each round's steps


@pytest.mark.parametrize("name", [STATE_FILE, RESULTS_FILE, "tmp"])
def test_a_link_in_the_state_directory_is_refused_and_nothing_behind_it_touched(
    tmp_path, name
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    target = elsewhere / ("dir" if name == "tmp" else "file")
    if name == "tmp":
        target.mkdir()
        (target / "thesis.tmp").write_text("mine")
    else:
        target.write_bytes(b'{"torn')
    state = tmp_path / "state"
    state.mkdir()
    (state / name).symlink_to(target)
    backend = BatchBackend(
        BackendSettings(base_urls=["http://127.0.0.1:9/v1"]), BatchSettings(state_dir=state)
    )
    with pytest.raises(RunDirError, match="is a symbolic link"):
        backend.batches()
    kept = (target / "thesis.tmp") if name == "tmp" else target
    assert kept.read_bytes() == (b"mine" if name == "tmp" else b'{"torn')


# -- found by the third mutation round ---------------------------------------------------------


# -- evol run --batch: a look at another run's batches changes nothing ----------------------------


def test_the_check_for_a_runs_batches_leaves_a_line_being_written_alone(
    evol, tmp_path: Path
) -> None:
    """Before it takes the run's lock, `evol run` reads the batch state to refuse what would
    pay again. A `--batch` run may be writing that file's last line right then: the check
    must not cut it as torn, or the batch it records would be forgotten, and paid again."""
    from tests.support.batch_server import BatchServer

    seeds = write_seeds(tmp_path / "seeds.jsonl", [{"instruction": "Write a haiku about the sea"}])
    out = tmp_path / "batch"
    fast = ("--batch-poll-interval", "0.05", "--retry-max-wait", "0.05", "--model", "fake-model")
    with BatchServer(hold=True) as server, FakeServer() as live:
        made = evol(
            "run", seeds, "--out", out, "--base-url", server.base_url, "--batch", *fast,
            "--batch-no-wait", "--quiet",
        )  # fmt: skip
        assert made.exit_code == 3, made.output
        state = out / "batch" / "batches.jsonl"
        with state.open("ab") as writing:
            writing.write(b'{"event": "created", "ba')  # the other run, mid-line
        before = state.read_bytes()
        resumed = evol(
            "run", seeds, "--out", out, "--base-url", live.base_url, "--model", "fake-model",
            "--generations", "2", "--quiet",
        )  # fmt: skip
        assert resumed.exit_code == 2 and not live.requests
        assert state.read_bytes() == before


# -- a batch whose id was never recorded, and an open batch asked in part (found by mutation testing) ---


class CursorlessList(BatchServer):
    """A compatible server whose list pages carry no `last_id`: the next page is asked for
    after the last batch of this one."""

    async def _list(self, request: web.Request) -> web.Response:
        page = json.loads((await super()._list(request)).body)
        page["last_id"] = None
        return web.json_response(page)


def crash_before_the_id_is_recorded(server: BatchServer, run: Path, texts: list[str]) -> None:
    """The first process creates the batch and dies before writing its id."""

    async def main() -> None:
        first = make_backend(server, run)
        asked = asyncio.ensure_future(complete_all(first, texts))
        await until(lambda: "created" in events(run))
        await first.aclose()
        asked.cancel()

    asyncio.run(main())
    intent = (run / STATE_FILE).read_text().splitlines()[0]
    (run / STATE_FILE).write_text(intent + "\n")


def test_a_batch_is_found_by_its_token_in_a_list_without_cursors_and_paid_once(
    tmp_path: Path,
) -> None:
    """Behind three newer batches of other runs, on a fourth page of one batch each; found,
    and already ended, its answers are collected as they are, and nothing is submitted again."""
    texts = [f"question {i}" for i in range(3)]
    with CursorlessList(hold=True, page_size=1) as server:
        crash_before_the_id_is_recorded(server, tmp_path / "run", texts)
        server.release()
        for other in range(3):
            replies = asyncio.run(
                _ask_once(server, tmp_path / f"other-{other}", [f"another run's {other}"])
            )
            assert texts_of(replies) == [expected(f"another run's {other}")]
        ours = server.batches["batch_1"]
        server._finish(ours)  # it ended while no process of its run was there
        replies = asyncio.run(_ask_once(server, tmp_path / "run", texts))
    assert texts_of(replies) == [expected(t) for t in texts]
    assert server.batch_sizes() == [3, 1, 1, 1]
    assert set(server.submitted.values()) == {1}
    assert events(tmp_path / "run") == ["intent", "created", "ended"]


async def _ask_once(server: BatchServer, run: Path, texts: list[str]) -> list:
    backend = make_backend(server, run)
    try:
        return await complete_all(backend, texts)
    finally:
        await backend.aclose()


def test_with_no_wait_an_earlier_batch_asked_in_part_is_pending_not_sent_again(
    tmp_path: Path,
) -> None:
    """A rerun that asks one row of an earlier process's open batch (the others were eliminated
    meanwhile, or are not reached yet) is told it is pending; its batch is not sent again."""
    texts = [f"question {i}" for i in range(4)]
    with BatchServer(hold=True) as server:
        first = asyncio.run(_ask_once_no_wait(server, tmp_path, texts))
        assert all(isinstance(r, BatchPending) for r in first)
        again = asyncio.run(_ask_once_no_wait(server, tmp_path, texts[:1]))
        assert [type(r) for r in again] == [BatchPending]
        assert server.requests.count("POST /v1/batches") == 1
        server.release()
        done = asyncio.run(_ask_once_no_wait(server, tmp_path, texts))
    assert texts_of(done) == [expected(t) for t in texts]
    assert set(server.submitted.values()) == {1}


async def _ask_once_no_wait(server: BatchServer, run: Path, texts: list[str]) -> list:
    backend = make_backend(server, run, no_wait=True)
    try:
        return await complete_all(backend, texts)
    finally:
        await backend.aclose()
