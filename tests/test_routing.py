"""--base-url given several times: least-in-flight routing, failing endpoints rest."""

from __future__ import annotations

import json
import threading
from pathlib import Path

from conftest import assert_valid_run, run_args, write_seeds
from fake_server import FakeServer, Fault

SEEDS = [{"instruction": f"Explain idea {i} with an example."} for i in range(40)]


FAST_RETRIES = ("--retry-max-wait", "0.2")


def test_equal_servers_share_the_load_evenly(evol, tmp_path: Path) -> None:
    seeds = write_seeds(tmp_path / "seeds.jsonl", SEEDS)
    servers = [FakeServer(latency=0.02).start() for _ in range(3)]
    try:
        result = evol(
            *run_args(servers, seeds, tmp_path / "run", *FAST_RETRIES, "--generations", "2")
        )
    finally:
        for server in servers:
            server.stop()
    assert result.exit_code == 0, result.output
    manifest = assert_valid_run(tmp_path / "run")
    served = [len(server.requests) for server in servers]
    assert sum(served) == 40 * 7
    assert min(served) > sum(served) / 3 * 0.7, served
    assert [e["requests"] for e in manifest["endpoints"]] == served
    assert [e["url"] for e in manifest["endpoints"]] == [s.base_url for s in servers]


def test_the_faster_server_gets_more_requests(evol, tmp_path: Path) -> None:
    seeds = write_seeds(tmp_path / "seeds.jsonl", SEEDS)
    fast, slow = FakeServer(latency=0.01).start(), FakeServer(latency=0.15).start()
    try:
        result = evol(
            *run_args([fast, slow], seeds, tmp_path / "run", *FAST_RETRIES, "--generations", "1")
        )
    finally:
        fast.stop()
        slow.stop()
    assert result.exit_code == 0, result.output
    # Round-robin would split them evenly; fewest-in-flight follows the latency.
    assert len(fast.requests) > 3 * len(slow.requests), (len(fast.requests), len(slow.requests))


def test_a_failing_server_rests_and_the_run_does_not_notice(evol, tmp_path: Path) -> None:
    seeds = write_seeds(tmp_path / "seeds.jsonl", SEEDS)
    broken = FakeServer(faults=lambda _body: Fault("status", 503)).start()
    healthy = FakeServer(latency=0.02).start()
    try:
        result = evol(
            *run_args(
                [broken, healthy],
                seeds,
                tmp_path / "run",
                *FAST_RETRIES,
                "--generations",
                "2",
                "--json",
            )
        )
    finally:
        broken.stop()
        healthy.stop()
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["status"] == "complete" and summary["failed"] == []
    assert len(healthy.requests) == 40 * 7
    # It answers at once, so without resting it would draw most of the requests; resting
    # (0.5 s, doubling) leaves it a handful of probes.
    assert len(broken.requests) < 20, len(broken.requests)


def test_a_server_that_stops_midway_costs_nothing_but_its_requests_in_flight(
    evol, tmp_path: Path
) -> None:
    seeds = write_seeds(tmp_path / "seeds.jsonl", SEEDS)
    servers = [FakeServer(latency=0.03).start() for _ in range(3)]
    doomed = servers[1]
    stopped = threading.Event()

    def stop_when_busy() -> None:
        while len(doomed.requests) < 40:
            if stopped.wait(0.005):
                return
        doomed.stop()
        stopped.set()

    watcher = threading.Thread(target=stop_when_busy, daemon=True)
    watcher.start()
    try:
        result = evol(
            *run_args(
                servers, seeds, tmp_path / "run", *FAST_RETRIES, "--generations", "2", "--json"
            )
        )
    finally:
        stopped.set()
        watcher.join()
        for server in (servers[0], servers[2]):
            server.stop()
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["status"] == "complete" and summary["failed"] == []
    manifest = assert_valid_run(tmp_path / "run")
    records = manifest["counts"]["kept"] + manifest["counts"]["eliminated"]
    assert records == 40 + 40 * 2
    stats = {e["url"]: e for e in manifest["endpoints"]}
    assert stats[doomed.base_url]["failures"] >= 1
    assert len(doomed.requests) < 40 * 7 / 3  # it served its share only until it stopped
