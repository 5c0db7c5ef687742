"""Peak memory of reading a seed file, by container (`make bench`).

Writes N seeds (default 1,000,000, ~55 bytes each) as JSON Lines and as one JSON array, and
checks each the way `evol run` does before any call (`scan_seeds`) in a child process, whose
peak RSS (os.wait4) is compared with that of a child that only imports the reader. A JSON
array streams an element at a time, so the two should cost about the same.

Figures go to bench/results.json under "seed_memory".
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).with_name("results.json")
SRC = str(Path(__file__).resolve().parents[1] / "src")
IMPORT_ONLY = "import sys; from pathlib import Path; from evol.seeds import scan_seeds"
SCAN = IMPORT_ONLY + "; print(scan_seeds(Path(sys.argv[1])).count)"


def child_peak(code: str, *args: str) -> tuple[float, float]:
    """(peak RSS in MB, wall seconds) of `python -c code args` run alone."""
    env = {**os.environ, "PYTHONPATH": SRC}
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-c", code, *args], env=env)
    _pid, status, usage = os.wait4(process.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"the child failed: {code} {args}")
    return usage.ru_maxrss / 1024, time.perf_counter() - started  # ru_maxrss is in KiB on Linux


def write_files(folder: Path, count: int) -> dict[str, Path]:
    """The seeds as JSON Lines and as a JSON array on one line (as json.dump writes it), written
    a row at a time: a child's peak RSS counts the parent's pages at the fork."""
    jsonl, array = folder / "seeds.jsonl", folder / "seeds.json"
    with jsonl.open("w") as lines, array.open("w") as one:
        one.write("[")
        for number in range(count):
            row = json.dumps({"instruction": f"Task {number}: explain why the sky is blue"})
            lines.write(row + "\n")
            one.write((", " if number else "") + row)
        one.write("]\n")
    return {"jsonl": jsonl, "json": array}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=1_000_000)
    count = parser.parse_args().seeds
    baseline, _seconds = child_peak(IMPORT_ONLY)
    figures: dict[str, object] = {"seeds": count, "import_only_mb": round(baseline, 1)}
    with tempfile.TemporaryDirectory() as folder:
        for name, path in write_files(Path(folder), count).items():
            peak, seconds = child_peak(SCAN, str(path))
            figures[name] = {
                "file_mb": round(path.stat().st_size / 1e6, 1),
                "peak_rss_mb": round(peak, 1),
                "seconds": round(seconds, 1),
            }
            print(f"{name}: {figures[name]}")
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results["seed_memory"] = figures
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
