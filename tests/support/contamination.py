"""Contamination checks without an LLM: an evaluation item (WORDS), a benchmark file of prompts
(write_bench), and the `evol score` options that leave every LLM-scored metric out (NO_LLM)."""

from __future__ import annotations

import json
from pathlib import Path

WORDS = [f"w{i}" for i in range(1, 31)]  # the evaluation item: w1 .. w30
NO_LLM = ("--no-difficulty", "--no-complexity", "--no-metrics")


def write_bench(path: Path, prompts: list[str]) -> Path:
    """A JSON Lines benchmark at `path`, one {"prompt": ...} row per prompt."""
    path.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts), encoding="utf-8")
    return path
