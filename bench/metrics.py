"""Benchmark `evol score`'s CPU figures on a synthetic 10,000-record run; prints JSON.

The run is 2,000 seeds x generations 0..4, each evolution its parent plus 10 to 20 words, as
an in-depth rewrite grows. Words come from 300 common ones and 20,000 rare ones, so that
instructions share words as real ones do. Measured: the diversity and drift figures
(`evol.quality.metrics.compute_metrics`) and the contamination check against 1,000 evaluation items
with 5% of the records carrying a planted 13-word overlap (`evol.quality.contamination`), with the
peak RSS of the process and the share of planted overlaps found.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import tempfile
import time
from pathlib import Path

from evol.quality.contamination import check_contamination
from evol.quality.metrics import compute_metrics

COMMON = [f"common{i}" for i in range(300)]
RARE = [f"rare{i}" for i in range(20_000)]


def words(rng: random.Random, count: int) -> list[str]:
    return [rng.choice(COMMON) if rng.random() < 0.4 else rng.choice(RARE) for _ in range(count)]


def build_run(run_dir: Path, seeds: int, generations: int, bench: Path) -> set[str]:
    """Write the run and the evaluation set; return the ids of the planted overlaps."""
    rng = random.Random(7)
    items = [" ".join(words(rng, rng.randint(20, 60))) for _ in range(1_000)]
    bench.write_text("".join(json.dumps({"prompt": item}) + "\n" for item in items))
    planted, files = set(), {g: [] for g in range(generations + 1)}
    for seed in range(seeds):
        text, parent = " ".join(words(rng, rng.randint(12, 30))), None
        for generation in range(generations + 1):
            record_id = f"s{seed}" + "".join(f".{g}" for g in range(1, generation + 1))
            if generation:
                text += " " + " ".join(words(rng, rng.randint(10, 20)))
            instruction = text
            if rng.random() < 0.05:
                item = rng.choice(items).split()
                start = rng.randrange(len(item) - 13 + 1)
                instruction += " " + " ".join(item[start : start + 13])
                planted.add(record_id)
            files[generation].append(
                {
                    "id": record_id,
                    "parent_id": parent,
                    "root_id": f"s{seed}",
                    "generation": generation,
                    "round": generation,
                    "operation": "deepen" if generation else None,
                    "instruction": instruction,
                    "input": "",
                    "output": "A short answer.",
                }
            )
            parent = record_id
    for generation, rows in files.items():
        with (run_dir / f"gen_{generation}.jsonl").open("w") as out:
            out.writelines(json.dumps(row) + "\n" for row in rows)
    (run_dir / "run.json").write_text(json.dumps({"status": "complete"}))
    return planted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=2_000)
    parser.add_argument("--generations", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        run_dir, bench = Path(directory), Path(directory) / "bench.jsonl"
        planted = build_run(run_dir, args.seeds, args.generations, bench)
        records = args.seeds * (args.generations + 1)
        started = time.perf_counter()
        metrics = compute_metrics(run_dir)
        metrics_s = time.perf_counter() - started
        started = time.perf_counter()
        report = check_contamination(run_dir, [bench])
        contamination_s = time.perf_counter() - started
    found = {flagged.id for flagged in report.flagged}
    print(
        json.dumps(
            {
                "records": records,
                "metrics_seconds": round(metrics_s, 2),
                "metrics_records_per_s": round(records / metrics_s),
                "contamination_seconds": round(contamination_s, 2),
                "contamination_planted_found": round(
                    len(found & planted) / max(1, len(planted)), 4
                ),
                "contamination_false_flags": len(found - planted),
                "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                "generations": [row.model_dump() for row in metrics.generations],
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
