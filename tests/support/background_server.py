"""A server on 127.0.0.1, run by an event loop in a thread of its own: what the fake OpenAI
server (fake_server), the fake Batch API (batch_server) and the raw-socket hostile server
(hostile_server) share, and the error body the first two answer with."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from typing import Self

from aiohttp import web


class BackgroundServer:
    """`with Server(...) as server:` starts it, `server.base_url` reaches it, and leaving the
    block stops it. A subclass listens (`_listen`, on `port`: 0 for any free one) and stops
    listening (`_stop_listening`); `_gate` is an event of its loop that `release()` methods set."""

    kind = "background"  # named in the error when it does not start
    port: int
    _loop: asyncio.AbstractEventLoop | None = None
    _gate: asyncio.Event | None = None
    _thread: threading.Thread | None = None
    _started: threading.Event | None = None  # set once it listens

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def wait_until(self, condition: Callable[[], bool], limit: float = 600.0) -> None:
        """Block until `condition()` holds; `limit` only guards against a hang, never a pace."""
        deadline = time.monotonic() + limit
        while not condition():
            if time.monotonic() > deadline:
                raise TimeoutError("the condition never held")
            time.sleep(0.01)

    async def _listen(self) -> int:
        """Start serving on 127.0.0.1:`port`; the port it listens on."""
        raise NotImplementedError

    async def _stop_listening(self) -> None:
        """Take no more connections (those open are ended after)."""
        raise NotImplementedError

    def start(self) -> Self:
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._serve, args=(self._started,), daemon=True)
        self._thread.start()
        # A hang guard, never a pace: a loaded machine may take seconds to start a loop; a
        # server whose start failed ends its thread, and is reported at once.
        deadline = time.monotonic() + 600
        while not self._started.wait(0.05):
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"{self.kind} server did not start")
        return self

    def stop(self) -> None:
        if self._loop and self._started and self._started.is_set():
            # Handlers are cancelled 1 s into the stop; 600 s is a hang guard, never a pace.
            asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(600)
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread:
            self._thread.join(600)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    async def _shutdown(self) -> None:
        """Stop serving, then end the handlers still waiting (held, hung or endless ones)."""
        await self._stop_listening()
        current = asyncio.current_task()
        pending = [task for task in asyncio.all_tasks() if task is not current]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    def _serve(self, started: threading.Event) -> None:
        self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self._loop)
        self._gate = asyncio.Event()
        self.port = self._loop.run_until_complete(self._listen())
        started.set()
        self._loop.run_forever()
        self._loop.close()


class AppServer(BackgroundServer):
    """A BackgroundServer that serves an aiohttp application (`_application`)."""

    backlog = 128  # connections the socket queues before they are accepted (aiohttp's default)
    _runner: web.AppRunner | None = None

    def _application(self) -> web.Application:
        """The routes this server answers; called in its own thread, under its loop."""
        raise NotImplementedError

    async def _listen(self) -> int:
        # Held or hung requests are cancelled 1 s into a stop, as a server going down drops them.
        self._runner = web.AppRunner(self._application(), access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, backlog=self.backlog)
        await site.start()
        return site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def _stop_listening(self) -> None:
        assert self._runner is not None
        await self._runner.cleanup()


def error_response(
    status: int, message: str, code: str | None, headers: dict[str, str] | None = None
) -> web.Response:
    """An error as the OpenAI API words it: {"error": {"message", "type", "code"}}."""
    payload = {"error": {"message": message, "type": "invalid_request_error", "code": code}}
    return web.Response(
        status=status, text=json.dumps(payload), content_type="application/json", headers=headers
    )
