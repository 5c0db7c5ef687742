"""Throughput, rate limits, several endpoints, memory and resume of `evol run` (`make bench`).

Each case starts the tests' fake OpenAI-compatible server (tests/support/fake_server.py) with a fixed
latency L and no concurrency limit of its own, runs `evol run` as a child process on N synthetic
seeds, and measures the child alone (os.wait4): wall time, CPU per LLM call, peak RSS.

- saturation: 2,000 seeds x 4 generations, L = 100 ms, --concurrency 256: calls/s against the
  limit C/L, and client CPU per call.
- long_answers: the same with answers of about 1,200 characters, as real models write them
  (the answer rules and the HTTP client's body handling scale with the reply).
- rate_limit: a server that answers 429 above 500 requests/s for the first 8 s, then lifts the
  limit: the concurrency evol keeps in flight is sampled as it backs off (AIMD) and recovers;
  then the same server with --rpm set just under its limit.
- endpoints: four servers, one stopped once half of the calls are made: the spread of
  requests and whether the run noticed.
- memory: 100,000 seeds x 1 generation (L = 0), and 10,000 for the growth per seed.
- resume: `evol run` again on the finished 100,000-seed run.

Figures go to bench/results.json under "throughput".
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the package tests

from tests.support.fake_server import FakeServer, Responder  # noqa: E402

try:  # the servers share the machine with the client: let them use as little CPU as they can
    import uvloop

    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
except ImportError:
    pass

RESULTS = Path(__file__).with_name("results.json")
TABLES_PAGE = Path(__file__).resolve().parents[1] / "docs" / "performance.md"
TABLE_START, TABLE_END = "<!-- bench:throughput -->", "<!-- /bench:throughput -->"
ENV = {k: v for k, v in os.environ.items() if not k.startswith(("EVOL_", "OPENAI_"))}
CASES = ("saturation", "long_answers", "rate_limit", "endpoints", "memory", "resume")
# `--profile DIR`: each child runs under cProfile and writes DIR/<case>.prof.
PROFILE_DIR: Path | None = None


def write_seeds(path: Path, count: int) -> Path:
    with path.open("w") as fp:
        for number in range(count):
            fp.write(json.dumps({"instruction": f"Explain topic {number} to a curious student."}))
            fp.write("\n")
    return path


def evol_run(seeds: Path, out: Path, servers: list[FakeServer], *options: object) -> dict[str, Any]:
    """Run `evol run` as a child; its wall time, CPU seconds and peak RSS, and run.json."""
    urls = [part for server in servers for part in ("--base-url", server.base_url)]
    profile = ["-m", "cProfile", "-o", str(PROFILE_DIR / f"{out.name}.prof")] if PROFILE_DIR else []
    command = [sys.executable, *profile, "-m", "evol", "run", str(seeds), "--out", str(out), *urls]
    command += ["--quiet", *map(str, options)]
    started = time.perf_counter()
    child = subprocess.Popen(command, env=ENV)
    _pid, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"evol run failed: {' '.join(command)}")
    return {
        "wall_s": wall,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "peak_rss_mb": round(usage.ru_maxrss / 1024),
        "manifest": json.loads((out / "run.json").read_text()),
    }


class LongAnswers(Responder):
    """The tests' replies, with every answer about 1,200 characters long."""

    def answer(self, instruction: str) -> str | tuple[str, str]:
        short = super().answer(instruction)
        text = short if isinstance(short, str) else short[0]
        body = " ".join(
            f"Step {n}: work through part {n} of the task, then check it." for n in range(20)
        )
        return f"{text} {body}"[:1200]


def long_answers(work: Path) -> dict[str, Any]:
    return saturation(work, responder=LongAnswers(), name="long_answers")


def saturation(
    work: Path,
    seeds: int = 2000,
    generations: int = 4,
    responder: Responder | None = None,
    name: str = "saturation",
) -> dict[str, Any]:
    latency, concurrency = 0.1, 256
    seed_file = write_seeds(work / f"{name}.jsonl", seeds)
    server = FakeServer(latency=latency, record=False, responder=responder or Responder())
    with server, Sampler(server, 0.05) as sampler:
        run = evol_run(
            seed_file, work / name, [server],
            "--generations", generations, "--concurrency", concurrency,
        )  # fmt: skip
        calls = server.served
    limit = concurrency / latency
    return {
        "seeds": seeds,
        "generations": generations,
        "latency_s": latency,
        "concurrency": concurrency,
        "calls": calls,
        "wall_s": round(run["wall_s"], 2),
        "calls_per_s": round(calls / run["wall_s"]),
        "limit_calls_per_s": round(limit),
        "fraction_of_limit": round(calls / run["wall_s"] / limit, 3),
        **steady_state(sampler, calls, limit),
        "client_cpu_ms_per_call": round(run["cpu_s"] * 1000 / calls, 3),
        "client_peak_rss_mb": run["peak_rss_mb"],
    }


