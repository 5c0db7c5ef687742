"""`evol run --engine ray` refused or planned without a cluster: each option Ray would not use is
refused, a dry run names vLLM on Ray, and a live run's run.json has no engine fields."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.fake_server import FakeServer
from tests.support.runs import write_seeds


def test_a_dry_run_names_vllm_on_ray_and_its_model(evol, tmp_path: Path) -> None:
    seeds = write_seeds(tmp_path / "seeds.jsonl", [{"instruction": "Name a tree"}])
    result = evol("run", seeds, "--out", tmp_path / "run", "--engine", "ray",
                  "--ray-model", "Qwen/Qwen2.5-0.5B-Instruct", "--dry-run")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "backend ray-vllm, model Qwen/Qwen2.5-0.5B-Instruct for every role" in result.stdout
    refused = evol("run", seeds, "--out", tmp_path / "run", "--engine", "ray", "--backend",
                   "openai", "--ray-model", "m", "--dry-run")  # fmt: skip
    assert refused.exit_code == 2 and "drop --backend" in refused.stderr


@pytest.mark.parametrize(
    ("options", "refusal"),
    [
        (["--engine", "ray", "--ray-model", "m", "--base-url", "http://x/v1"], "drop --base-url"),
        (["--engine", "ray", "--model-path", "m.gguf"], "--model-path runs a GGUF"),
        (["--engine", "ray", "--ray-model", "m", "--model-path", "m.gguf"], "--model-path"),
        (["--ray-model", "m"], "add --engine ray"),
    ],
    ids=["vllm-and-base-url", "http-and-model-path", "vllm-and-model-path", "no-engine"],
)
@pytest.mark.parametrize("dry_run", [True, False], ids=["dry-run", "run"])
def test_an_option_ray_would_not_use_is_refused_not_ignored(
    evol, tmp_path: Path, options: list[str], refusal: str, dry_run: bool
) -> None:
    """attack28: each of these ran, on another model than the one named (a GGUF given with
    --engine ray went to api.openai.com), or left an option unused without a word."""
    seeds = write_seeds(tmp_path / "seeds.jsonl", [{"instruction": "Name a tree"}])
    result = evol("run", seeds, "--out", tmp_path / "run", *options,
                  *(["--dry-run"] if dry_run else []))  # fmt: skip
    assert result.exit_code == 2, result.output
    assert refusal in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()


def test_a_live_runs_run_json_has_no_engine_fields(
    evol, server: FakeServer, tmp_path: Path
) -> None:
    """run.json as before there was a choice of engine; a run through Ray records its own
    (test_a_run_through_ray_equals_the_same_run_live)."""
    seeds = write_seeds(tmp_path / "seeds.jsonl", [{"instruction": "Name a tree"}])
    result = evol("run", seeds, "--out", tmp_path / "run", "--base-url", server.base_url,
                  "--generations", "0", "--quiet")  # fmt: skip
    assert result.exit_code == 0
    config = json.loads((tmp_path / "run" / "run.json").read_text())["config"]
    assert not {name for name in config if name == "engine" or name.startswith("ray_")}


def test_the_cli_refuses_engine_ray_with_batch(evol, tmp_path: Path) -> None:
    seeds = write_seeds(tmp_path / "seeds.jsonl", [{"instruction": "Name a tree"}])
    result = evol("run", seeds, "--out", tmp_path / "run", "--base-url", "http://127.0.0.1:9/v1",
                  "--engine", "ray", "--batch", "--quiet")  # fmt: skip
    assert result.exit_code == 2 and "--batch and --engine ray" in result.stderr
