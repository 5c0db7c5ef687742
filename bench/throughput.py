"""Benchmark one evol process against a fake server of fixed latency (`make bench`).

Starts the tests' fake OpenAI-compatible server with latency L and no concurrency limit of its
own, runs `evol run` on N synthetic seeds for G generations (answers and the judge on) with
--concurrency C, and reports the calls made, wall time, calls/s against the limit C/L, client
CPU per call and the client's peak RSS. Figures go to bench/results.json under "throughput".
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from fake_server import FakeServer  # noqa: E402

try:  # the server shares the machine with the client: let it use as little CPU as it can
    import uvloop

    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
except ImportError:
    pass

RESULTS = Path(__file__).with_name("results.json")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=2000)
    parser.add_argument("--generations", type=int, default=4)
    parser.add_argument("--latency", type=float, default=0.1)
    parser.add_argument("--concurrency", type=int, default=256)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="evol-bench-"))
    seeds = work / "seeds.jsonl"
    with seeds.open("w") as fp:
        for number in range(args.seeds):
            fp.write(
                json.dumps({"instruction": f"Explain topic {number} to a curious student."}) + "\n"
            )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EVOL_", "OPENAI_"))}
    with FakeServer(latency=args.latency) as server:
        command = [
            sys.executable, "-m", "evol", "run", str(seeds), "--out", str(work / "run"),
            "--base-url", server.base_url, "--generations", str(args.generations),
            "--concurrency", str(args.concurrency), "--quiet",
        ]  # fmt: skip
        started = time.perf_counter()
        subprocess.run(command, env=env, check=True)
        wall = time.perf_counter() - started
        calls = len(server.requests)
    child = resource.getrusage(resource.RUSAGE_CHILDREN)
    limit = args.concurrency / args.latency
    figures = {
        "seeds": args.seeds,
        "generations": args.generations,
        "latency_s": args.latency,
        "concurrency": args.concurrency,
        "calls": calls,
        "wall_s": round(wall, 2),
        "calls_per_s": round(calls / wall),
        "limit_calls_per_s": round(limit),
        "fraction_of_limit": round(calls / wall / limit, 3),
        "client_cpu_ms_per_call": round((child.ru_utime + child.ru_stime) * 1000 / calls, 3),
        "client_peak_rss_mb": round(child.ru_maxrss / 1024),
    }
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results["throughput"] = figures
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    for name, value in figures.items():
        print(f"{name:>24}: {value}")


if __name__ == "__main__":
    main()