def steady_state(sampler: Sampler, calls: int, limit: float) -> dict[str, Any]:
    """The run's phases from the server's side: the start-up before the first request, the rate
    while 10% to 90% of the calls were made (every lineage busy), and the last 10% (fewer
    lineages left than slots). The end-to-end fraction counts all three, and the writing of
    the dataset after the last reply."""

    def when(share: float) -> float:
        return next(t for t, n in zip(sampler.times, sampler.served, strict=True) if n >= share)

    first, last = when(1), when(calls)
    middle = when(0.9 * calls) - when(0.1 * calls)
    return {
        "first_request_after_s": round(first, 2),
        "steady_fraction_of_limit": round(0.8 * calls / middle / limit, 3),
        "last_tenth_of_calls_s": round(last - when(0.9 * calls), 2),
        "ideal_tenth_of_calls_s": round(0.1 * calls / limit, 2),
        "last_reply_after_s": round(last, 2),
    }


class Sampler:
    """Every `every` seconds: the server's requests in flight and its answers (not 429) so far."""

    def __init__(self, server: FakeServer, every: float):
        self.server, self.every = server, every
        self.in_flight: list[int] = []
        self.answered: list[int] = []
        self.served: list[int] = []  # requests so far, 429s included
        self.times: list[float] = []  # seconds since the sampler started
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        started = time.perf_counter()
        while not self._stop.wait(self.every):
            self.times.append(time.perf_counter() - started)
            self.served.append(self.server.served)
            self.in_flight.append(self.server.in_flight)
            self.answered.append(self.server.served - self.server.faults_sent["429"])

    def answered_per_s(self) -> list[int]:
        counts = [0, *self.answered]
        return [round((b - a) / self.every) for a, b in zip(counts, counts[1:], strict=False)]


def rate_limit(work: Path, seeds: int = 1500, generations: int = 2) -> dict[str, Any]:
    latency, concurrency, server_rate, limited_for = 0.1, 256, 500, 8.0
    seed_file = write_seeds(work / "rate.jsonl", seeds)
    figures: dict[str, Any] = {
        "seeds": seeds,
        "generations": generations,
        "latency_s": latency,
        "concurrency": concurrency,
        "server_limit_per_s": server_rate,
    }
    with FakeServer(latency=latency, max_rate=server_rate, record=False) as server:
        lift = threading.Timer(limited_for, lambda: setattr(server, "max_rate", None))
        lift.start()
        with Sampler(server, 0.5) as sampler:
            run = evol_run(
                seed_file, work / "aimd", [server],
                "--generations", generations, "--concurrency", concurrency,
            )  # fmt: skip
        lift.cancel()
        served, refused = server.served, server.faults_sent["429"]
    limited = sampler.answered_per_s()[2 : int(limited_for / 0.5)]  # past the first second
    figures["aimd"] = {
        "limit_lifted_after_s": limited_for,
        "requests": served,
        "answered_429": refused,
        "share_429": round(refused / served, 3),
        "answered_per_s_while_limited": round(sum(limited) / len(limited)),
        "in_flight_every_0_5_s": sampler.in_flight,
        "answered_per_s_every_0_5_s": sampler.answered_per_s(),
        "concurrency_cuts": run["manifest"]["concurrency"]["cuts_on_429"],
        "lowest_concurrency": run["manifest"]["concurrency"]["lowest"],
        "final_concurrency": run["manifest"]["concurrency"]["final"],
        "wall_s": round(run["wall_s"], 2),
        "status": run["manifest"]["status"],
    }
    rpm = server_rate * 60 * 0.95
    with FakeServer(latency=latency, max_rate=server_rate, record=False) as server:
        run = evol_run(
            seed_file, work / "rpm", [server],
            "--generations", generations, "--concurrency", concurrency, "--rpm", rpm,
        )  # fmt: skip
        served, refused = server.served, server.faults_sent["429"]
    figures["rpm"] = {
        "rpm": rpm,
        "requests": served,
        "answered_429": refused,
        "calls_per_s": round(served / run["wall_s"]),
        "fraction_of_rpm": round(served / run["wall_s"] / (rpm / 60), 3),
        "status": run["manifest"]["status"],
    }
    return figures


