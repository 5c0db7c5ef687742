"""The Ray Data LLM processors a wave goes through, built from evol's settings (Ray is
imported here, only when a wave runs)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from evol.llm.ray import session


@dataclass(frozen=True)
class HttpTarget:
    """Where the HTTP stage sends a wave's requests, and its limits."""

    url: str
    headers: dict[str, str]
    cap: int  # the largest reply body read (--max-response-mb)
    timeout: float  # seconds a request may take
    batch_size: int
    replicas: int


def http_processor(target: HttpTarget, sink: Any = None) -> Any:
    """`HttpRequestProcessorConfig` at `target`, through `EnvelopeSession`: Ray retries
    nothing (`max_retries=0`), every request of a batch is sent at once, and each reply goes
    to `sink` (a `ReplySink` actor's handle, if any) as it arrives."""
    import ray.cloudpickle
    from ray.data.llm import HttpRequestProcessorConfig, build_processor

    # By value: the workers need not have evol installed, only aiohttp.
    ray.cloudpickle.register_pickle_by_value(session)
    config = HttpRequestProcessorConfig(
        url=target.url,
        headers=target.headers,
        batch_size=target.batch_size,
        concurrency=target.replicas,
        max_retries=0,
        session_factory=session.EnvelopeSession(
            cap=target.cap, timeout=target.timeout, connections=target.batch_size, sink=sink
        ),
        # A fraction of a CPU: waves run side by side on a small cluster.
        http_request_stage={"num_cpus": _STAGE_CPUS},
    )
    light = {"num_cpus": _STAGE_CPUS}
    return build_processor(
        config,
        preprocess=session.to_payload,
        postprocess=session.from_reply,
        preprocess_map_kwargs=light,
        postprocess_map_kwargs=light,
    )


_STAGE_CPUS = 0.25
