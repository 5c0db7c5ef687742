"""`evol run --engine ray` on a real local Ray with 2 CPUs (the package's `ray_cluster`, started
once, `ray start --head` in its own process group, killed whole at the end), against the fake
server: a run through Ray equals the same run live, record for record; a bad row fails alone;
a driver killed by kill -9 while requests are held unanswered (all it has out, or one row of a
batch the rest of which was answered) resumes to the same records and pays again only for
those it had not received; a stage worker that dies pays again for no journaled reply; and one
run against the embedded model behind `python -m llama_cpp.server`.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from tests.support.fake_server import FakeServer, Fault, Responder, kind_of
from tests.support.ray_cluster import (
    HEAD_PIDS,
    RAY_ENV,
    RAY_OPTIONS,
    VARIED,
    needs_ray,
    run_command,
)
from tests.support.real_model import SMALL_SEEDS, llama_server, needs_model  # noqa: F401 (a fixture)
from tests.support.runs import assert_valid_run, read_jsonl, write_seeds


def run_content(out: Path) -> list[str]:
    """Every record a run kept or eliminated, as sorted canonical JSON."""
    rows = read_jsonl(out / "dataset.jsonl") + read_jsonl(out / "eliminated.jsonl")
    for row in rows:  # the server's URL, in the messages of eliminated records
        row["detail"] = re.sub(r"127\.0\.0\.1:\d+", "SERVER", row.get("detail") or "")
    return sorted(json.dumps(row, sort_keys=True) for row in rows)


def run_files(out: Path, server: FakeServer) -> dict[str, str]:
    """Every file a run wrote but run.json (it records the times and the engine), the
    server's URL (in the messages of eliminated records) as SERVER."""
    return {
        path.name: path.read_text(encoding="utf-8").replace(server.base_url, "SERVER")
        for path in sorted(out.iterdir())
        if path.is_file() and path.name != "run.json"
    }


@pytest.mark.slow
@needs_ray
def test_a_run_through_ray_equals_the_same_run_live(ray_cluster: str, tmp_path: Path) -> None:
    seeds = write_seeds(tmp_path / "seeds.jsonl", VARIED)
    options = ("--generations", "2", "--seed", "5", "--concurrency", "16")
    env = os.environ | RAY_ENV
    with FakeServer() as server:
        live = subprocess.run(run_command(server, seeds, tmp_path / "live", *options), env=env)
        assert live.returncode == 0
        live_bodies = sorted(json.dumps(body, sort_keys=True) for body in server.requests)
        live_files = run_files(tmp_path / "live", server)
    with FakeServer() as server:
        through_ray = subprocess.run(
            run_command(server, seeds, tmp_path / "ray", *options, *RAY_OPTIONS,
                        "--ray-address", ray_cluster),
            env=env, capture_output=True, text=True,
        )  # fmt: skip
        assert through_ray.returncode == 0, through_ray.stderr[-3000:]
        ray_bodies = sorted(json.dumps(body, sort_keys=True) for body in server.requests)
        ray_files = run_files(tmp_path / "ray", server)
    # Each file as the live run wrote it, line for line (their order included).
    assert ray_files == live_files
    assert ray_bodies == live_bodies  # the same requests, byte for byte once parsed
    manifest = assert_valid_run(tmp_path / "ray")
    assert manifest["backend"]["name"] == "openai" and manifest["config"]["engine"] == "ray"
    assert manifest["config"]["ray_address"] == ray_cluster


def first_time_faults(faults: dict[str, Fault]) -> Any:
    """A fault for the first request whose seed text holds one of `faults`' markers."""
    seen: set[str] = set()
    lock = threading.Lock()

    def plan(body: dict[str, Any]) -> Fault | None:
        text = json.dumps(body["messages"])
        for marker, fault in faults.items():
            if marker in text:
                with lock:
                    if (marker, kind_of(body)) in seen:
                        return None
                    seen.add((marker, kind_of(body)))
                return fault
        return None

    return plan


class HugeOnce(Responder):
    """The default script, but the first answer to a `[huge]` seed is over any small cap."""

    def answer(self, instruction: str) -> str | tuple[str, str]:
        if "[huge]" in instruction and not getattr(self, "sent_huge", False):
            self.sent_huge = True
            return "word " * 20_000
        return super().answer(instruction)


