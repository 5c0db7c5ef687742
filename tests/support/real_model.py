"""The real model: SmolLM2 served by `python -m llama_cpp.server` on 127.0.0.1 (the module-scoped
llama_server fixture, for a test module that imports it), the mark that skips without the local
extra, and small seeds it answers in seconds."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from evol.llm import local_backend_installed

SMALL_SEEDS = [
    {"instruction": "Name three primary colors."},
    {"instruction": "What is 12 times 7?"},
    {"instruction": "Summarize the sentence.", "input": "The cat slept all afternoon in the sun."},
    {"instruction": "Give a synonym for happy."},
    {"instruction": "Write one sentence about rain."},
]


def smollm2_gguf() -> Path:
    """The GGUF file the local backend loads by default (SmolLM2)."""
    from evol.llm.local import default_model_path

    return default_model_path()


needs_model = pytest.mark.skipif(
    not local_backend_installed(), reason="needs the local extra: pip install -e '.[dev]'"
)


def free_port() -> int:
    """A port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`python -m llama_cpp.server` serving SmolLM2 on 127.0.0.1; yields its base URL."""
    port = free_port()
    # A log file, not a pipe: a pipe nobody reads fills up and stalls the server.
    log = (tmp_path_factory.mktemp("llama_server") / "server.log").open("w+")
    command = [
        sys.executable, "-m", "llama_cpp.server", "--model", str(smollm2_gguf()),
        "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "4096", "--n_threads", "1",
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, text=True)
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{base_url}/models", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    raise RuntimeError(
                        f"llama_cpp.server did not start: {log.read()[-2000:]}"
                    ) from None
                time.sleep(0.5)
        yield base_url
    finally:
        process.terminate()
        process.wait(30)
        log.close()
