"""`RayBackend` (evol.llm.ray.backend) without a cluster: a wave's submitter that fails fails its
callers."""

from __future__ import annotations

import asyncio

import pytest

from evol.errors import (
    TransientBackendError,
)
from evol.llm import BackendSettings, GenerationParams, LLMRequest
from evol.llm.ray import RayBackend, RaySettings
from tests.support.ray_cluster import (
    needs_ray,
)


@needs_ray
def test_a_submitter_that_crashes_fails_its_callers_instead_of_leaving_them_waiting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:

    backend = RayBackend(BackendSettings(base_urls=["http://127.0.0.1:9/v1"]), RaySettings())

    def broken() -> list:
        raise RuntimeError("planted")

    monkeypatch.setattr(backend, "_take_wave", broken)
    request = LLMRequest([{"role": "user", "content": "hi"}], "m", GenerationParams())

    async def ask() -> None:
        try:
            with pytest.raises(TransientBackendError, match="planted"):
                await asyncio.wait_for(backend.complete(request), 600)  # a hang guard
        finally:
            await backend.aclose()

    asyncio.run(ask())
