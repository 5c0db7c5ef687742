"""The Makefile in its own terms: what `make demo` would run (`make -n` prints it)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def demo_command(**env: str) -> str:
    """The `evol run` line `make demo` would run with this environment (and make variables)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "EVOL_"))}
    variables = [f"{k}={v}" for k, v in env.items() if not k.startswith("OPENAI_")]
    clean.update({k: v for k, v in env.items() if k.startswith("OPENAI_")})
    printed = subprocess.run(
        ["make", "-s", "-n", "-C", str(ROOT), "demo", *variables],
        env=clean, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return next(line for line in printed.splitlines() if " run examples/seeds.jsonl" in line)
