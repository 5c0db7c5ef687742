"""Benchmark the duplicate rule at 100,000 instructions (`make bench`).

Builds a pool the way a run does (find, then add) from synthetic instructions with 5% planted
near-duplicates (one word in twenty changed), and reports time, throughput, peak RSS and the
share of planted duplicates found: minhash at 100,000 and the exact rouge-l method at 1,000 (the
size up to which `--dedup-method auto` picks it). Figures go to bench/results.json, "dedup".
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import time
from pathlib import Path

from evol.method.dedup import DuplicateIndex

RESULTS = Path(__file__).with_name("results.json")


def instructions(count: int, seed: int = 1) -> tuple[list[str], set[int]]:
    rng = random.Random(seed)
    verbs = ["Explain", "Describe", "Compare", "Summarize", "List", "Analyze", "Write", "Design"]
    words = [f"term{i}" for i in range(20_000)]
    texts, planted = [], set()
    for number in range(count):
        if number > 100 and rng.random() < 0.05:
            sentence = texts[rng.randrange(number)].split()
            sentence[rng.randrange(1, len(sentence))] = "changed"
            planted.add(number)
            texts.append(" ".join(sentence))
        else:
            texts.append(
                f"{rng.choice(verbs)} " + " ".join(rng.choices(words, k=rng.randint(12, 30)))
            )
    return texts, planted


def measure(records: int, method: str) -> dict[str, object]:
    texts, planted = instructions(records)
    pool = DuplicateIndex(method=method)
    found = 0
    started = time.perf_counter()
    for number, text in enumerate(texts):
        if pool.find(text, f"r{number}") is not None:
            found += number in planted
        pool.add(f"r{number}", f"r{number}", text)
    seconds = time.perf_counter() - started
    return {
        "records": records,
        "method": method,
        "seconds": round(seconds, 2),
        "records_per_s": round(records / seconds),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "planted_duplicates": len(planted),
        "planted_found": round(found / max(1, len(planted)), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000, help="pool size for minhash")
    parser.add_argument("--exact-records", type=int, default=1_000, help="pool size for rouge-l")
    args = parser.parse_args()
    # The exact method first: peak RSS only grows, so the large run's figure is its own.
    runs = [measure(args.exact_records, "rouge-l"), measure(args.records, "minhash")]
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results["dedup"] = runs
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(
        f"{'method':>8} {'records':>8} {'seconds':>8} {'records/s':>10} {'peak RSS MB':>12} {'planted found':>14}"
    )
    for run in runs:
        print(
            f"{run['method']:>8} {run['records']:>8} {run['seconds']:>8} {run['records_per_s']:>10}"
            f" {run['peak_rss_mb']:>12} {run['planted_found']:>14.2%}"
        )


if __name__ == "__main__":
    main()
