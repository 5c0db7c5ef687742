"""How a batch's end is kept, in a whole batch run against the fake Batch API: a later process
shows each ended batch as the process that saw it end did (its status, request counts and
files, which run.json lists), and an ended batch is neither polled nor downloaded again while
the run goes on.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path
from typing import Any

from evol.llm import BackendSettings, Completion, LLMRequest
from evol.llm.batch import STATE_FILE, BatchBackend, BatchInfo, BatchSettings
from tests.support.batch_backend import MODEL, PARAMS, ask
from tests.support.batch_server import BatchServer, Fate


def backend_on(server: BatchServer, state_dir: Path) -> BatchBackend:
    """A batch backend on `server`, its state in `state_dir`, with quick waits and polls."""
    return BatchBackend(
        BackendSettings(base_urls=[server.base_url]),
        BatchSettings(
            state_dir=state_dir,
            quiet_period=0.05,
            poll_interval=0.02,
            retry_max_wait=0.01,
            max_retries=0,
        ),
    )


async def ask_all(backend: BatchBackend, texts: list[str]) -> list[Completion | BaseException]:
    """Every text asked at once, no retry."""

    async def one(text: str) -> Completion:
        return await backend.complete(LLMRequest(ask(text), MODEL, PARAMS))

    async with asyncio.timeout(600):  # a guard against a hang, never a pace
        return await asyncio.gather(*(one(text) for text in texts), return_exceptions=True)


def row_fate(line: dict[str, Any], _times: int) -> str:
    """ "refused" is refused for good (a 400 in the error file), "late" is not run before its
    batch expires, the others are answered."""
    content = line["body"]["messages"][0]["content"]
    return {"refused": "error:400", "late": "unfinished"}.get(content, "ok")


def batch_fate(serial: int) -> Fate:
    """The first batch completes, the second expires."""
    return Fate(status="expired") if serial == 1 else Fate()


def two_batches(server: BatchServer, state_dir: Path) -> list[BatchInfo]:
    """One process's life: a batch that completes with an output and an error file, then,
    once it has ended, a batch that expires; the batches the process reports at its end."""

    async def main() -> list[BatchInfo]:
        backend = backend_on(server, state_dir)
        try:
            first = await ask_all(backend, ["answered", "refused"])
            assert isinstance(first[0], Completion), first
            second = await ask_all(backend, ["late"])
            assert not isinstance(second[0], Completion), second
            return backend.batches()
        finally:
            await backend.aclose()

    return asyncio.run(main())


def test_a_later_process_shows_each_ended_batch_as_the_process_that_saw_it_end(
    tmp_path: Path,
) -> None:
    """Status, request counts, output and error file: what run.json lists for each batch after
    a resume is what the first run listed."""
    with BatchServer(row_fate=row_fate, batch_fate=batch_fate) as server:
        seen = two_batches(server, tmp_path)

        async def later() -> list[BatchInfo]:
            backend = backend_on(server, tmp_path)
            try:
                return backend.batches()
            finally:
                await backend.aclose()

        shown = asyncio.run(later())
        objects = server.created()
    assert [(b.id, b.status) for b in seen] == [("batch_1", "completed"), ("batch_2", "expired")]
    assert [(b.output_file_id, b.error_file_id) for b in seen] == [
        (objects[0]["output_file_id"], objects[0]["error_file_id"]),
        (None, objects[1]["error_file_id"]),
    ]
    assert None not in (objects[0]["output_file_id"], objects[0]["error_file_id"])
    assert seen[0].request_counts == {"total": 2, "completed": 1, "failed": 1}
    assert shown == seen


def test_an_ended_batch_is_not_polled_or_downloaded_again(tmp_path: Path) -> None:
    """While a later batch runs, the first one, ended, is left alone: each file is downloaded
    once, and batches.jsonl records each end once."""
    with BatchServer(row_fate=row_fate, batch_fate=batch_fate) as server:
        two_batches(server, tmp_path)
        objects = server.created()
        requests = Counter(server.requests)
    files = [
        obj[name] for obj in objects for name in ("output_file_id", "error_file_id") if obj[name]
    ]
    assert len(files) == 3
    assert {
        file_id: requests[f"GET /v1/files/{file_id}/content"] for file_id in files
    } == dict.fromkeys(files, 1)
    lines = (tmp_path / STATE_FILE).read_text().splitlines()
    ends = [json.loads(line)["token"] for line in lines if json.loads(line)["event"] == "ended"]
    assert len(ends) == len(set(ends)) == 2