def endpoints(work: Path, seeds: int = 2000, generations: int = 2) -> dict[str, Any]:
    latency, concurrency = 0.1, 256
    seed_file = write_seeds(work / "endpoints.jsonl", seeds)
    expected_calls = seeds * (1 + 3 * generations)
    servers = [FakeServer(latency=latency, record=False).start() for _ in range(4)]
    stopped_at: dict[str, Any] = {}

    def stop_one_midway() -> None:
        while sum(server.served for server in servers) < expected_calls // 2:
            time.sleep(0.005)
        stopped_at["served_each"] = [server.served for server in servers]
        servers[3].stop()

    stopper = threading.Thread(target=stop_one_midway, daemon=True)
    stopper.start()
    try:
        run = evol_run(
            seed_file, work / "endpoints", servers,
            "--generations", generations, "--concurrency", concurrency,
        )  # fmt: skip
    finally:
        stopper.join(5)
        for server in servers[:3]:
            server.stop()
    manifest = run["manifest"]
    before = stopped_at["served_each"]
    records = manifest["counts"]["kept"] + manifest["counts"]["eliminated"]
    return {
        "servers": 4,
        "seeds": seeds,
        "generations": generations,
        "latency_s": latency,
        "concurrency": concurrency,
        "served_each_when_one_stopped": before,
        "spread_before_stop": round(min(before) / max(before), 3),
        "served_each_at_the_end": [server.served for server in servers],
        "failures_per_endpoint": [e["failures"] for e in manifest["endpoints"]],
        "status": manifest["status"],
        "failed_steps": len(manifest["summary"]["failed"]),
        "records": records,
        "records_expected": seeds * (1 + generations),
        "wall_s": round(run["wall_s"], 2),
        "calls_per_s": round(sum(server.served for server in servers) / run["wall_s"]),
    }


def memory(work: Path, sizes: tuple[int, ...] = (10_000, 100_000)) -> dict[str, Any]:
    figures: dict[str, Any] = {"generations": 1, "latency_s": 0.0, "concurrency": 256}
    with FakeServer(record=False) as server:
        for size in sizes:
            seed_file = write_seeds(work / f"memory_{size}.jsonl", size)
            run = evol_run(
                seed_file, work / f"memory_{size}", [server],
                "--generations", 1, "--concurrency", 256,
            )  # fmt: skip
            figures[f"peak_rss_mb_{size}_seeds"] = run["peak_rss_mb"]
            figures[f"wall_s_{size}_seeds"] = round(run["wall_s"], 1)
    small, large = sizes[0], sizes[-1]
    growth = figures[f"peak_rss_mb_{large}_seeds"] - figures[f"peak_rss_mb_{small}_seeds"]
    figures["growth_bytes_per_seed"] = round(growth * 1024 * 1024 / (large - small))
    return figures


def resume(work: Path, size: int = 100_000) -> dict[str, Any]:
    out = work / f"memory_{size}"
    with FakeServer(record=False) as server:
        run = evol_run(
            work / f"memory_{size}.jsonl", out, [server], "--generations", 1, "--concurrency", 256
        )
        calls = server.served
    return {
        "records": run["manifest"]["summary"]["dataset_records"],
        "wall_s": round(run["wall_s"], 2),
        "calls": calls,
        "peak_rss_mb": run["peak_rss_mb"],
    }


