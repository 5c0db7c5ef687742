"""`RayBackend`: the `ChatBackend` whose requests go through Ray Data LLM in waves.

`complete()` queues the request and waits for its row. Requests that arrive together (until
`quiet_period` passes with no new one, or `max_wave` are queued) become one wave: one Ray
dataset sent through a processor (`HttpRequestProcessorConfig` at --base-url, or
`vLLMEngineProcessorConfig` with `model`), whose rows are read on a thread as Ray yields them
(a stage's batch at a time) and resolve their callers at once; the Dispatcher journals each
reply as its `complete()` returns. Up to `max_waves` waves run at once.

Ray yields a stage batch only once its last row is done. On the HTTP path each reply also
comes one by one, as the stage's session gets it, through a `ReplySink` actor that a driver
thread drains: whichever of the two reaches a caller first answers it, the other is dropped.
So a reply the server sent is journaled without waiting for its batch's slowest row, and the
batch's rows still answer what the sink did not (a message lost, the sink gone). The vLLM
stage has no such hook: its replies come a batch at a time.

Ray never retries (evol's one retry policy does). A failed row fails its request alone; a wave
whose dataset fails (the cluster lost, say) fails its open requests as transient errors, which
the retry policy, or the next run, asks again.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib.util
import itertools
import threading
from collections.abc import Awaitable, Iterator
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field

from evol.errors import EndpointUnreachable, TransientBackendError, UsageError, own_copy
from evol.llm.openai_api import DEFAULT_BASE_URL, ReplyReader, ResponseFormats, auth_headers
from evol.llm.openai_compatible import OpenAICompatibleBackend
from evol.llm.protocol import (
    BackendSettings,
    Capabilities,
    Completion,
    GenerationParams,
    LLMRequest,
)
from evol.llm.ray import session
from evol.llm.ray.cluster import Cluster
from evol.llm.ray.processor import HttpTarget, http_processor
from evol.llm.ray.rows import envelope_outcome
from evol.llm.ray.sink import ReplyFeed
from evol.llm.ray.vllm import vllm_config, vllm_outcome, vllm_row
from evol.llm.transport import url_login
from evol.secrets import check_api_key, display_url
from evol.version import __version__

RAY_EXTRA = "pip install 'evol[ray]'"
_HTTP = ("http",)  # the one group of the HTTP path: its rows all have the same columns


class RaySettings(BaseModel):
    """How requests go through Ray: the cluster, and the processor's settings."""

    model_config = ConfigDict(extra="forbid")

    address: str | None = Field(None, description="ray.init's address; None: a local Ray")
    local_cpus: int | None = Field(None, ge=1, description="CPUs of a local Ray; None: all")
    model: str | None = Field(None, description="a model for vLLM on the cluster; None: HTTP")
    tensor_parallel: int = Field(1, ge=1, description="vLLM's tensor_parallel_size")
    batch_size: int = Field(64, ge=1, description="rows per batch of the processor's stage")
    replicas: int = Field(1, ge=1, description="actors (HTTP) or engine replicas (vLLM)")
    quiet_period: float = Field(0.2, ge=0, description="seconds with no new request: a wave")
    max_wave: int = Field(10_000, ge=1, description="requests in one wave at most")
    max_waves: int = Field(4, ge=1, description="waves in flight at once")


class _Open:
    """A request queued or sent in a wave, waiting for its row."""

    __slots__ = ("future", "group", "max_tokens", "model", "row")

    def __init__(
        self,
        future: asyncio.Future[Completion],
        request: LLMRequest,
        group: tuple[str, ...],
        row: dict[str, str],
    ):
        self.future, self.group, self.row = future, group, row
        self.model, self.max_tokens = request.model, request.params.max_tokens