@pytest.mark.slow
@needs_ray
def test_a_bad_row_fails_alone_and_is_retried_alone(ray_cluster: str, tmp_path: Path) -> None:
    """A garbled body, a dropped connection and a reply over the cap, each once, in waves with
    other rows: those rows are retried by evol (Ray retries nothing), a prompt over the
    context is eliminated, and the run ends as the live one does under the same faults."""
    rows = [
        {"instruction": "[garbled] Name a tree."},
        {"instruction": "[dropped] Name a fish."},
        {"instruction": "[huge] Name a bird."},
        {"instruction": "[too-long] Write an essay."},
        {"instruction": "Name a mountain."},
    ]
    seeds = write_seeds(tmp_path / "seeds.jsonl", rows)
    faults = {"[garbled]": Fault("malformed"), "[dropped]": Fault("drop")}
    options = ("--generations", "1", "--concurrency", "16", "--max-response-mb", "0.05")
    outcomes = {}
    for engine, extra in (("live", ()), ("ray", (*RAY_OPTIONS, "--ray-address", ray_cluster))):
        with FakeServer(faults=first_time_faults(faults), responder=HugeOnce()) as server:
            done = subprocess.run(
                run_command(server, seeds, tmp_path / engine, *options, *extra, "--json"),
                env=os.environ | RAY_ENV, capture_output=True, text=True,
            )  # fmt: skip
            assert done.returncode == 0, done.stderr[-3000:]
            outcomes[engine] = json.loads(done.stdout), len(server.requests)
    (ray_summary, ray_calls), (live_summary, live_calls) = outcomes["ray"], outcomes["live"]
    assert ray_summary["status"] == "complete" and ray_summary["failed"] == []
    assert ray_summary["retries"] == live_summary["retries"] >= 3  # each fault, retried once
    assert ray_calls == live_calls
    assert run_content(tmp_path / "ray") == run_content(tmp_path / "live")
    eliminated = read_jsonl(tmp_path / "ray" / "eliminated.jsonl")
    assert [r["root_id"] for r in eliminated if r["reason"] == "too_long"] == ["s4"]


def kind_or_seed_answer(body: dict, seed_texts: set[str]) -> str:
    if kind_of(body) == "answer" and body["messages"][-1]["content"] in seed_texts:
        return "seed answer"
    return kind_of(body)


KILL_CONCURRENCY = 3


@pytest.mark.slow
@needs_ray
def test_a_killed_driver_resumes_and_repays_only_what_it_had_not_received(
    ray_cluster: str, tmp_path: Path
) -> None:
    """kill -9 of the driver while every request it has out is held unanswered by the server:
    what it had received is in the journal, so the resumed run pays again only for the held
    ones, and its records equal an uninterrupted run's.

    The bound in general: a killed driver pays again at most for the requests it had out
    (--concurrency at most), those whose reply had not reached it; a reply it held is never
    paid twice. Holding every slot makes that count exact on any machine."""
    rows = [{"instruction": f"Task {i}: explain topic {i}"} for i in range(5)]
    seeds, seed_texts = (
        write_seeds(tmp_path / "seeds.jsonl", rows),
        {r["instruction"] for r in rows},
    )
    options = ("--generations", "1", "--concurrency", str(KILL_CONCURRENCY), "--seed", "3")
    through_ray = (*options, *RAY_OPTIONS, "--ray-address", ray_cluster)
    env = os.environ | RAY_ENV
    with FakeServer() as server:  # uninterrupted, live: the same records, as the test above shows
        straight = tmp_path / "straight"
        assert (
            subprocess.run(run_command(server, seeds, straight, *options), env=env).returncode == 0
        )
        straight_calls = len(server.requests)

    out = tmp_path / "killed"
    hold = lambda body: kind_or_seed_answer(body, seed_texts) == "answer"  # noqa: E731
    with FakeServer(hold=hold) as server:
        process = subprocess.Popen(run_command(server, seeds, out, *through_ray), env=env)
        try:
            server.wait_until(lambda: server.held == KILL_CONCURRENCY or process.poll() is not None)
        finally:
            process.send_signal(signal.SIGKILL)
            process.wait()
        assert server.held == KILL_CONCURRENCY
        journalled = len(read_jsonl(out / "calls.jsonl"))
        sent = len(server.requests)
        server.release()
    assert journalled > 0  # evolve and judge replies of the held steps, at least

    with FakeServer() as server:
        resumed = subprocess.run(run_command(server, seeds, out, *through_ray), env=env)
        assert resumed.returncode == 0
        paid_twice = sent + len(server.requests) - straight_calls
    assert paid_twice == KILL_CONCURRENCY
    assert run_content(out) == run_content(straight)
    assert_valid_run(out)
    assert not (out / "calls.jsonl").exists()


