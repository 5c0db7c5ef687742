"""`evol optimize` on the fake setup: the failure rate before and after (`make bench`).

One `evol optimize` runs against the tests' fake OpenAI-compatible server (tests/support/fake_server.py,
`MethodResponder`): its evolver hands back an instruction unchanged (which the run eliminates)
for a fixed share of the seeds that the method's wording sets: 60% with the shipped templates,
10% when a template asks for a visible change (the "good" phrase), 90% when it asks to stay
close (the "bad" phrase). Its optimizer proposes, each step, one method with the good phrase,
one with the bad phrase, and one that drops $instruction (to be refused).

Reported: the dev set's failure rate before and after, the steps run and what each chose, the
candidates refused before evaluation, and the chat requests by kind. The figures show the loop
works as designed, not what it does for a real model (see docs/optimize.md). They go to
bench/results.json under "optimize".
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the package tests

from tests.support.fake_server import FakeServer, MethodResponder, kind_of  # noqa: E402

RESULTS = Path(__file__).with_name("results.json")
ENV = {k: v for k, v in os.environ.items() if not k.startswith(("EVOL_", "OPENAI_"))}
TOPICS = ("fractions", "photosynthesis", "sorting", "interest rates", "the water cycle")


def measure(folder: Path, seeds: int, dev_size: int, rounds: int) -> dict[str, Any]:
    """Optimize once against the fake server; the figures of its history."""
    path = folder / "seeds.jsonl"
    path.write_text(
        "".join(
            json.dumps({"instruction": f"Task {i}: explain {TOPICS[i % len(TOPICS)]} ({i})"}) + "\n"
            for i in range(seeds)
        ),
        encoding="utf-8",
    )
    out = folder / "optimize"
    with FakeServer(responder=MethodResponder()) as server:
        command = [
            sys.executable, "-m", "evol", "optimize", str(path), "--out", str(out),
            "--base-url", server.base_url, "--dev-size", str(dev_size),
            "--rounds", str(rounds), "--quiet", "--json",
        ]  # fmt: skip
        done = subprocess.run(command, env=ENV, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"evol optimize failed: {done.stderr}")
        requests = Counter(kind_of(body) for body in server.requests)
    summary = json.loads(done.stdout)
    history = json.loads((out / "history.json").read_text(encoding="utf-8"))
    return {
        "dev_seeds": dev_size,
        "rounds": rounds,
        "failure_rate_before": summary["start_failure_rate"],
        "failure_rate_after": summary["best_failure_rate"],
        "steps": summary["steps_done"],
        "chosen": summary["chosen"],
        "stopped": summary["stopped"],
        "refused_before_evaluation": sum(
            1 for step in history["steps"] for c in step["candidates"] if c["refused"]
        ),
        "accepted_intervals": [
            [round(c["difference"]["low"], 4), round(c["difference"]["high"], 4)]
            for step in history["steps"]
            for c in step["candidates"]
            if c["accepted"]
        ],
        "requests": dict(sorted(requests.items())),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=500)
    parser.add_argument("--dev-size", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="evol-bench-"))
    figures = measure(folder, args.seeds, args.dev_size, args.rounds)
    for name, value in figures.items():
        print(f"{name:>26}: {value}")
    if not figures["failure_rate_after"] < figures["failure_rate_before"]:
        raise SystemExit("optimize did not lower the failure rate on the fake setup")
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results["optimize"] = figures
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
