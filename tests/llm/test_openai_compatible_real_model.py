"""The `openai` backend against a real model: SmolLM2-135M-Instruct behind
`python -m llama_cpp.server` (the module-scoped llama_server fixture). The small model fails
often; the test checks that whatever it wrote is a valid, consistent run, and that every verdict
is read from the schema llama-cpp-python's server takes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.real_model import (
    SMALL_SEEDS,
    llama_server,  # noqa: F401 (a fixture)
    needs_model,
)
from tests.support.runs import assert_valid_run, read_jsonl, write_seeds
from tests.support.subprocesses import clean_env


@pytest.mark.slow
@pytest.mark.heavy  # left out of make mutate
@needs_model
def test_real_model_behind_llama_cpp_server_through_the_openai_backend(
    llama_server: str,  # noqa: F811 (the fixture imported above)
    tmp_path: Path,
) -> None:
    seeds, out = write_seeds(tmp_path / "seeds.jsonl", SMALL_SEEDS), tmp_path / "run"
    command = [
        sys.executable, "-m", "evol", "run", str(seeds), "--out", str(out), "--generations", "2",
        "--base-url", llama_server, "--max-tokens", "128", "--temperature", "0.7", "--concurrency", "2", "--json",
    ]  # fmt: skip
    result = subprocess.run(command, env=clean_env(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    manifest = assert_valid_run(out)
    assert manifest["backend"]["name"] == "openai" and summary["backend"] == "openai"
    assert summary["failed"] == []
    # A sampled answer may fail a rule (cut at --max-tokens, say): each seed is kept with its
    # answer or eliminated at generation 0 with a reason, never lost.
    gen0 = read_jsonl(out / "gen_0.jsonl")
    failed_seeds = [r for r in read_jsonl(out / "eliminated.jsonl") if r["generation"] == 0]
    assert sorted(r["id"] for r in gen0 + failed_seeds) == [f"s{n}" for n in range(1, 6)]
    assert gen0 and all(isinstance(r["output"], str) for r in gen0)
    # Every evolution attempt ended kept or eliminated: 5 lineages x 2 rounds.
    # (A seed whose answer failed is eliminated at generation 0 and still evolves.)
    evolutions_eliminated = len(
        [r for r in read_jsonl(out / "eliminated.jsonl") if r["generation"] > 0]
    )
    kept = sum(summary["kept_per_generation"].get(str(g), 0) for g in (1, 2))
    assert kept + evolutions_eliminated == 10
    assert summary["eliminated"] == evolutions_eliminated + len(failed_seeds)
    assert summary["usage"]["evolve"]["completion_tokens"] > 0
    # llama-cpp-python's server refuses a json_schema format (a 500 naming the field) and takes
    # json_object with the schema: every verdict is read from the schema, none from prose.
    read = manifest["judging"]["replies_read_as"].get("judge", {})
    assert "prose" not in read and read.get("schema", 0) == summary["requests"].get("judge", 0)
