"""`evol run --batch` end to end: the engine's requests through the fake Files + Batches API.

The batch backend itself (rows, files, recovery) is tested in test_batch.py; here the whole
run: the dataset equals a live run's with the same replies, `--batch-no-wait` drives a run in
steps that exit 3, a killed run re-attaches to its batches, and nothing is paid twice.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.batch_server import BatchServer, content_of
from tests.support.fake_server import FakeServer
from tests.support.runs import read_jsonl, write_seeds

SEEDS = [
    {"instruction": "Explain {recursion} with #an example"},
    {"instruction": "Write a haiku about the sea", "input": "Use the word 'salt'."},
    {"instruction": "Compare TCP and UDP", "output": "TCP is reliable; UDP is not."},
    {"instruction": "Give three uses of $PATH [same]"},  # the judge finds its rewrites equal
    {"instruction": "Summarise the rules of chess [leak]"},  # its rewrites leak the prompt
]
FAST = ("--batch-poll-interval", "0.05", "--retry-max-wait", "0.05", "--model", "fake-model")
RUN_FILES = ("gen_0.jsonl", "gen_1.jsonl", "gen_2.jsonl", "eliminated.jsonl", "dataset.jsonl")


def batch_args(server: BatchServer, seeds: Path, out: Path, *extra: object) -> list[object]:
    return [
        "run", seeds, "--out", out, "--base-url", server.base_url, "--generations", "2",
        "--batch", *FAST, *extra,
    ]  # fmt: skip


def live_run(evol, seeds: Path, out: Path) -> None:
    with FakeServer() as server:
        result = evol(
            "run", seeds, "--out", out, "--base-url", server.base_url, "--generations", "2",
            "--model", "fake-model", "--quiet",
        )  # fmt: skip
    assert result.exit_code == 0, result.stderr


def kill_when(server: BatchServer, args: list[object], ready: Callable[[], bool]) -> None:
    """Run `evol ARGS` in a process of its own and SIGKILL it once `ready()` holds."""
    command = [sys.executable, "-m", "evol", *map(str, args)]
    process = subprocess.Popen(command, stderr=subprocess.DEVNULL, env=os.environ.copy())
    try:
        server.wait_until(ready)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()


def created_and_recorded(server: BatchServer, out: Path) -> Callable[[], bool]:
    """The first batch was created, and batches.jsonl says so."""
    state = out / "batch" / "batches.jsonl"
    return lambda: (
        server.requests.count("POST /v1/batches") == 1
        and state.exists()
        and b'"created"' in state.read_bytes()
    )


def outputs(out: Path) -> dict[str, list[dict]]:
    return {name: read_jsonl(out / name) for name in RUN_FILES}


def manifest(out: Path) -> dict:
    return json.loads((out / "run.json").read_text())


@pytest.mark.slow
def test_a_batch_run_keeps_exactly_what_a_live_run_keeps(evol, tmp_path: Path) -> None:
    seeds = write_seeds(tmp_path / "seeds.jsonl", SEEDS)
    live_run(evol, seeds, tmp_path / "live")
    with BatchServer(seed=3) as server:  # output rows shuffled
        result = evol(
            *batch_args(
                server, seeds, tmp_path / "batch", "--quiet", "--json", "--concurrency", "2"
            )
        )
        assert result.exit_code == 0, result.stderr
        assert set(server.submitted.values()) == {1}  # no row submitted twice
        # --concurrency paces live requests; a batch holds every request that is due.
        assert max(server.batch_sizes()) > 2
        # The engine's requests went in batches: seeds' answers and evolutions first, then
        # verdicts, then answers, round after round; never a live chat completion.
        assert not any("chat/completions" in request for request in server.requests)
    assert outputs(tmp_path / "batch") == outputs(tmp_path / "live")
    assert outputs(tmp_path / "live")["eliminated.jsonl"]  # the rules had work to do
    recorded = manifest(tmp_path / "batch")
    assert recorded["status"] == "complete"
    assert recorded["backend"]["name"] == "openai" and recorded["config"]["batch"] is True
    batches = recorded["batches"]
    assert batches and all(b["status"] == "completed" and b["id"] for b in batches)
    assert sum(b["requests"] for b in batches) == sum(server.submitted.values())
    assert all(b["input_file_id"] and b["output_file_id"] for b in batches)
    assert json.loads(result.stdout)["waiting"] == 0


@pytest.mark.slow
def test_no_wait_exits_3_until_done_and_submits_each_row_once(evol, tmp_path: Path) -> None:
    seeds, out = write_seeds(tmp_path / "seeds.jsonl", SEEDS), tmp_path / "batch"
    live_run(evol, seeds, tmp_path / "live")
    with BatchServer(hold=True) as server:
        first = evol(*batch_args(server, seeds, out, "--batch-no-wait", "--json"))
        assert first.exit_code == 3, first.stderr
        summary = json.loads(first.stdout)
        assert summary["status"] == "pending" and summary["waiting"] == len(SEEDS) - 1 + len(SEEDS)
        assert "run the same command again" in first.stderr
        recorded = manifest(out)
        assert recorded["status"] == "pending" and not (out / "dataset.jsonl").exists()
        assert [b["status"] for b in recorded["batches"]] == ["in_progress"]
        created = server.requests.count("POST /v1/batches")

        # Still in progress: pending again, and nothing new is submitted.
        again = evol(*batch_args(server, seeds, out, "--batch-no-wait", "--quiet"))
        assert again.exit_code == 3
        assert server.requests.count("POST /v1/batches") == created

        server.release()
        codes = []  # each call collects one step's batches and submits the next step's
        while not codes or codes[-1] == 3:
            assert len(codes) < 30, "the run never finished"
            step = evol(*batch_args(server, seeds, out, "--batch-no-wait", "--quiet"))
            codes.append(step.exit_code)
        assert codes[-1] == 0, step.stderr
        assert len(codes) >= 4  # seeds and evolutions, verdicts, answers, and round two
        assert set(server.submitted.values()) == {1}
    assert outputs(out) == outputs(tmp_path / "live")
    assert manifest(out)["status"] == "complete"


@pytest.mark.slow
def test_a_killed_run_reattaches_to_its_batches_and_pays_nothing_twice(
    evol, tmp_path: Path
) -> None:
    seeds, out = write_seeds(tmp_path / "seeds.jsonl", SEEDS), tmp_path / "batch"
    live_run(evol, seeds, tmp_path / "live")
    with BatchServer(hold=True) as server:
        kill_when(server, batch_args(server, seeds, out), created_and_recorded(server, out))
        submitted = dict(server.submitted)
        server.release()
        result = evol(*batch_args(server, seeds, out, "--quiet"))
        assert result.exit_code == 0, result.stderr
        # The first batch's rows were collected, not submitted again.
        assert all(server.submitted[custom_id] == 1 for custom_id in submitted)
        assert set(server.submitted.values()) == {1}
    assert outputs(out) == outputs(tmp_path / "live")


@pytest.mark.slow
def test_a_run_killed_during_the_create_call_finds_its_batch(evol, tmp_path: Path) -> None:
    seeds, out = write_seeds(tmp_path / "seeds.jsonl", SEEDS), tmp_path / "batch"
    live_run(evol, seeds, tmp_path / "live")
    with BatchServer(hold_create=True) as server:
        kill_when(server, batch_args(server, seeds, out), lambda: server.held_creates == 1)
        server.hold_create = False
        server.release()
        result = evol(*batch_args(server, seeds, out, "--quiet"))
        assert result.exit_code == 0, result.stderr
        assert set(server.submitted.values()) == {1}
    assert outputs(out) == outputs(tmp_path / "live")


def test_only_the_rows_that_got_no_answer_are_submitted_again(evol, tmp_path: Path) -> None:
    seeds, out = write_seeds(tmp_path / "seeds.jsonl", SEEDS), tmp_path / "batch"
    live_run(evol, seeds, tmp_path / "live")
    unlucky = ("haiku", "TCP")

    def row_fate(line: dict, times: int) -> str:
        if times == 0 and any(word in content_of(line) for word in unlucky):
            return "unfinished" if "haiku" in content_of(line) else "error:500"
        return "ok"

    with BatchServer(row_fate=row_fate) as server:
        result = evol(*batch_args(server, seeds, out, "--quiet"))
        assert result.exit_code == 0, result.stderr
        twice = {custom_id for custom_id, times in server.submitted.items() if times == 2}
        assert twice and set(server.submitted.values()) == {1, 2}
        assert len(twice) == sum(server.answered[c] == 1 for c in twice)  # paid once each
        assert all(times == 1 for times in server.answered.values())
    assert outputs(out) == outputs(tmp_path / "live")


def test_batch_is_refused_where_no_batch_api_can_serve_it(evol, tmp_path: Path) -> None:
    seeds = write_seeds(tmp_path / "seeds.jsonl", SEEDS)
    url = "http://127.0.0.1:9/v1"
    cases = {
        ("--backend", "local"): "not with --backend local",
        ("--base-url", url, "--base-url", "http://127.0.0.2:9/v1"): "one --base-url",
        ("--base-url", url, "--rpm", "10"): "--rpm and --tpm",
    }
    for extra, message in cases.items():
        out = tmp_path / f"out{len(message)}"
        result = evol("run", seeds, "--out", out, "--batch", "--quiet", *extra)
        assert result.exit_code == 2, (extra, result.stderr)
        assert message in result.stderr and "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
        assert not out.exists()  # refused before the run directory was made


@pytest.mark.slow
def test_dry_run_and_stats_price_batch_calls_at_half(evol, tmp_path: Path) -> None:
    seeds = write_seeds(tmp_path / "seeds.jsonl", SEEDS)
    prices = ("--price-in", "1", "--price-out", "2")

    def plan(*extra: str) -> dict:
        common = ("run", seeds, "--out", tmp_path / "plan", "--dry-run", "--json", *prices)
        result = evol(*common, "--base-url", "http://127.0.0.1:9/v1", *extra)
        assert result.exit_code == 0, result.stderr
        return json.loads(result.stdout)

    live, batched = plan(), plan("--batch")
    assert batched["batch_rate"] is True and live["batch_rate"] is False
    assert batched["calls"] == live["calls"]
    assert batched["cost_usd"] == pytest.approx(live["cost_usd"] / 2, rel=1e-4)

    live_run(evol, seeds, tmp_path / "live")
    with BatchServer() as server:
        assert evol(*batch_args(server, seeds, tmp_path / "batch", "--quiet")).exit_code == 0

    def cost(run_dir: Path) -> dict:
        result = evol("stats", run_dir, "--json", *prices)
        assert result.exit_code == 0, result.stderr
        return json.loads(result.stdout)

    live_stats, batch_stats = cost(tmp_path / "live"), cost(tmp_path / "batch")
    assert batch_stats["batch_rate"] is True
    half = live_stats["total_cost_usd"] / 2
    assert batch_stats["total_cost_usd"] == pytest.approx(half, abs=1e-5)  # each role rounded
    assert "Batch API rate" in evol("stats", tmp_path / "batch", *prices).stdout


@pytest.mark.slow
def test_progress_shows_the_batches_and_overwrite_forgets_them(evol, tmp_path: Path) -> None:
    seeds, out = write_seeds(tmp_path / "seeds.jsonl", SEEDS[:2]), tmp_path / "batch"
    with BatchServer(delay=0.3) as server:
        result = evol(*batch_args(server, seeds, out))
        assert result.exit_code == 0, result.stderr
        assert "batches: 1 in_progress (" in result.stderr
        assert (out / "batch" / "results.jsonl").exists()
        sent = sum(server.submitted.values())
        again = evol(*batch_args(server, seeds, out, "--quiet", "--overwrite"))
        assert again.exit_code == 0, again.stderr
        # Afresh: the rows of the first run are not taken from the old state, they are paid.
        assert sum(server.submitted.values()) == 2 * sent


@pytest.mark.slow
def test_what_would_pay_for_batch_rows_again_is_refused(evol, tmp_path: Path) -> None:
    """A live resume of a batch run would ask again for the rows its batches hold or still
    run; --overwrite would abandon batches that are paid for. Both are refused, naming them."""
    seeds, out = write_seeds(tmp_path / "seeds.jsonl", SEEDS), tmp_path / "batch"
    with BatchServer(hold=True) as server, FakeServer() as live:

        def live_resume(*extra: str):
            args = (
                "run",
                seeds,
                "--out",
                out,
                "--base-url",
                live.base_url,
                "--model",
                "fake-model",
            )
            result = evol(*args, "--quiet", *extra)
            assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1
            return result.stderr

        assert evol(*batch_args(server, seeds, out, "--batch-no-wait", "--quiet")).exit_code == 3
        assert "batches of it are still running (batch_1)" in live_resume("--generations", "2")
        overwrite = evol(*batch_args(server, seeds, out, "--quiet", "--overwrite"))
        assert (
            overwrite.exit_code == 2
            and "batches of this run are still running (batch_1)" in overwrite.stderr
        )
        assert (out / "batch" / "batches.jsonl").exists() and not live.requests
        server.release()
        done = evol(*batch_args(server, seeds, out, "--quiet"))
        assert done.exit_code == 0, done.stderr
        # Every batch ended, but their rows may not all be records yet: still --batch only.
        assert "batches hold answers" in live_resume("--generations", "3")
        assert not live.requests
        assert set(server.submitted.values()) == {1}


def test_a_step_that_resends_an_earlier_steps_text_gets_its_own_answer(
    evol, tmp_path: Path
) -> None:
    """Round 1's rewrite leaks and is eliminated; round 2 sends the very same prompt (same
    parent, same operation). Live, the model answers again; so must a batch run, not hand back
    the reply it already paid for and eliminated."""
    seeds = write_seeds(
        tmp_path / "seeds.jsonl", [{"instruction": "Describe a lighthouse [leak-once]"}]
    )
    extra = ("--operations", "deepen")
    with FakeServer() as server:
        live = evol(
            "run", seeds, "--out", tmp_path / "live", "--base-url", server.base_url,
            "--generations", "2", "--model", "fake-model", "--quiet", *extra,
        )  # fmt: skip
        assert live.exit_code == 0, live.stderr
    with BatchServer() as server:
        batched = evol(*batch_args(server, seeds, tmp_path / "batch", "--quiet", *extra))
        assert batched.exit_code == 0, batched.stderr
    kept = outputs(tmp_path / "live")
    assert [r["reason"] for r in kept["eliminated.jsonl"]] == ["prompt_leak"]
    assert len(kept["gen_1.jsonl"]) == 1  # round 2's fresh answer was kept
    assert outputs(tmp_path / "batch") == kept


@pytest.mark.slow
def test_a_row_that_never_gets_an_answer_is_not_paid_for_forever(evol, tmp_path: Path) -> None:
    """Each process starts the engine's retries afresh; the batches a request was submitted in
    are counted across processes, so a --batch-no-wait loop stops paying for it."""
    seeds, out = write_seeds(tmp_path / "seeds.jsonl", SEEDS[:2]), tmp_path / "batch"

    def row_fate(line: dict, times: int) -> str:
        return "error:500" if "haiku" in content_of(line) else "ok"

    with BatchServer(row_fate=row_fate) as server:
        args = batch_args(server, seeds, out, "--batch-no-wait", "--quiet", "--max-retries", "2")
        codes = [evol(*args).exit_code for _ in range(12)]
        doomed = [c for c, times in server.submitted.items() if times > 1]
        assert doomed and all(server.submitted[c] == 3 for c in doomed)  # max-retries + 1
        assert codes[-1] == 1 and 3 not in codes[-3:]  # a failed step, no longer pending
        final = evol(*args)
        assert (
            final.exit_code == 1
            and "raise --max-retries" in manifest(out)["summary"]["failed"][0]["error"]
        )
        assert all(server.submitted[c] == 3 for c in doomed)
