"""--base-url given several times: least-in-flight routing, failing endpoints rest."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from pathlib import Path

import pytest

from evol.errors import TransientBackendError
from evol.llm import Completion, GenerationParams, LLMRequest
from evol.llm.routing import LONGEST_REST_S, Endpoint, EndpointRouter
from tests.support.fake_server import FakeServer, Fault
from tests.support.runs import assert_valid_run, run_args, write_seeds

pytestmark = pytest.mark.measured  # asserts on time or memory: left out of `make mutate`

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


def test_a_server_that_does_not_answer_gets_only_what_it_holds(evol, tmp_path: Path) -> None:
    seeds = write_seeds(tmp_path / "seeds.jsonl", SEEDS)
    fast, stuck = FakeServer().start(), FakeServer(hold=lambda _body: True).start()
    # The stuck server answers nothing until the fast one has served 200 of the 280 calls:
    # fewest-in-flight sends it a request only while it holds no more than the fast one has
    # in flight, so it never takes enough of the 16 slots to stall the run.
    watcher = threading.Thread(
        target=lambda: (fast.wait_until(lambda: len(fast.requests) >= 200), stuck.release()),
        daemon=True,
    )
    watcher.start()
    try:
        result = evol(
            *run_args([stuck, fast], seeds, tmp_path / "run", *FAST_RETRIES, "--generations", "2")
        )
    finally:
        watcher.join()
        fast.stop()
        stuck.stop()
    assert result.exit_code == 0, result.output
    assert len(fast.requests) + len(stuck.requests) == 40 * 7
    assert len(fast.requests) >= 200


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
    servers = [FakeServer(latency=0.01).start() for _ in range(3)]
    doomed = servers[1]
    # From its 41st request on, the doomed server holds what it gets, then goes down with
    # those requests unanswered.
    doomed.hold = lambda _body: len(doomed.requests) > 40
    watcher = threading.Thread(
        target=lambda: (doomed.wait_until(lambda: doomed.held >= 1), doomed.stop()), daemon=True
    )
    watcher.start()
    try:
        result = evol(
            *run_args(
                servers, seeds, tmp_path / "run", *FAST_RETRIES, "--generations", "2", "--json"
            )
        )
    finally:
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
    assert 41 <= len(doomed.requests) <= 40 + 16  # its 40, and at most a full set of slots held


# -- the router's choices, against in-process backends -------------------------------------


class HeldBackend:
    """A ChatBackend whose replies wait for `release`, or that fails while `failing`."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.failing = False
        self.calls = 0

    async def complete(self, request: LLMRequest) -> Completion:
        self.calls += 1
        if self.failing:
            raise TransientBackendError("down", retry_after=None)
        await self.release.wait()
        return Completion(text="ok")

    async def default_model(self) -> str:
        return "m"

    async def aclose(self) -> None:
        pass


def ask(router: EndpointRouter) -> asyncio.Task:
    return asyncio.ensure_future(router.complete(LLMRequest([], "m", GenerationParams())))


def test_requests_go_to_the_fewest_in_flight_and_ties_take_turns() -> None:
    async def scenario() -> list[list[int]]:
        first, second = HeldBackend(), HeldBackend()
        router = EndpointRouter([("http://a/v1", first), ("http://b/v1", second)])
        seen = []
        tasks = [ask(router) for _ in range(4)]
        await asyncio.sleep(0)
        seen.append([e.in_flight for e in router.endpoints])
        second.release.set()
        while router.endpoints[1].in_flight:
            await asyncio.sleep(0)
        seen.append([e.in_flight for e in router.endpoints])
        tasks += [ask(router) for _ in range(3)]  # the second is idle: all three go there
        await asyncio.sleep(0)
        seen.append([e.requests for e in router.endpoints])
        first.release.set()
        await asyncio.gather(*tasks)
        return seen

    assert asyncio.run(scenario()) == [[2, 2], [2, 0], [2, 5]]


def test_a_rest_is_bounded_and_never_overflows() -> None:
    endpoint = Endpoint("http://a/v1", HeldBackend())
    for _ in range(5000):
        endpoint.failed(retry_after=None)
    assert endpoint.resting_until - time.monotonic() <= LONGEST_REST_S
    endpoint.failed(retry_after=1e12)  # an absurd Retry-After
    assert endpoint.resting_until - time.monotonic() <= LONGEST_REST_S
    endpoint.failed(retry_after=float("inf"))
    assert endpoint.resting_until - time.monotonic() <= LONGEST_REST_S


def test_after_a_rest_an_endpoint_takes_one_request_at_a_time_until_one_succeeds() -> None:
    async def scenario() -> tuple[int, int]:
        flaky, steady = HeldBackend(), HeldBackend()
        steady.release.set()
        router = EndpointRouter([("http://a/v1", flaky), ("http://b/v1", steady)])
        flaky.failing = True
        while not router.endpoints[0].failures:
            with contextlib.suppress(TransientBackendError):
                await ask(router)
        flaky.failing = False
        router.endpoints[0].resting_until = 0.0  # the rest is over
        tasks = [ask(router) for _ in range(6)]
        await asyncio.sleep(0)
        probes = router.endpoints[0].in_flight
        flaky.release.set()
        await asyncio.gather(*tasks)
        before = router.endpoints[0].requests
        await asyncio.gather(*(ask(router) for _ in range(6)))  # it answered: off probation
        return probes, router.endpoints[0].requests - before

    probes, after = asyncio.run(scenario())
    assert probes == 1 and after == 3
