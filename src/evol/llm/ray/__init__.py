"""The Ray engine (`evol run --engine ray`): each step's requests through Ray Data LLM.

Ray is one more way to answer many requests at once, behind the same call layer as the batch
backend: the engine, the rules, the journal and the store do not know it is there. Ray is
imported only when a wave runs (the `ray` extra: `pip install 'evol[ray]'`).

    session.py    what runs on the workers: the never-raising HTTP session, pre/postprocess
    rows.py       an output row (an HTTP envelope, a vLLM row) read as a live reply
    processor.py  the HTTP processor, built from evol's settings
    vllm.py       the vLLM path: sampling params, its config, its rows read as replies
    cluster.py    the cluster joined, or a local Ray started, once; shut down if evol started it
    sink.py       the driver's end of the ReplySink: the actor started, the thread draining it
    backend.py    RayBackend and RaySettings: the queue, the waves
"""

from evol.llm.ray.backend import RAY_EXTRA, RayBackend, RaySettings

__all__ = ["RAY_EXTRA", "RayBackend", "RaySettings"]
