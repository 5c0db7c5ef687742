"""Concurrency that adapts to 429s (AIMD), and the --rpm / --tpm caps."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from evol.llm.limits import AdaptiveConcurrency, RequestBudget, TokenBucket
from tests.support.fake_server import FakeServer, Fault, scripted
from tests.support.runs import assert_valid_run, run_args, write_seeds

pytestmark = pytest.mark.measured  # asserts on time or memory: left out of `make mutate`


def most_in_any_window(moments: list[float], window: float) -> int:
    moments = sorted(moments)
    most, start = 0, 0
    for end, moment in enumerate(moments):
        while moment - moments[start] >= window:
            start += 1
        most = max(most, end - start + 1)
    return most


# -- AdaptiveConcurrency ------------------------------------------------------------------------


def test_in_flight_never_exceeds_the_limit_and_every_slot_comes_back() -> None:
    async def scenario() -> tuple[int, int]:
        slots = AdaptiveConcurrency(5)
        peak = 0

        async def request() -> None:
            nonlocal peak
            async with slots:
                peak = max(peak, slots.in_flight)
                await asyncio.sleep(0.001)

        await asyncio.gather(*(request() for _ in range(200)))
        return peak, slots.in_flight

    assert asyncio.run(scenario()) == (5, 0)


def test_a_burst_of_429s_halves_the_limit_once_then_it_grows_back_to_the_ceiling() -> None:
    slots = AdaptiveConcurrency(64)
    sent_before_the_burst = time.monotonic()
    for _ in range(20):  # twenty 429s for requests that were all in flight together
        slots.rate_limited(sent_before_the_burst)
    assert (slots.limit, slots.cuts) == (32, 1)
    slots.rate_limited(time.monotonic())  # a request sent after the cut: congestion persists
    assert (slots.limit, slots.cuts, slots.lowest) == (16, 2, 16)
    replies = 0
    while slots.limit < slots.ceiling:
        slots.succeeded()
        replies += 1
    # step 2 per round trip (64 / 32): about (64 - 16) / 2 round trips of ~40 replies each
    assert 500 < replies < 2000
    assert slots.limit == 64


def test_a_lowered_limit_admits_no_one_until_enough_requests_have_finished() -> None:
    async def scenario() -> list[str]:
        slots = AdaptiveConcurrency(4)
        events: list[str] = []
        release = asyncio.Event()

        async def holder(name: str) -> None:
            async with slots:
                events.append(f"{name} in")
                await release.wait()
            events.append(f"{name} out")

        holders = [asyncio.create_task(holder(f"h{i}")) for i in range(4)]
        await asyncio.sleep(0)
        slots.rate_limited(time.monotonic())  # limit 4 -> 2
        late = asyncio.create_task(holder("late"))
        await asyncio.sleep(0.01)
        assert "late in" not in events
        release.set()
        await asyncio.gather(*holders, late)
        return events

    events = asyncio.run(scenario())
    # with 4 out and a limit of 2, the late request went in only after 3 had left
    assert events.index("late in") > sorted(events.index(f"h{i} out") for i in range(4))[2]


def test_a_cancelled_waiter_leaks_no_slot() -> None:
    async def scenario() -> int:
        slots = AdaptiveConcurrency(1)
        async with slots:
            waiter = asyncio.create_task(slots.__aenter__())
            await asyncio.sleep(0)
            waiter.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiter
        async with slots:  # would hang if the cancelled waiter had kept a slot
            return slots.in_flight

    assert asyncio.run(asyncio.wait_for(scenario(), 600)) == 1  # a hang guard


# -- budgets -------------------------------------------------------------------------------


def test_the_token_estimate_learns_from_reported_usage_and_settles_the_difference() -> None:
    budget = RequestBudget(None, 6000)
    prompt = [{"role": "user", "content": "x" * 400}]
    first = budget.estimate(prompt)
    assert first == 100 + 1 + 256  # prompt chars / 4, plus the first completion guess
    budget.settle(first, prompt_tokens=90, completion_tokens=40)
    assert budget.estimate(prompt) == 100 + 1 + 40
    assert RequestBudget(None, 6000).estimate(prompt, max_tokens=64) == 100 + 1 + 64
    bucket = budget.tokens
    assert bucket is not None
    before = bucket.level
    bucket.level -= 500
    budget.settle(500, prompt_tokens=100, completion_tokens=100)  # 300 too many were taken
    assert bucket.level == pytest.approx(before - 200, abs=1)


def test_a_request_larger_than_the_bucket_still_goes_and_the_next_one_waits_for_the_debt() -> None:
    async def scenario() -> float:
        bucket = TokenBucket(per_minute=600)  # 10 a second, holds 2
        # Timed from before the first take: the debt is paid back from the moment it was
        # taken, so a clock started after it would miss however long a busy machine took
        # to come back from that take.
        started = time.monotonic()
        await bucket.take(25)  # more than the bucket holds: goes at once, leaves a debt of 23
        await bucket.take(1)  # waits until the level is back to 1
        return time.monotonic() - started

    # A debt of 23 plus the 1 asked for, at 10 a second: 2.4 s at least (a busy machine may
    # take longer, so there is no upper bound).
    assert asyncio.run(scenario()) >= 2.3


def test_rpm_caps_the_requests_the_server_sees_per_second(
    evol, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pace is read where it is set, at the moments the bucket let each request go (its
    own clock), not from the server's arrivals: those come late by however long a loaded
    machine took to send and read each request, and the first one late by 50 ms more than
    the 26th put 26 in one second. The server's arrivals show that no request went before
    the bucket let it: the k-th one comes after the k-th grant."""
    grants: list[float] = []
    take = TokenBucket.take

    async def recorded(bucket: TokenBucket, amount: float) -> None:
        await take(bucket, amount)
        grants.append(bucket._updated)  # the refill that let it go: the grant's moment

    monkeypatch.setattr(TokenBucket, "take", recorded)
    seeds = write_seeds(tmp_path / "seeds.jsonl", [{"instruction": f"Task {i}"} for i in range(12)])
    with FakeServer() as server:
        result = evol(
            *run_args(server, seeds, tmp_path / "run", "--generations", "1", "--rpm", "1200")
        )
    assert result.exit_code == 0, result.output
    assert len(server.arrivals) == len(grants) == 48
    # 20 a second, holding 4: no second may let more than 20 refilled plus 4 held go
    assert most_in_any_window(grants, 1.0) <= 24
    assert max(grants) - min(grants) >= (48 - 4) / 20 - 1e-6
    assert all(
        arrived >= granted
        for arrived, granted in zip(sorted(server.arrivals), sorted(grants), strict=True)
    )
    assert_valid_run(tmp_path / "run")