def journal_lines(out: Path) -> int:
    """Replies in the call journal (a run only appends to it); a torn last line not counted."""
    path = out / "calls.jsonl"
    return path.read_bytes().count(b"\n") if path.exists() else 0


HELD_SEEDS = [{"instruction": f"Explain topic {i} in two sentences."} for i in range(5)] + [
    {"instruction": "[hold] Describe a lake."}
]


@pytest.mark.slow
@needs_ray
def test_a_reply_is_journaled_as_it_arrives_not_when_its_batch_ends(
    ray_cluster: str, tmp_path: Path
) -> None:
    """The server answers every request but one, the last of the [hold] lineage, which waits
    in one stage batch with the other lineages' answered ones (--ray-batch-size above
    --concurrency). Ray yields the batch only once that row is done, yet every answered reply
    must reach the journal: the driver, killed then, pays again only for the held request."""
    seeds = write_seeds(tmp_path / "seeds.jsonl", HELD_SEEDS)
    seed_texts = {row["instruction"] for row in HELD_SEEDS}
    options = ("--generations", "1", "--concurrency", str(len(HELD_SEEDS)), "--seed", "3")
    # No timeout while the test waits: a held request that timed out would end its batch.
    through_ray = (*options, "--engine", "ray", "--ray-batch-size", "16", "--timeout", "3600",
                   "--ray-address", ray_cluster)  # fmt: skip
    env = os.environ | RAY_ENV
    with FakeServer() as server:
        straight = tmp_path / "straight"
        done = subprocess.run(run_command(server, seeds, straight, *options), env=env)
        assert done.returncode == 0
        straight_calls = len(server.requests)

    def held(body: dict[str, Any]) -> bool:  # the lineage's last request: its answer
        marked = "[hold]" in json.dumps(body["messages"])
        return marked and kind_or_seed_answer(body, seed_texts) == "answer"

    out = tmp_path / "killed"
    with FakeServer(hold=held) as server:
        process = subprocess.Popen(run_command(server, seeds, out, *through_ray), env=env)

        def all_but_the_held_journaled() -> bool:
            sent = len(server.requests) == straight_calls and server.held == 1
            return sent and journal_lines(out) == straight_calls - 1

        try:
            # Every request is out then and nothing else is to come: the state is still.
            server.wait_until(
                lambda: all_but_the_held_journaled() or process.poll() is not None, limit=180
            )
        except TimeoutError:
            pass  # what was not journaled is told below
        finally:
            process.send_signal(signal.SIGKILL)
            process.wait()
        journaled, answered = journal_lines(out), len(server.requests) - server.held
        assert server.held == 1 and journaled == answered == straight_calls - 1, (
            f"{journaled} of the {answered} answered replies journaled, {server.held} held"
        )
        sent = len(server.requests)
        server.release()

    with FakeServer() as server:
        resumed = subprocess.run(run_command(server, seeds, out, *through_ray), env=env)
        assert resumed.returncode == 0
        paid_again = list(server.requests)
    assert sent + len(paid_again) - straight_calls == 1
    assert [held(body) for body in paid_again] == [True]  # the held request, and nothing else
    assert run_content(out) == run_content(straight)
    assert_valid_run(out)


def stage_workers(head: int) -> list[int]:
    """The pids of the HTTP stage's workers (`ray::MapWorker(...)`) under the Ray head `head`."""
    listing = subprocess.run(["ps", "-eo", "pid=,ppid=,args="], capture_output=True, text=True)
    parent, command = {}, {}
    for line in listing.stdout.splitlines():
        pid, ppid, args = (line.split(None, 2) + [""])[:3]
        parent[int(pid)], command[int(pid)] = int(ppid), args

    def under_head(pid: int) -> bool:
        while pid > 1 and pid != head:
            pid = parent.get(pid, 1)
        return pid == head

    return [pid for pid, args in command.items() if args.startswith("ray::Map") and under_head(pid)]


