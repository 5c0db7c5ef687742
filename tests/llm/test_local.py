"""The embedded backend (evol.llm.local): SmolLM2-135M-Instruct run for real, in-process (the
small model fails often; the test checks that whatever it wrote is a valid, consistent run), and
its shutdown, with a stand-in for llama.cpp's model."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from evol.llm import BackendSettings, GenerationParams, LLMRequest
from tests.support.real_model import SMALL_SEEDS, needs_model, smollm2_gguf
from tests.support.runs import assert_valid_run, read_jsonl, write_seeds
from tests.support.subprocesses import clean_env


@pytest.mark.slow
@pytest.mark.heavy  # left out of make mutate
@needs_model
def test_real_model_in_process_through_the_local_backend(tmp_path: Path) -> None:
    seeds, out = write_seeds(tmp_path / "seeds.jsonl", SMALL_SEEDS[:3]), tmp_path / "run"
    command = [
        sys.executable, "-m", "evol", "run", str(seeds), "--out", str(out), "--generations", "1",
        "--max-tokens", "128", "--json",
    ]  # fmt: skip
    result = subprocess.run(command, env=clean_env(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert f"backend local, model {smollm2_gguf().name}" in result.stderr
    manifest = assert_valid_run(out)
    assert manifest["backend"]["name"] == "local"
    assert manifest["backend"]["models"]["answer"] == smollm2_gguf().name
    summary = json.loads(result.stdout)
    # 3 evolutions, each kept or eliminated; a seed whose answer failed is eliminated at
    # generation 0 as well, and still evolves.
    evolutions_eliminated = len(
        [r for r in read_jsonl(out / "eliminated.jsonl") if r["generation"] > 0]
    )
    assert summary["kept_per_generation"].get("1", 0) + evolutions_eliminated == 3
    assert all(r["output"] for r in read_jsonl(out / "gen_0.jsonl"))


# -- the shutdown, with a stand-in for llama.cpp's model -----------------------------------


class BlockingModel:
    """A model whose generation runs in its worker thread until released; closing it while
    a generation runs is the crash the backend must never cause."""

    def __init__(self) -> None:
        self.started, self.release = threading.Event(), threading.Event()
        self.running = 0
        self.closed_while_running = False
        self.closed = False

    def create_chat_completion(self, **_request: object) -> dict:
        self.running += 1
        self.started.set()
        self.release.wait(600)  # a hang guard: the test releases it
        self.running -= 1
        return {"choices": [{"message": {"content": "done"}, "finish_reason": "stop"}]}

    def close(self) -> None:
        self.closed_while_running = self.closed_while_running or self.running > 0
        self.closed = True


def test_an_interrupted_generation_is_never_freed_under_its_thread(tmp_path: Path) -> None:
    from evol.llm.local import LocalBackend

    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF")

    async def scenario() -> BlockingModel:
        backend = LocalBackend(BackendSettings(model_path=gguf))
        model = backend._llama = BlockingModel()
        request = asyncio.ensure_future(
            backend.complete(
                LLMRequest([{"role": "user", "content": "hi"}], "m", GenerationParams())
            )
        )
        assert await asyncio.to_thread(model.started.wait, 600)  # a hang guard
        request.cancel()  # Ctrl-C: the task goes, the thread cannot
        closing = asyncio.ensure_future(backend.aclose())
        second = asyncio.ensure_future(
            backend.complete(
                LLMRequest([{"role": "user", "content": "again"}], "m", GenerationParams())
            )
        )
        await asyncio.sleep(0.05)
        assert not model.closed and model.running == 1  # both wait for the generation
        model.release.set()
        await closing
        with contextlib.suppress(asyncio.CancelledError):
            await request
        with contextlib.suppress(Exception):
            await second
        return model

    model = asyncio.run(scenario())
    assert model.closed and not model.closed_while_running