@pytest.mark.slow
def test_tpm_caps_the_tokens_the_server_reports_per_second(evol, tmp_path: Path) -> None:
    seeds = write_seeds(tmp_path / "seeds.jsonl", [{"instruction": f"Task {i}"} for i in range(6)])
    with FakeServer() as server:
        result = evol(
            *run_args(
                server, seeds, tmp_path / "run", "--generations", "1", "--tpm", "60000", "--json"
            )
        )
    assert result.exit_code == 0, result.output
    usage = json.loads(result.output)["usage"]
    tokens = sum(role["prompt_tokens"] + role["completion_tokens"] for role in usage.values())
    span = max(server.arrivals) - min(server.arrivals)
    largest = max(len(json.dumps(body)) for body in server.requests) // 4 + 256
    # 1,000 tokens a second, holding 200: only the bucket and the last request come for free
    assert tokens > 1000
    assert span >= (tokens - 200 - largest) / 1000 * 0.8, (tokens, span)


def test_a_server_that_429s_makes_the_run_slow_down_not_fail(evol, tmp_path: Path) -> None:
    seeds = write_seeds(tmp_path / "seeds.jsonl", [{"instruction": f"Task {i}"} for i in range(60)])
    out = tmp_path / "run"
    # Forty 429s, then none: the same congestion signal on any machine.
    too_many = scripted(*[Fault("status", 429, retry_after=0.01)] * 40)
    with FakeServer(faults=too_many) as server:
        result = evol(
            *run_args(
                server,
                seeds,
                out,
                "--generations",
                "2",
                "--concurrency",
                "32",
                "--retry-max-wait",
                "0.2",
                "--max-retries",
                "8",
            )  # fmt: skip
        )
    assert result.exit_code == 0, result.output
    manifest = assert_valid_run(out)
    assert manifest["summary"]["failed"] == []
    limits = manifest["concurrency"]
    assert limits["cuts_on_429"] >= 1 and limits["lowest"] <= 16
    assert server.faults_sent["429"] == 40
