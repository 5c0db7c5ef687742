"""Issue #25, the run side of a new user's first hour: progress without a terminal, a resume
that says so, a stop at start that leaves run.json, a dry run that knows the embedded model."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import write_seeds

SEEDS = [{"instruction": f"Task {i}: explain the idea"} for i in range(6)]


# 4. The dry run knows the embedded model -----------------------------------------------------


def test_a_dry_run_with_the_embedded_model_costs_nothing_and_names_it(evol, tmp_path: Path) -> None:
    seeds, out = write_seeds(tmp_path / "seeds.jsonl", SEEDS[:2]), tmp_path / "run"
    weights = tmp_path / "tiny-model.Q4.gguf"
    weights.write_bytes(b"GGUF")  # named, never loaded
    for backend in (["--backend", "local"], []):  # asked for, or nothing else configured
        options = [*backend, "--model-path", weights, "--generations", "2", "--dry-run"]
        text = evol("run", seeds, "--out", out, *options).stdout
        assert "cost unknown" not in text and "--price-in" not in text
        assert (
            "backend local (runs on this machine), model tiny-model.Q4.gguf for every role" in text
        )
        assert "at most 14 calls, $0 (free: runs on this machine)" in text
        plan = json.loads(evol("run", seeds, "--out", out, *options, "--json").stdout)
        assert plan["backend"] == "local" and plan["cost_usd"] == 0.0
        assert plan["models"] == dict.fromkeys(("evolve", "answer", "judge"), "tiny-model.Q4.gguf")
        assert all(role["cost_usd"] == 0.0 for role in plan["roles"].values())
    assert not out.exists()


def test_a_dry_run_names_the_backend_and_each_roles_model(evol, tmp_path: Path) -> None:
    seeds, out = write_seeds(tmp_path / "seeds.jsonl", SEEDS[:2]), tmp_path / "run"
    options = ["--out", out, "--base-url", "http://127.0.0.1:8000/v1", "--dry-run"]
    text = evol("run", seeds, *options, "--judge-model", "judge-7b").stdout
    assert (
        "backend openai, models: evolve the backend's model (asked at start), answer the "
        "backend's model (asked at start), judge judge-7b" in text
    )
    plan = json.loads(evol("run", seeds, *options, "--model", "gpt-4o-mini", "--json").stdout)
    assert plan["backend"] == "openai" and plan["cost_usd"] > 0
    assert set(plan["models"].values()) == {"gpt-4o-mini"}
