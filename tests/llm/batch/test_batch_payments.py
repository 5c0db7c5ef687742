"""What a batch run pays (issue #22's mutation testing found these unguarded): a row at most once,
a batch the server did create never again, a request in at most --max-retries + 1 batches
counted across processes (tests/support/batch_server.py counts what a user pays for); and a
custom_id that names everything a request is: its step, model, messages and options.
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evol.errors import BackendError, TransientBackendError
from evol.llm import Completion, GenerationParams
from evol.llm.batch import STATE_FILE, request_line
from tests.support.batch_backend import (
    MODEL,
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

KEY = "sk-test-MUTANTS-0123456789abcdef"


# -- the batch backend: what is paid, and how often ------------------------------------------


# These tests submit a batch 0.02 s after its last request (the batch tests wait 0.05 s).
batch_backend = functools.partial(make_backend, quiet_period=0.02)


one_process = functools.partial(ask_all, quiet_period=0.02)


def intent(texts: list[str], token: str = "0" * 32) -> dict[str, Any]:
    return {
        "event": "intent",
        "token": token,
        "model": MODEL,
        "input_file_id": "file-never-used",
        "custom_ids": [custom_id(text) for text in texts],
        "at": 0,
    }


def fails_first(text_marker: str) -> Callable[[dict[str, Any], int], str]:
    """A row fate: rows whose question holds the marker fail (HTTP 500) the first time."""
    return lambda line, times: (
        "error:500" if text_marker in content_of(line) and not times else "ok"
    )


def test_a_batch_given_up_before_it_was_made_is_not_counted_against_the_retries(tmp_path) -> None:
    """batches.jsonl says a batch was given up (the server never made it): its requests were
    never paid, so with --max-retries 0 they still get their one submission."""
    lines = [intent(["a", "b"]), {"event": "abandoned", "token": "0" * 32}]
    (tmp_path / STATE_FILE).write_text("".join(json.dumps(line) + "\n" for line in lines))
    with BatchServer() as server:
        replies = one_process(server, tmp_path, ["a", "b"], max_retries=0)
    assert texts_of(replies) == [expected("a"), expected("b")]
    assert server.submitted == {custom_id("a"): 1, custom_id("b"): 1}


def test_an_intent_the_server_never_saw_leaves_every_retry_to_its_requests(tmp_path) -> None:
    """An intent with no batch behind it is given up and its requests submitted anew: that
    first real submission is the first one counted, so a failed row still gets its retry."""
    (tmp_path / STATE_FILE).write_text(json.dumps(intent(["a [flaky]", "b"])) + "\n")
    with BatchServer(row_fate=fails_first("[flaky]")) as server:
        replies = one_process(server, tmp_path, ["a [flaky]", "b"], retries=1, max_retries=1)
    assert texts_of(replies) == [expected("a [flaky]"), expected("b")]
    assert server.submitted == {custom_id("a [flaky]"): 2, custom_id("b"): 1}
    assert set(server.answered.values()) == {1}


def test_a_request_is_submitted_in_at_most_max_retries_plus_one_batches(tmp_path) -> None:
    """In one process too: the engine may ask more often, the backend submits no more."""
    doomed = lambda line, _times: "error:500" if "[doomed]" in content_of(line) else "ok"  # noqa: E731
    with BatchServer(row_fate=doomed) as server:
        fine, lost = one_process(
            server, tmp_path, ["fine", "lost [doomed]"], retries=4, max_retries=1
        )
    assert isinstance(fine, Completion)
    assert isinstance(lost, TransientBackendError) and "raise --max-retries" in str(lost)
    assert "in the 2 batches" in str(lost)
    assert server.submitted[custom_id("lost [doomed]")] == 2


def test_submissions_are_counted_across_processes(tmp_path) -> None:
    """One submission in a first process, then a process that may retry four times: two more
    at most with --max-retries 2."""
    doomed = lambda line, _times: "error:500" if "[doomed]" in content_of(line) else "ok"  # noqa: E731
    with BatchServer(row_fate=doomed) as server:
        (first,) = one_process(server, tmp_path, ["q [doomed]"], max_retries=2)
        (second,) = one_process(server, tmp_path, ["q [doomed]"], retries=4, max_retries=2)
    assert isinstance(first, TransientBackendError) and isinstance(second, TransientBackendError)
    assert "in the 3 batches" in str(second)
    assert server.submitted[custom_id("q [doomed]")] == 3


def test_a_request_waiting_in_a_running_batch_is_not_refused_by_the_count(tmp_path) -> None:
    """With --max-retries 0 a restarted process waits for the batch that holds its request:
    that one submission is not a reason to refuse it."""
    with BatchServer(hold=True) as server:

        async def main() -> list[Completion | BaseException]:
            first = batch_backend(server, tmp_path, max_retries=0)
            asked = asyncio.ensure_future(complete_all(first, ["a", "b"]))
            await until(lambda: "created" in events(tmp_path))
            await first.aclose()  # the process ends with its batch in progress
            asked.cancel()
            again = batch_backend(server, tmp_path, max_retries=0)
            try:
                waiting = asyncio.ensure_future(complete_all(again, ["a", "b"]))
                await until(lambda: server.requests.count("GET /v1/batches/batch_1") >= 2)
                server.release()
                return await waiting
            finally:
                await again.aclose()

        replies = asyncio.run(main())
    assert texts_of(replies) == [expected("a"), expected("b")]
    assert server.batch_sizes() == [2]


def test_a_create_call_whose_answer_was_lost_is_found_not_paid_again(tmp_path) -> None:
    """The server made the batch but its answer was a 500, and no retry is left: the batch may
    exist, so it stays open; the poller finds it by its token and the retry waits for it."""
    with BatchServer(create_faults=["after"]) as server:
        replies = one_process(server, tmp_path, ["a", "b"], retries=1, max_retries=0)
    assert texts_of(replies) == [expected("a"), expected("b")]
    assert server.batch_sizes() == [2]
    assert set(server.submitted.values()) == {1}
    assert events(tmp_path) == ["intent", "created", "ended"]


def test_an_answered_request_asked_again_in_the_same_process_is_not_sent(tmp_path) -> None:
    with BatchServer() as server:

        async def main() -> tuple[list[Any], list[Any]]:
            backend = batch_backend(server, tmp_path)
            try:
                return await complete_all(backend, ["a"]), await complete_all(backend, ["a", "b"])
            finally:
                await backend.aclose()

        first, again = asyncio.run(main())
    assert texts_of(first) + texts_of(again) == [expected("a"), expected("a"), expected("b")]
    assert server.batch_sizes() == [1, 1]  # only "b" went in the second batch
    assert set(server.answered.values()) == {1}


def test_an_error_row_that_echoes_the_key_is_kept_without_it(tmp_path) -> None:
    """A 400 row is the request's answer for good, kept in results.jsonl: the server's words
    in it may hold the key, which is written nowhere."""
    rejected = lambda line, _times: "output:400" if "[rejected]" in content_of(line) else "ok"  # noqa: E731
    echo = lambda line: f"Invalid request for key {KEY}: bad parameter"  # noqa: E731
    with BatchServer(row_fate=rejected, error_text=echo, api_key=KEY) as server:
        refused, fine = one_process(server, tmp_path, ["q [rejected]", "fine"], api_key=KEY)
    assert type(refused) is BackendError and "bad parameter" in str(refused)
    assert KEY not in str(refused) and isinstance(fine, Completion)
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert KEY.encode() not in path.read_bytes(), path


# A process of a batch run: which rows fail the first time they run, how their batch ends,
# what the create call meets, and where the process stops before a second one resumes.
ROW_FATES = st.sampled_from(["ok", "ok", "error:500", "unfinished", "missing", "garbled"])


STOPS = ["never", "create unanswered", "batch in progress"]


@pytest.mark.parametrize("create_fault", [None, "after", "before"])
@pytest.mark.parametrize("stop", STOPS)
@settings(max_examples=3, deadline=None, derandomize=True)
@given(
    fates=st.lists(ROW_FATES, min_size=1, max_size=5),
    ending=st.sampled_from(["completed", "expired", "cancelled"]),
)
def test_a_batch_run_stopped_anywhere_and_resumed_pays_each_row_at_most_once(
    tmp_path_factory, create_fault, stop, fates, ending
) -> None:
    state = tmp_path_factory.mktemp("state")
    texts = [f"question {i}" for i in range(len(fates))]
    fate_of = {custom_id(text): fate for text, fate in zip(texts, fates, strict=True)}

    def row_fate(line: dict[str, Any], times: int) -> str:
        return fate_of[line["custom_id"]] if times == 0 else "ok"

    first_batch = lambda n: Fate(status=ending) if n == 0 else Fate()  # noqa: E731
    server = BatchServer(
        row_fate=row_fate,
        batch_fate=first_batch,
        create_faults=[create_fault] if create_fault else [],
        hold=stop == "batch in progress",
        hold_create=stop == "create unanswered",
    )
    with server:

        async def main() -> list[Completion | BaseException]:
            if stop != "never":
                first = batch_backend(server, state)
                asked = asyncio.ensure_future(complete_all(first, texts, retries=3))
                await until(lambda: bool(server.batches))
                await first.aclose()
                asked.cancel()
                server.release()
            again = batch_backend(server, state)
            try:
                return await complete_all(again, texts, retries=3)
            finally:
                await again.aclose()

        replies = asyncio.run(main())
    assert texts_of(replies) == [expected(text) for text in texts]
    assert set(server.answered.values()) == {1}  # each row paid once
    # In one batch each; a row that got no answer the first time in exactly one more.
    assert server.submitted == {c: 1 if fate == "ok" else 2 for c, fate in fate_of.items()}
    assert sum(server.batch_sizes()) == sum(server.submitted.values())


# -- custom_id --------------------------------------------------------------------------------

REQUESTS = st.tuples(
    st.lists(st.sampled_from(["q", "q ", "Q", "r"]), min_size=1, max_size=2),
    st.sampled_from(["fake-model", "other-model"]),
    st.sampled_from([None, 0.0, 0.5]),
    st.sampled_from([None, 16]),
    st.sampled_from([None, "s1.1/evolve", "s1.2/evolve", "s1.1/answer"]),
)


@settings(max_examples=100, deadline=None, derandomize=True)
@given(first=REQUESTS, second=REQUESTS)
def test_a_custom_id_names_the_step_model_messages_and_options(first, second) -> None:
    """Two requests share a row exactly when every part of them is the same."""

    def line(request: tuple[Any, ...]) -> tuple[str, bytes]:
        texts, model, temperature, max_tokens, step = request
        params = GenerationParams(temperature=temperature, max_tokens=max_tokens)
        return request_line([ask(text)[0] for text in texts], model, params, step)

    (first_id, first_line), (second_id, _) = line(first), line(second)
    assert (first_id == second_id) == (first == second)
    assert json.loads(first_line)["custom_id"] == first_id
    assert json.loads(first_line)["body"]["model"] == first[1]
