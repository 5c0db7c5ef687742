"""The driver's end of the reply sink (evol.llm.ray.sink), on the local cluster: replies answer
their callers one by one; the sink killed, they still come a batch at a time; aclose ends the
sink and its thread."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from evol.llm import BackendSettings, GenerationParams, LLMRequest
from evol.llm.ray import RayBackend, RaySettings
from tests.support.fake_server import FakeServer, first_user_turn
from tests.support.ray_cluster import (
    needs_ray,
)


def ask(text: str) -> LLMRequest:
    return LLMRequest([{"role": "user", "content": text}], "fake-model", GenerationParams())


async def waves_ended(backend: RayBackend) -> None:
    """Wait until the waves under way have finished: aclose leaves a wave that does not end
    within its grace (a stuck one) and Ray as it is, so on a loaded machine, where a wave's
    end comes late, the sink's end is checked only after its waves' (a hang guard, not a
    pace)."""
    async with asyncio.timeout(300):
        while backend._waves:
            await asyncio.sleep(0.05)


@pytest.mark.slow
@needs_ray
def test_replies_come_one_by_one_and_without_the_sink_a_batch_at_a_time(ray_cluster: str) -> None:
    """In one process, on the cluster: two replies answer their callers while a third row of
    their batch is held; the sink killed, the held row and a later wave still answer (through
    the batches' rows), and aclose ends the sink and its thread."""
    import ray

    ray.init(address=ray_cluster, log_to_driver=False, logging_level="ERROR")
    try:
        with FakeServer(hold=lambda body: first_user_turn(body) == "slow") as server:
            settings = BackendSettings(base_urls=[server.base_url])
            backend = RayBackend(settings, RaySettings(address=ray_cluster, batch_size=8))

            async def scenario() -> tuple[list[str], Any]:
                asks = [asyncio.ensure_future(backend.complete(ask(t))) for t in ("slow", "a", "b")]
                try:
                    done, _ = await asyncio.wait(asks[1:], timeout=300)  # a hang guard
                    assert len(done) == 2 and not asks[0].done()
                    sink = backend._replies.actor
                    ray.kill(sink)
                    server.release()
                    held = await asyncio.wait_for(asks[0], 300)
                    later = await asyncio.wait_for(backend.complete(ask("c")), 300)
                    await waves_ended(backend)
                    return [held.text, later.text], sink
                finally:
                    await asyncio.wait_for(backend.aclose(), 300)

            texts, sink = asyncio.run(scenario())
        drainer = backend._replies.thread
        assert all(texts) and drainer is not None
        drainer.join(300)  # it leaves at its next take: a hang guard, not a pace
        assert not drainer.is_alive()

        with FakeServer() as server:  # a sink that lives until aclose, which ends it
            settings = BackendSettings(base_urls=[server.base_url])
            backend = RayBackend(settings, RaySettings(address=ray_cluster))

            async def one() -> Any:
                try:
                    await asyncio.wait_for(backend.complete(ask("d")), 300)
                    await waves_ended(backend)
                    return backend._replies.actor
                finally:
                    await asyncio.wait_for(backend.aclose(), 300)

            sink = asyncio.run(one())
        with pytest.raises(ray.exceptions.RayActorError):
            ray.get(sink.take.remote(0), timeout=60)
    finally:
        ray.shutdown()