class RayBackend:
    """A `ChatBackend` whose requests go through a Ray Data LLM processor; see the module."""

    capabilities = Capabilities(needs_key=True, several_choices=True)

    def __init__(self, settings: BackendSettings, ray: RaySettings):
        if importlib.util.find_spec("ray") is None:
            raise UsageError(f"--engine ray needs Ray: {RAY_EXTRA}")
        self.ray = ray
        base_url = (settings.base_urls[0] if settings.base_urls else DEFAULT_BASE_URL).rstrip("/")
        key = settings.api_key.get_secret_value() if settings.api_key else None
        base_url, login = url_login(base_url, key, settings.api_key_source)
        headers = {"User-Agent": f"evol/{__version__}", "Accept": "application/json"} | login
        if key is not None:
            check_api_key(key, settings.api_key_source)
            headers |= auth_headers(base_url, key)
        self.target = HttpTarget(
            url=base_url + "/chat/completions",
            headers=headers,
            cap=settings.max_response_bytes,
            timeout=settings.timeout,
            batch_size=ray.batch_size,
            replicas=ray.replicas,
        )
        where = f"vLLM ({ray.model}) on Ray" if ray.model else display_url(base_url)
        self.reader = ReplyReader(
            where, settings.api_key_source, settings.secrets(), settings.max_response_bytes
        )
        # The HTTP path asks its server which model it serves, as the openai backend does.
        self.models = OpenAICompatibleBackend(settings) if ray.model is None else None
        self.formats = ResponseFormats()
        self._keys = itertools.count()
        self._open: dict[str, _Open] = {}
        self._queue: dict[str, _Open] = {}  # not yet in a wave
        self._arrival = asyncio.Event()
        self._submitter: asyncio.Task[None] | None = None
        self._waves: set[asyncio.Future[None]] = set()
        self._slots = asyncio.Semaphore(ray.max_waves)
        self._stopping = threading.Event()
        self._cluster = Cluster(ray.address, ray.local_cpus)
        self._replies = ReplyFeed(self._stopping)  # one by one, on the HTTP path

    @property
    def where(self) -> str:
        return self.reader.where

    async def complete(self, request: LLMRequest) -> Completion:
        """The request's answer from its row; a row refused for its response_format is asked
        again without it, in a later wave, as the live backend would."""

        def send(options: dict[str, Any]) -> Awaitable[Completion]:
            return self._complete(request.with_params(GenerationParams.model_validate(options)))

        return await self.formats.send(request.params, send)

    async def _complete(self, request: LLMRequest) -> Completion:
        if self.ray.model is None:
            body = {"model": request.model, "messages": request.messages, **request.params.request}
            group, row = _HTTP, {"body": orjson.dumps(body).decode()}
        else:
            group, row = vllm_row(request)
        key = str(next(self._keys))
        waiting = _Open(asyncio.get_running_loop().create_future(), request, group, row)
        self._open[key] = self._queue[key] = waiting
        self._arrival.set()
        if self._submitter is None:
            self._submitter = asyncio.get_running_loop().create_task(self._submit_loop())
            self._submitter.add_done_callback(self._submitter_ended)
        try:
            return await waiting.future
        finally:
            self._open.pop(key, None)
            self._queue.pop(key, None)

    async def default_model(self) -> str:
        """The server's model when it serves exactly one (else ask for --model); with vLLM
        on the cluster, the model it loads."""
        if self.models is None:
            assert self.ray.model is not None
            return self.ray.model
        return await self.models.default_model()

    async def aclose(self) -> None:
        """Stop making waves and reading rows; what a wave under way has sent, it finishes."""
        self._stopping.set()
        if self._submitter is not None:
            self._submitter.cancel()
            await asyncio.gather(self._submitter, return_exceptions=True)
        self._fail_all(list(self._open), TransientBackendError(f"{self.where}: the run stopped"))
        # A wave stops at its next batch; one stuck in Ray (a cluster gone) is left to die
        # with the process (its thread is a daemon), and Ray is then left as it is.
        if self._waves:
            await asyncio.wait(self._waves, timeout=_WAVE_GRACE)
        if not self._waves:
            await asyncio.to_thread(self._disconnect)
        if self.models is not None:
            await self.models.aclose()

    # -- waves --------------------------------------------------------------------------------

    async def _submit_loop(self) -> None:
        """A wave once no request arrived for `quiet_period`, or `max_wave` are queued."""
        arrival = self._arrival
        while True:
            await arrival.wait()
            while len(self._queue) < self.ray.max_wave:
                arrival.clear()
                try:
                    async with asyncio.timeout(self.ray.quiet_period):
                        await arrival.wait()
                except TimeoutError:
                    break
            arrival.clear()
            await self._slots.acquire()
            rows = self._take_wave()
            if self._queue:
                arrival.set()
            if not rows:
                self._slots.release()
                continue
            self._launch(rows)

    def _submitter_ended(self, task: asyncio.Task[None]) -> None:
        """A submitter that crashed fails every caller instead of leaving them waiting."""
        if task.cancelled() or (error := task.exception()) is None:
            return
        self._submitter = None  # the next request starts another
        self._fail_all(list(self._open), TransientBackendError(f"{self.where}: {error!r}"))

    def _take_wave(self) -> list[dict[str, str]]:
        """The rows of the next wave: of the oldest request's group, `max_wave` at most."""
        if not self._queue:
            return []
        group = next(iter(self._queue.values())).group
        keys = [key for key, waiting in self._queue.items() if waiting.group == group]
        keys = keys[: self.ray.max_wave]
        return [{"key": key, **self._queue.pop(key).row} for key in keys]

    def _launch(self, rows: list[dict[str, str]]) -> None:
        """Run a wave on a daemon thread: Ray's calls block, and one that never returns (a
        cluster that went away) must not keep the process from exiting."""
        loop = asyncio.get_running_loop()
        try:
            # On the loop's thread, which lives as long as the run: a local Ray's head
            # processes die with the thread that started them (a wave's thread ends).
            self._cluster.connect()
        except Exception as error:  # noqa: BLE001 (no cluster: nothing can be sent)
            why = self.reader.secrets.cut(f"{type(error).__name__}: {error}")
            cluster = self.ray.address or "a local Ray"
            unreachable = EndpointUnreachable(f"cannot start or join {cluster}: {why}")
            self._fail_all([row["key"] for row in rows], unreachable)
            self._slots.release()
            return
        if self.ray.model is None:
            self._replies.start(functools.partial(_post, loop, self._resolve))
        wave: asyncio.Future[None] = loop.create_future()
        self._waves.add(wave)
        wave.add_done_callback(self._wave_ended)

        def work() -> None:
            try:
                self._run_wave(rows, loop)
            finally:
                _post(loop, _settle, wave)

        threading.Thread(target=work, name="evol-ray-wave", daemon=True).start()

    def _wave_ended(self, wave: asyncio.Future[None]) -> None:
        self._waves.discard(wave)
        self._slots.release()

    def _run_wave(self, rows: list[dict[str, str]], loop: asyncio.AbstractEventLoop) -> None:
        """On a thread: run one wave's dataset, resolving each batch of rows as it lands."""
        keys = [row["key"] for row in rows]
        try:
            for batch in self._output(rows):
                if self._stopping.is_set():
                    return
                _post(loop, self._resolve, batch)
        except Exception as error:  # noqa: BLE001 (whatever Ray raises: the wave's failure)
            why = self.reader.secrets.cut(f"{type(error).__name__}: {error}")
            failure = TransientBackendError(f"{self.where}: a Ray wave failed ({why})")
            _post(loop, self._fail_all, keys, failure)
            return
        finally:
            self._replies.forget(keys)
        missing = TransientBackendError(f"{self.where}: Ray returned no row for the request")
        _post(loop, self._fail_all, keys, missing)

    def _output(self, rows: list[dict[str, str]]) -> Iterator[list[dict[str, Any]]]:
        """The wave's output rows, a batch at a time, as Ray yields them."""
        import ray.data
        from ray.data.llm import build_processor

        if self.ray.model is None:
            processor = http_processor(self.target, self._replies.actor)
        else:
            ray.cloudpickle.register_pickle_by_value(session)
            config = vllm_config(
                self.ray.model,
                tensor_parallel=self.ray.tensor_parallel,
                replicas=self.ray.replicas,
                batch_size=self.ray.batch_size,
            )
            processor = build_processor(
                config, preprocess=session.to_vllm, postprocess=session.from_vllm
            )
        dataset = processor(ray.data.from_items(rows))
        for table in dataset.iter_batches(batch_size=None, batch_format="pyarrow"):
            yield table.to_pylist()

    def _resolve(self, batch: list[dict[str, Any]]) -> None:
        """Answer each row's caller (on the loop); a row whose caller left is dropped."""
        for row in batch:
            waiting = self._open.get(str(row.get("key")))
            if waiting is None or waiting.future.done():
                continue
            outcome = (
                envelope_outcome(row, waiting.model, self.reader)
                if self.ray.model is None
                else vllm_outcome(row, waiting.max_tokens, self.reader)
            )
            if isinstance(outcome, Exception):
                waiting.future.set_exception(outcome)
            else:
                waiting.future.set_result(outcome)

    def _fail_all(self, keys: list[str], error: Exception) -> None:
        for key in keys:
            waiting = self._open.get(key)
            if waiting is not None and not waiting.future.done():
                waiting.future.set_exception(own_copy(error))

    def _disconnect(self) -> None:
        self._replies.close(_WAVE_GRACE)
        self._cluster.disconnect()


# Seconds aclose waits for the waves still reading rows before it leaves Ray as it is.
_WAVE_GRACE = 5.0


def _post(loop: asyncio.AbstractEventLoop, callback: Any, *args: Any) -> None:
    """`callback(*args)` on the loop, from a wave's thread; nothing once the loop has closed."""
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(callback, *args)


def _settle(wave: asyncio.Future[None]) -> None:
    if not wave.done():
        wave.set_result(None)
