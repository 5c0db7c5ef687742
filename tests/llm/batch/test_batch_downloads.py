"""A batch's output file as a whole batch run downloads it, against the fake Batch API: a file
of up to max_output_bytes is collected and a longer one refused, whether the server announces
its length or not; a refusal names the announced size and the setting to raise; a download
has the transfer deadline, not --timeout.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from evol.errors import TransientBackendError
from evol.llm import BackendSettings, Completion, LLMRequest
from evol.llm.batch import BatchBackend, BatchSettings
from evol.llm.retry import with_retries
from tests.support.batch_backend import MODEL, PARAMS, expected
from tests.support.batch_backend import ask as turn
from tests.support.batch_server import BatchServer

TEXT = "Name a river."
REMEDY = " so far); raise the batch backend's max_output_bytes if an output file is that large"


async def _complete(backend: BatchBackend, text: str) -> Completion:
    return await backend.complete(LLMRequest(turn(text), MODEL, PARAMS))


def ask(
    server: BatchServer,
    state_dir: Path,
    text: str = TEXT,
    *,
    timeout: float = 60.0,
    retries: int = 0,
    **options: Any,
) -> Completion | BaseException:
    """One process's life: a batch backend on `state_dir` asks `text` (retried `retries` times
    as the engine retries a transient failure), then closes."""
    quick = {"quiet_period": 0.05, "poll_interval": 0.02, "retry_max_wait": 0.01}

    async def main() -> Completion | BaseException:
        backend = BatchBackend(
            BackendSettings(base_urls=[server.base_url], timeout=timeout),
            BatchSettings(state_dir=state_dir, **(quick | options)),
        )
        try:
            async with asyncio.timeout(600):  # a guard against a hang, never a pace
                return await with_retries(
                    lambda: _complete(backend, text), max_retries=retries, max_wait=0.01
                )
        except Exception as error:
            return error
        finally:
            await backend.aclose()

    return asyncio.run(main())


def output_file(server: BatchServer) -> bytes:
    """The output file of the server's only batch."""
    (batch,) = server.created()
    return server.files[batch["output_file_id"]]


def output_size(tmp_path: Path, **fates: Any) -> int:
    """The size of the output file a fresh server writes for `TEXT`."""
    with BatchServer(**fates) as server:
        reply = ask(server, tmp_path / "measure")
        assert isinstance(reply, Completion), reply
        return len(output_file(server))


def huge(_line: dict[str, Any], _times: int) -> str:
    """Every row padded to 200,000 bytes: an output file over three 64 KiB chunks."""
    return "huge:200000"


class Unannounced(BatchServer):
    """Sends every file's content chunked, in pieces of 4 KiB, without a Content-Length."""

    async def _content(self, request: web.Request) -> web.StreamResponse:
        content = self.files.get(request.match_info["id"])
        if content is None:
            return await super()._content(request)
        reply = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        reply.enable_chunked_encoding()
        await reply.prepare(request)
        for start in range(0, len(content), 4096):
            await reply.write(content[start : start + 4096])
        await reply.write_eof()
        return reply


@pytest.mark.parametrize("over", [-1, 0, 1], ids=["a byte short", "the cap", "a byte over"])
@pytest.mark.parametrize("server_type", [BatchServer, Unannounced], ids=["announced", "chunked"])
def test_an_output_file_of_up_to_max_output_bytes_is_collected_and_a_longer_one_is_not(
    tmp_path: Path, over: int, server_type: type[BatchServer]
) -> None:
    """The cap is on the file's bytes: a file of exactly max_output_bytes is the answer, with
    its length announced or not."""
    size = output_size(tmp_path)
    with server_type() as server:
        reply = ask(server, tmp_path / "run", max_output_bytes=size + over, max_retries=0)
        assert len(output_file(server)) == size
    if over >= 0:
        assert isinstance(reply, Completion) and reply.text == expected(TEXT), reply
    else:
        assert type(reply) is TransientBackendError, reply
        assert str(reply).startswith(f"{server.base_url} sent a body of over {size - 1:,} bytes (")
        assert str(reply).endswith(REMEDY)


def test_an_announced_file_over_the_cap_is_refused_naming_its_size(tmp_path: Path) -> None:
    """The size in the refusal is the whole file's, as the server announced it, not what came
    before the reading stopped: the user raises max_output_bytes by what it says."""
    with BatchServer(row_fate=huge) as server:
        reply = ask(server, tmp_path, max_output_bytes=1000, max_retries=0)
        size = len(output_file(server))
    assert size > 3 * (1 << 16)
    assert type(reply) is TransientBackendError, reply
    assert str(reply) == f"{server.base_url} sent a body of over 1,000 bytes ({size:,}" + REMEDY


def test_a_file_sent_without_its_length_is_counted_whole_against_the_cap(tmp_path: Path) -> None:
    """An output file three times the cap, sent in pieces none of which is over it, is refused
    like one announced over it."""
    cap = 1 << 16
    with Unannounced(row_fate=huge) as server:
        reply = ask(server, tmp_path, max_output_bytes=cap, max_retries=0)
        assert len(output_file(server)) > 3 * cap
    assert type(reply) is TransientBackendError, reply
    assert str(reply).startswith(f"{server.base_url} sent a body of over {cap:,} bytes (")
    assert str(reply).endswith(REMEDY)


class SlowDownload(BatchServer):
    """Takes longer over a file's content than the client's --timeout (a large file, a slow
    link)."""

    async def _content(self, request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(4)  # twice the client's --timeout
        return await super()._content(request)


@pytest.mark.slow  # the server takes 4 s over the download
def test_a_download_has_the_transfer_deadline_not_the_request_timeout(tmp_path: Path) -> None:
    """--timeout bounds the JSON calls; an output file's download gets `transfer_timeout`."""
    with SlowDownload() as server:
        # A JSON call that a loaded machine keeps past 2 s is asked again (as the upload test
        # allows); a download held to --timeout would time out on every try.
        reply = ask(server, tmp_path, timeout=2.0, max_retries=2)
    assert isinstance(reply, Completion) and reply.text == expected(TEXT), reply
