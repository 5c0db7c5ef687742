"""Promises of the batch backend that the fourth round of mutation survivors (checks 4,741 on,
#22) found unpinned: a batch whose id was never recorded is found again in a list that gives no
cursor of its own, and collected when it has already ended; with `no_wait`, an open batch of an
earlier process whose rows are asked only in part is reported pending, not resubmitted.

Each test drives the backend against the fake Files + Batches API, with the helpers of the batch
tests, so that it runs on 4f7dc9e's tree, where the mutants were found, as on `main`.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from aiohttp import web

from evol.llm.batch import STATE_FILE, BatchPending
from tests.llm.batch.test_batch import (
    complete_all,
    events,
    expected,
    make_backend,
    texts_of,
    until,
)
from tests.support.batch_server import BatchServer


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
