"""`evol run --engine ray` beside the live engine, in one process and on one machine (`make bench`).

Both run the same seeds as child processes against the tests' fake server at L = 100 ms with
`--concurrency 256`: calls per second as a fraction of the limit C/L, and the CPU the evol
process (the driver) spends per call, measured alone (os.wait4). The Ray run goes through a
local Ray head with 2 CPUs that this script starts in its own process group and kills whole at
the end; the CPU of Ray's own processes (raylet, GCS, the HTTP stage's actors) is not in the
driver's figure, and shares the same cores.

Skipped, with a line saying so, where Ray is not installed (pip install -e '.[ray]').
Figures go to bench/results.json under "ray_engine" and to docs/performance.md.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

from throughput import ENV, RESULTS, evol_run, write_seeds

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the package tests

from tests.support.fake_server import FakeServer  # noqa: E402

TABLES_PAGE = Path(__file__).resolve().parents[1] / "docs" / "performance.md"
TABLE_START, TABLE_END = "<!-- bench:ray -->", "<!-- /bench:ray -->"
LATENCY, CONCURRENCY = 0.1, 256
RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}


def local_ray(cpus: int = 2) -> tuple[subprocess.Popen[bytes], str]:
    """A Ray head in a process group of its own (kill the group to end every Ray process)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    ray_cli = Path(sys.executable).with_name("ray")
    process = subprocess.Popen(
        [str(ray_cli), "start", "--head", "--block", f"--port={port}", f"--num-cpus={cpus}",
         "--node-ip-address=127.0.0.1", "--include-dashboard=false", "--disable-usage-stats"],
        start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env=os.environ | RAY_ENV,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while True:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return process, f"127.0.0.1:{port}"
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("ray start did not come up")
        time.sleep(0.2)


def forget_cluster(address: str) -> None:
    """Remove the address `ray start` left for later `ray.init()` calls, if it is this
    cluster's (killed, it cannot; a `ray.init()` with no address would try to join it)."""
    current = Path(tempfile.gettempdir()) / "ray" / "ray_current_cluster"
    with contextlib.suppress(OSError):
        if current.read_text().strip().endswith(":" + address.rsplit(":", 1)[1]):
            current.unlink()


def one_run(work: Path, name: str, seeds: Path, generations: int, *extra: object) -> dict:
    with FakeServer(latency=LATENCY, record=False) as server:
        run = evol_run(
            seeds, work / name, [server],
            "--generations", generations, "--concurrency", CONCURRENCY, *extra,
        )  # fmt: skip
        calls = server.served
    limit = CONCURRENCY / LATENCY
    return {
        "calls": calls,
        "wall_s": round(run["wall_s"], 2),
        "calls_per_s": round(calls / run["wall_s"]),
        "fraction_of_limit": round(calls / run["wall_s"] / limit, 3),
        "driver_cpu_ms_per_call": round(run["cpu_s"] * 1000 / calls, 3),
        "driver_peak_rss_mb": run["peak_rss_mb"],
        "status": run["manifest"]["summary"]["status"],
    }


def measure(work: Path, seeds: int = 500, generations: int = 2) -> dict[str, Any]:
    seed_file = write_seeds(work / "seeds.jsonl", seeds)
    os.environ.update(RAY_ENV)
    ENV.update(RAY_ENV)
    live = one_run(work, "live", seed_file, generations)
    cluster, address = local_ray()
    try:
        through_ray = one_run(
            work, "ray", seed_file, generations, "--engine", "ray", "--ray-address", address
        )
    finally:
        os.killpg(cluster.pid, signal.SIGKILL)
        cluster.wait()
        forget_cluster(address)
    return {
        "date": date.today().isoformat(),
        "seeds": seeds,
        "generations": generations,
        "latency_s": LATENCY,
        "concurrency": CONCURRENCY,
        "limit_calls_per_s": round(CONCURRENCY / LATENCY),
        "ray_cpus": 2,
        "ray_batch_size": 64,
        "live": live,
        "ray": through_ray,
    }


def table(figures: dict[str, Any]) -> str:
    rows = [
        f"| {engine} | {run['calls']:,} | {run['wall_s']} s | {run['calls_per_s']:,} "
        f"| {run['fraction_of_limit']:.1%} | {run['driver_cpu_ms_per_call']} ms "
        f"| {run['driver_peak_rss_mb']} MB |"
        for engine, run in (("live", figures["live"]), ("ray", figures["ray"]))
    ]
    return "\n".join(
        [
            f"{figures['seeds']:,} seeds x {figures['generations']} generations, L = "
            f"{figures['latency_s'] * 1000:g} ms, `--concurrency {figures['concurrency']}` (limit "
            f"C/L = {figures['limit_calls_per_s']:,} calls/s), a local Ray with "
            f"{figures['ray_cpus']} CPUs on the same machine, {figures['date']}:",
            "",
            "| engine | calls | wall | calls/s | fraction of C/L | driver CPU per call "
            "| driver peak RSS |",
            "| --- | --- | --- | --- | --- | --- | --- |",
            *rows,
            "",
        ]
    )


def update_page(figures: dict[str, Any]) -> None:
    text = TABLES_PAGE.read_text()
    start, end = text.find(TABLE_START), text.find(TABLE_END)
    if start < 0 or end < start:
        return
    before, after = text[: start + len(TABLE_START)], text[end:]
    TABLES_PAGE.write_text(f"{before}\n{table(figures)}{after}")


def main() -> None:
    if importlib.util.find_spec("ray") is None:
        print("ray_engine: skipped, Ray is not installed (pip install -e '.[ray]')")
        return
    figures = measure(Path(tempfile.mkdtemp(prefix="evol-bench-ray-")))
    print(json.dumps(figures, indent=2))
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results["ray_engine"] = figures
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    update_page(figures)


if __name__ == "__main__":
    main()
