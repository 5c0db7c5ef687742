"""Mutation testing of the modules that decide what is kept and what is paid (`make mutate`).

Runs mutmut (configured in pyproject.toml, [tool.mutmut]) and prints the share of mutants
killed per module; figures go to bench/results.json under "mutation". Mutants that survive are
either killed by a new test or listed, with the reason they cannot be told apart from the
original, in the README ("Mutation testing").
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).with_name("results.json")
MUTMUT = [sys.executable, "-m", "mutmut"]


def scores() -> dict[str, dict[str, int]]:
    """Per module: mutants killed, survived, and the rest (timeouts, not checked...)."""
    listing = subprocess.run(
        [*MUTMUT, "results", "--all", "true"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    per_module: dict[str, Counter[str]] = defaultdict(Counter)
    for line in listing.splitlines():
        name, _, status = line.strip().rpartition(": ")
        if not name.startswith("evol."):
            continue
        module = name.split(".x")[0].split(".xǁ")[0]
        per_module[module][status] += 1
    return {module: dict(counts) for module, counts in sorted(per_module.items())}


def main() -> None:
    if "--report-only" not in sys.argv:
        subprocess.run([*MUTMUT, "run"], cwd=ROOT, check=False)
    figures = scores()
    print(f"{'module':<22} {'killed':>7} {'survived':>9} {'other':>6} {'score':>7}")
    for module, counts in figures.items():
        killed, survived = counts.get("killed", 0), counts.get("survived", 0)
        other = sum(counts.values()) - killed - survived
        score = killed / max(1, killed + survived)
        print(f"{module:<22} {killed:>7} {survived:>9} {other:>6} {score:>7.1%}")
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results["mutation"] = figures
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