def readme_tables(figures: dict[str, Any]) -> str:
    """docs/performance.md's throughput tables, from the figures in results.json."""
    out: list[str] = []
    # The same workload with answers of about 1,200 characters (`--case long_answers`).
    longer = figures.get("long_answers")
    long_row = (
        [
            f"| {longer['calls']:,} (answers of ~1,200 characters) | {longer['wall_s']} s "
            f"| {longer['calls_per_s']:,} | {longer['limit_calls_per_s']:,} "
            f"| {longer['fraction_of_limit']:.1%} "
            f"| {longer.get('steady_fraction_of_limit', float('nan')):.1%} "
            f"| {longer['client_cpu_ms_per_call']} ms | {longer['client_peak_rss_mb']} MB |"
        ]
        if longer
        else []
    )
    if run := figures.get("saturation"):
        out += [
            f"Saturation: {run['seeds']:,} seeds x {run['generations']} generations, answers and "
            f"judge on, L = {run['latency_s'] * 1000:g} ms, `--concurrency {run['concurrency']}`:",
            "",
            "| calls | wall | calls/s | limit C/L | fraction of limit | steady state "
            "| client CPU per call | client peak RSS |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
            f"| {run['calls']:,} | {run['wall_s']} s | {run['calls_per_s']:,} "
            f"| {run['limit_calls_per_s']:,} | {run['fraction_of_limit']:.1%} "
            f"| {run.get('steady_fraction_of_limit', float('nan')):.1%} "
            f"| {run['client_cpu_ms_per_call']} ms | {run['client_peak_rss_mb']} MB |",
            *long_row,
            "",
            "The fraction of limit is end to end (wall time from starting `evol run` to its "
            "exit); the steady state is the rate while the 10th to the 90th percent of the calls "
            f"were made. The first request went out {run.get('first_request_after_s', '?')} s "
            f"after the start, and the last tenth of the calls took "
            f"{run.get('last_tenth_of_calls_s', '?')} s (at the limit: "
            f"{run.get('ideal_tenth_of_calls_s', '?')} s), as fewer lineages than slots remain.",
            "",
        ]
    if run := figures.get("rate_limit"):
        aimd, rpm = run["aimd"], run["rpm"]
        out += [
            f"Rate limits: a server that answers 429 above {run['server_limit_per_s']} "
            f"requests/s, `--concurrency {run['concurrency']}`, {run['seeds']:,} seeds x "
            f"{run['generations']} generations:",
            "",
            "| case | requests | answered 429 | answered/s while limited | concurrency | status |",
            "| --- | --- | --- | --- | --- | --- |",
            f"| AIMD alone; the limit lifted after {aimd['limit_lifted_after_s']:g} s "
            f"| {aimd['requests']:,} | {aimd['share_429']:.2%} "
            f"| {aimd['answered_per_s_while_limited']} "
            f"| {run['concurrency']} -> {aimd['lowest_concurrency']} (lowest) -> "
            f"{aimd['final_concurrency']} at the end | {aimd['status']} |",
            f"| `--rpm {rpm['rpm']:g}` (95% of the limit) | {rpm['requests']:,} "
            f"| {rpm['answered_429'] / rpm['requests']:.2%} | {rpm['calls_per_s']} "
            f"| {run['concurrency']} | {rpm['status']} |",
            "",
            f"Requests in flight every 0.5 s under AIMD: {aimd['in_flight_every_0_5_s']}.",
            "",
        ]
    if run := figures.get("endpoints"):
        out += [
            f"Several servers: {run['servers']} of them, L = {run['latency_s'] * 1000:g} ms, "
            f"{run['seeds']:,} seeds x {run['generations']} generations; the last one stopped "
            "when half of the calls were made:",
            "",
            "| requests each when it stopped | at the end | failed steps | records | status |",
            "| --- | --- | --- | --- | --- |",
            f"| {', '.join(f'{n:,}' for n in run['served_each_when_one_stopped'])} "
            f"| {', '.join(f'{n:,}' for n in run['served_each_at_the_end'])} "
            f"| {run['failed_steps']} | {run['records']:,} of {run['records_expected']:,} "
            f"| {run['status']} |",
            "",
        ]
    if run := figures.get("memory"):
        sizes = sorted(int(k.split("_")[3]) for k in run if k.startswith("peak_rss_mb_"))
        out += [
            "Memory, 1 generation at L = 0 (every seed answered, evolved, answered and judged):",
            "",
            "| seeds | LLM calls | wall | peak RSS |",
            "| --- | --- | --- | --- |",
            *(
                f"| {n:,} | {4 * n:,} | {run[f'wall_s_{n}_seeds']} s "
                f"| {run[f'peak_rss_mb_{n}_seeds']} MB |"
                for n in sizes
            ),
            "",
            f"The peak grows by {run['growth_bytes_per_seed']} bytes a seed: the resume index "
            "and, at the end, the seed order used to sort the files.",
            "",
        ]
    if run := figures.get("resume"):
        out += [
            f"Re-running the finished {run['records']:,}-record run: {run['wall_s']} s, "
            f"{run['calls']} calls.",
            "",
        ]
    return "\n".join(out).rstrip() + "\n"


def update_readme(figures: dict[str, Any]) -> None:
    text = TABLES_PAGE.read_text()
    start, end = text.find(TABLE_START), text.find(TABLE_END)
    if start < 0 or end < start:
        return
    before, after = text[: start + len(TABLE_START)], text[end:]
    TABLES_PAGE.write_text(f"{before}\n{readme_tables(figures)}{after}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", action="append", choices=CASES, help="default: all")
    parser.add_argument("--profile", type=Path, help="write each child's cProfile stats here")
    args = parser.parse_args()
    if args.profile:
        global PROFILE_DIR
        PROFILE_DIR = args.profile
        PROFILE_DIR.mkdir(parents=True, exist_ok=True)
    cases = args.case or list(CASES)
    if "resume" in cases and "memory" not in cases:
        parser.error("resume re-runs the run of the memory case: add --case memory")
    work = Path(tempfile.mkdtemp(prefix="evol-bench-"))
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    throughput = results.get("throughput", {})
    if "calls" in throughput:  # the single-case layout of earlier versions
        throughput = {}
    for case in cases:
        figures = globals()[case](work)
        throughput[case] = figures
        print(f"{case}:")
        for name, value in figures.items():
            print(f"  {name:>34}: {value}")
        results["throughput"] = throughput
        RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    update_readme(throughput)


if __name__ == "__main__":
    main()
