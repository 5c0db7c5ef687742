"""`evol.pipeline`: what a run reads from its backend's capabilities, never from its name or from
--batch, so that a plugin does what the built-in backends do."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import evol
from evol.llm import BackendSettings, Completion, LLMRequest
from evol.llm.batch import BatchInfo
from evol.llm.protocol import BatchingBackend, Capabilities
from tests.support.backends import registered_backend
from tests.support.runs import write_seeds

BATCH = BatchInfo(id="plugin-batch-1", status="in_progress", model="shout-1", requests=3)


class BatchingPlugin:
    """A plugin that declares `batchable` and lists one batch. Its first reply waits until the
    run has looked at its batches twice (run.json at start, then the progress watcher), so the
    watcher's line is shown whatever the machine's speed."""

    capabilities = Capabilities(batchable=True)

    def __init__(self, settings: BackendSettings):
        self.looks = 0
        self.watched = asyncio.Event()

    def batches(self) -> list[BatchInfo]:
        self.looks += 1
        if self.looks > 1:
            self.watched.set()
        return [BATCH]

    async def complete(self, request: LLMRequest) -> Completion:
        # A limit against a hang only (the watcher looks every 50 ms), never a pace.
        await asyncio.wait_for(self.watched.wait(), timeout=600)
        text = request.messages[-1]["content"]
        if "<first>" in text:
            return Completion(text="Not Equal")
        if "<instruction>" in text:
            instruction = text.split("<instruction>\n")[1].split("\n</instruction>")[0]
            return Completion(text=instruction + " Loudly.")
        return Completion(text="An answer.")

    async def default_model(self) -> str:
        return "shout-1"

    async def aclose(self) -> None:
        pass


def test_a_plugin_that_batches_has_its_batches_in_run_json_and_progress_lines(
    tmp_path: Path,
) -> None:
    assert isinstance(BatchingPlugin(BackendSettings()), BatchingBackend)
    seeds = write_seeds(tmp_path / "seeds.jsonl", [{"instruction": "Name a bird"}])
    out, lines = tmp_path / "run", []
    with registered_backend("batching-plugin", BatchingPlugin):
        summary = evol.run(
            evol.RunConfig(
                seeds=seeds,
                out=out,
                generations=1,
                backend="batching-plugin",
                batch_poll_interval=0.05,
            ),
            on_info=lines.append,
        )
    assert summary.status == "complete"
    manifest = json.loads((out / "run.json").read_text(encoding="utf-8"))
    assert manifest["batches"] == [BATCH.model_dump()]
    assert "batches: 1 in_progress (3 requests)" in lines


def test_the_async_library_call_runs_inside_an_existing_event_loop(server, tmp_path: Path) -> None:
    seeds = write_seeds(tmp_path / "seeds.jsonl", [{"instruction": "Name a bird"}])
    config = evol.RunConfig(
        seeds=seeds, out=tmp_path / "run", generations=1, base_urls=[server.base_url]
    )

    async def host_application() -> evol.RunSummary:
        return await evol.arun(config)

    summary = asyncio.run(host_application())
    assert summary.status == "complete" and summary.kept_per_generation == {"0": 1, "1": 1}
