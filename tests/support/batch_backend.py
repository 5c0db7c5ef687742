"""The batch backend driven in this process against the fake Batch API (batch_server): a
backend with quick polls, every text asked at once, what the server answers, and the events of
the state file, and a process's life on a state folder (ask_all)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import resource
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from evol.llm import BackendSettings, Completion, GenerationParams, LLMRequest, Message
from evol.llm.batch import STATE_FILE, BatchBackend, BatchSettings, request_line
from evol.llm.retry import with_retries
from tests.support.batch_server import BatchServer
from tests.support.fake_server import Responder

MODEL = "fake-model"
PARAMS = GenerationParams()


def make_backend(
    server: BatchServer,
    state_dir: Path,
    *,
    api_key: str | None = None,
    max_response_bytes: int = 16 << 20,
    **options: Any,
) -> BatchBackend:
    """A batch backend on `server`, its state in `state_dir`, with quick waits and polls."""
    settings = {"quiet_period": 0.05, "poll_interval": 0.02, "retry_max_wait": 0.01} | options
    return BatchBackend(
        BackendSettings(
            base_urls=[server.base_url],
            api_key=SecretStr(api_key) if api_key else None,
            max_response_bytes=max_response_bytes,
        ),
        BatchSettings(state_dir=state_dir, **settings),
    )


def ask(text: str) -> list[Message]:
    """One user turn of `text`."""
    return [{"role": "user", "content": text}]


def expected(text: str) -> str:
    """What the server answers to `text`: the fake servers' deterministic responder."""
    return Responder()({"model": MODEL, "messages": ask(text)})


async def complete_all(
    backend: BatchBackend, texts: list[str], *, model: str = MODEL, retries: int = 0
) -> list[Completion | BaseException]:
    """Every text asked at once, each retried as the engine retries a transient failure."""

    async def one(text: str) -> Completion:
        async def call() -> Completion:
            return await backend.complete(LLMRequest(ask(text), model, PARAMS))

        return await with_retries(call, max_retries=retries, max_wait=0.01)

    async with asyncio.timeout(600):  # a guard against a hang, never a pace
        return await asyncio.gather(*(one(text) for text in texts), return_exceptions=True)


async def until(condition: Callable[[], bool], limit: float = 600.0) -> None:
    """Wait, in the loop, until `condition()` holds; `limit` only guards against a hang."""
    async with asyncio.timeout(limit):
        while not condition():
            await asyncio.sleep(0.01)


def texts_of(replies: list[Completion | BaseException]) -> list[str]:
    """The replies' texts, once every one is a Completion."""
    assert all(isinstance(r, Completion) for r in replies), replies
    return [r.text for r in replies]  # type: ignore[union-attr]


def events(state_dir: Path) -> list[str]:
    """The events of the batch state file in `state_dir`, in order (none before it exists)."""
    if not (state_dir / STATE_FILE).exists():
        return []
    lines = (state_dir / STATE_FILE).read_text().splitlines()
    return [json.loads(line)["event"] for line in lines]


def custom_id(text: str, model: str = MODEL) -> str:
    """The custom_id of the batch row that asks `text` of `model`."""
    return request_line(ask(text), model, PARAMS)[0]


def ask_all(
    server: BatchServer, state_dir: Path, texts: list[str], *, retries: int = 0, **options: Any
) -> list[Completion | BaseException]:
    """One process's life: a backend on `state_dir` asks every text at once, then closes."""

    async def main() -> list[Completion | BaseException]:
        backend = make_backend(server, state_dir, **options)
        try:
            return await complete_all(backend, texts, retries=retries)
        finally:
            await backend.aclose()

    return asyncio.run(main())


@contextlib.contextmanager
def file_size_limit(size: int) -> Iterator[None]:
    """Writes to regular files past `size` bytes fail with EFBIG (Python ignores SIGXFSZ)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