@pytest.mark.slow
@needs_ray
def test_a_stage_worker_that_dies_pays_again_for_no_journaled_reply(
    ray_cluster: str, tmp_path: Path
) -> None:
    """kill -9 of the HTTP stage's worker while it holds one request and the rest of its batch
    is answered and journaled. Ray Data would restart the worker and run the whole batch again,
    paying again for every answered row (found by attack28c); with no restart the wave fails,
    and evol asks again only for the held request."""
    seeds = write_seeds(tmp_path / "seeds.jsonl", HELD_SEEDS)
    seed_texts = {row["instruction"] for row in HELD_SEEDS}
    options = ("--generations", "1", "--concurrency", "16", "--seed", "3")
    through_ray = (*options, "--engine", "ray", "--ray-batch-size", "64", "--timeout", "3600",
                   "--max-retries", "3", "--ray-address", ray_cluster)  # fmt: skip

    def marked(body: dict[str, Any]) -> bool:
        return "[hold]" in json.dumps(body["messages"])

    def held(body: dict[str, Any]) -> bool:  # the [hold] lineage's rewrite
        return kind_of(body) == "evolve" and marked(body)

    with FakeServer() as server:  # the same run, live: how many calls wait for the held one
        done = subprocess.run(run_command(server, seeds, tmp_path / "live", *options))
        assert done.returncode == 0
        waiting = [
            body
            for body in server.requests
            if marked(body) and kind_or_seed_answer(body, seed_texts) in ("answer", "judge")
        ]
        still = len(server.requests) - len(waiting)  # calls out once all else is done

    out = tmp_path / "run"
    with FakeServer(hold=held) as server:
        process = subprocess.Popen(
            run_command(server, seeds, out, *through_ray),
            env=os.environ | RAY_ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            text=True, start_new_session=True,
        )  # fmt: skip
        try:
            # Every call but the held one and those that wait for it is answered and
            # journaled: nothing else is to come, the state is still.
            server.wait_until(
                lambda: (
                    process.poll() is not None
                    or (
                        server.held == 1
                        and len(server.requests) == still
                        and journal_lines(out) == still - 1
                    )
                ),
                limit=300,
            )
            assert process.poll() is None, "the run ended before the kill"
            workers = stage_workers(HEAD_PIDS[ray_cluster])
            assert workers, "no HTTP stage worker found"
            answered = [
                json.dumps(body, sort_keys=True)
                for body, finished in zip(server.requests, server.finishes, strict=True)
                if finished is not None
            ]
            for pid in workers:
                os.kill(pid, signal.SIGKILL)
            server.release()
            _, stderr = process.communicate(timeout=400)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
        sent = [json.dumps(body, sort_keys=True) for body in server.requests]
    assert process.returncode == 0, stderr[-3000:]
    paid_twice = [body for body in answered if sent.count(body) > 1]
    assert paid_twice == [], f"{len(paid_twice)} of {len(answered)} answered rows sent again"
    assert_valid_run(out)


@pytest.mark.slow
@needs_ray
@needs_model
def test_real_model_behind_llama_cpp_server_through_ray(
    ray_cluster: str,
    llama_server: str,  # noqa: F811 (the fixture imported above)
    tmp_path: Path,
) -> None:
    seeds, out = write_seeds(tmp_path / "seeds.jsonl", SMALL_SEEDS[:3]), tmp_path / "run"
    command = [
        sys.executable, "-m", "evol", "run", str(seeds), "--out", str(out), "--generations", "1",
        "--base-url", llama_server, "--max-tokens", "64", "--temperature", "0.7",
        "--concurrency", "4", "--json", *RAY_OPTIONS, "--ray-address", ray_cluster,
    ]  # fmt: skip
    result = subprocess.run(
        command, env=os.environ | RAY_ENV, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout)
    manifest = assert_valid_run(out)
    assert manifest["config"]["engine"] == "ray" and summary["failed"] == []
    gen0 = read_jsonl(out / "gen_0.jsonl")
    failed_seeds = [r for r in read_jsonl(out / "eliminated.jsonl") if r["generation"] == 0]
    assert sorted(r["id"] for r in gen0 + failed_seeds) == ["s1", "s2", "s3"]
    assert summary["usage"]["evolve"]["completion_tokens"] > 0
    # The judge's json_schema is refused by llama-cpp-python's server and asked again as
    # json_object, row by row, as the live backend does.
    read = manifest["judging"]["replies_read_as"].get("judge", {})
    assert "prose" not in read
