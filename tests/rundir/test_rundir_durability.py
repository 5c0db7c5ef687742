"""Nothing lost, nothing paid twice: kill -9, torn files, injected faults, malformed input."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.fake_server import FakeServer, fault_rates, kind_of
from tests.support.runs import assert_valid_run, read_jsonl, write_seeds
from tests.support.seed_files import BAD_FILES

ENV = {k: v for k, v in os.environ.items() if not k.startswith(("EVOL_", "OPENAI_"))}


def command(server: FakeServer, seeds: Path, out: Path, *extra: object) -> list[str]:
    return [
        sys.executable, "-m", "evol", "run", str(seeds), "--out", str(out), "--base-url", server.base_url,
        "--quiet", "--retry-max-wait", "0.05", *map(str, extra),
    ]  # fmt: skip


def run_content(out: Path) -> list[str]:
    """Every record a run kept or eliminated, as sorted canonical JSON."""
    rows = read_jsonl(out / "dataset.jsonl") + read_jsonl(out / "eliminated.jsonl")
    return sorted(json.dumps(row, sort_keys=True) for row in rows)


def seed_rows(count: int) -> list[dict]:
    markers = ["", "", "", "", "[sorry] ", "[equal] ", "[leak] "]  # some evolutions fail
    return [
        {"instruction": f"{markers[i % len(markers)]}Task {i}: explain topic {i}"}
        for i in range(count)
    ]


def kind_or_seed_answer(body: dict, seed_texts: set[str]) -> str:
    if kind_of(body) == "answer" and body["messages"][-1]["content"] in seed_texts:
        return "seed answer"
    return kind_of(body)


def kill_while_held(
    seeds: Path, out: Path, held_kind: str, seed_texts: set[str], *options: str
) -> tuple[int, int]:
    """Run evol until `concurrency` requests of `held_kind` are held unanswered, then kill -9.

    With every slot taken by a held request nothing else can be in flight, so the moment of
    the kill is the same on any machine. Returns (requests the server saw, requests held).
    """
    hold = lambda body: kind_or_seed_answer(body, seed_texts) == held_kind  # noqa: E731
    with FakeServer(hold=hold) as server:
        process = subprocess.Popen(command(server, seeds, out, *options), env=ENV)
        try:
            server.wait_until(lambda: server.held == CONCURRENCY or process.poll() is not None)
        finally:
            process.send_signal(signal.SIGKILL)
            process.wait()
        assert server.held == CONCURRENCY
        server.release()
        return len(server.requests), server.held


CONCURRENCY = 4


@pytest.mark.parametrize("held_kind", ["seed answer", "evolve", "answer", "judge"])
@pytest.mark.slow
def test_a_kill_repays_only_the_calls_in_flight(tmp_path: Path, held_kind: str) -> None:
    rows = seed_rows(12)
    seeds, seed_texts = (
        write_seeds(tmp_path / "seeds.jsonl", rows),
        {r["instruction"] for r in rows},
    )
    options = ("--generations", "2", "--concurrency", str(CONCURRENCY), "--seed", "3")
    with FakeServer() as server:
        assert (
            subprocess.run(
                command(server, seeds, tmp_path / "straight", *options), env=ENV
            ).returncode
            == 0
        )
        straight_calls = len(server.requests)

    out = tmp_path / "killed"
    sent, in_flight = kill_while_held(seeds, out, held_kind, seed_texts, *options)
    no_journal = tmp_path / "no-journal"
    shutil.copytree(out, no_journal)
    (no_journal / "calls.jsonl").unlink(missing_ok=True)

    def resume(run: Path) -> int:
        """Calls paid twice: before the kill plus after it, less what a straight run pays."""
        with FakeServer() as server:
            assert subprocess.run(command(server, seeds, run, *options), env=ENV).returncode == 0
            return sent + len(server.requests) - straight_calls

    assert resume(out) == in_flight
    assert run_content(out) == run_content(tmp_path / "straight")
    assert_valid_run(out)
    assert not (out / "calls.jsonl").exists()
    # Without the journal, a held answer's or judge's step pays for its evolve call again (and
    # for its other call too, when that one had been sent before the kill).
    repaid_without_journal = resume(no_journal)
    if held_kind in ("answer", "judge"):
        assert repaid_without_journal >= 2 * in_flight
    assert run_content(no_journal) == run_content(tmp_path / "straight")


@pytest.mark.slow
@pytest.mark.heavy  # left out of make mutate
def test_kill_9_at_random_moments_loses_nothing(tmp_path: Path) -> None:
    seeds = write_seeds(tmp_path / "seeds.jsonl", seed_rows(200))
    options = ("--generations", "3", "--concurrency", "8", "--seed", "3")
    with FakeServer(latency=0.05) as server:
        assert (
            subprocess.run(
                command(server, seeds, tmp_path / "straight", *options), env=ENV
            ).returncode
            == 0
        )
        out, rng = tmp_path / "killed", random.Random(2026)
        # Where the kills land depends on the machine's speed, so this asserts only on the end
        # state; test_a_kill_repays_only_the_calls_in_flight pins down what a kill may cost.
        for _ in range(12):
            process = subprocess.Popen(command(server, seeds, out, *options), env=ENV)
            try:
                process.wait(rng.uniform(0.5, 2.0))
            except subprocess.TimeoutExpired:
                process.send_signal(signal.SIGKILL)
                process.wait()
            else:
                break
        assert subprocess.run(command(server, seeds, out, *options), env=ENV).returncode == 0

    assert run_content(out) == run_content(tmp_path / "straight")
    assert_valid_run(out)
    assert not (out / "calls.jsonl").exists()


@pytest.mark.slow
def test_a_crash_while_writing_the_dataset_is_repaired(tmp_path: Path) -> None:
    seeds = write_seeds(tmp_path / "seeds.jsonl", seed_rows(20))
    with FakeServer() as server:
        out = tmp_path / "run"
        assert (
            subprocess.run(command(server, seeds, out, "--generations", "2"), env=ENV).returncode
            == 0
        )
        expected = (out / "dataset.jsonl").read_bytes()
        calls = len(server.requests)
        # What a kill -9 in the middle of write_dataset and of a run.json update leaves behind.
        (out / "dataset.jsonl.tmp").write_bytes(expected[: len(expected) // 2])
        (out / "run.json.tmp").write_text('{"status": "comp')
        assert (
            subprocess.run(command(server, seeds, out, "--generations", "2"), env=ENV).returncode
            == 0
        )
        assert len(server.requests) == calls
    assert (out / "dataset.jsonl").read_bytes() == expected
    assert not (out / "dataset.jsonl.tmp").exists()


@pytest.mark.slow
def test_torn_last_lines_are_cut_and_redone(tmp_path: Path) -> None:
    seeds = write_seeds(tmp_path / "seeds.jsonl", seed_rows(14))
    with FakeServer() as server:
        straight, out = tmp_path / "straight", tmp_path / "torn"
        assert (
            subprocess.run(
                command(server, seeds, straight, "--generations", "2"), env=ENV
            ).returncode
            == 0
        )
        assert (
            subprocess.run(command(server, seeds, out, "--generations", "1"), env=ENV).returncode
            == 0
        )
        gen1 = (out / "gen_1.jsonl").read_bytes()
        last = gen1.rstrip(b"\n").rsplit(b"\n", 1)[-1]
        # The last record loses its newline half-way, and the journal ends in half a line.
        (out / "gen_1.jsonl").write_bytes(gen1[: len(gen1) - len(last) // 2 - 1])
        (out / "calls.jsonl").write_text('{"item": "s1.2", "role": "evolve", "rep')
        assert (
            subprocess.run(command(server, seeds, out, "--generations", "2"), env=ENV).returncode
            == 0
        )
    assert run_content(out) == run_content(straight)
    assert_valid_run(out)


@pytest.mark.slow
def test_a_replayed_call_is_not_paid_again(tmp_path: Path) -> None:
    seeds = write_seeds(tmp_path / "seeds.jsonl", [{"id": "a", "instruction": "Name a bird"}])
    with FakeServer() as server:
        out = tmp_path / "run"
        assert (
            subprocess.run(command(server, seeds, out, "--generations", "0"), env=ENV).returncode
            == 0
        )
        # As if a crash came after the evolve call of round 1 returned, before its answer and judge.
        reply = {
            "text": "Name a bird that cannot fly",
            "prompt_tokens": 5,
            "completion_tokens": 6,
            "finish_reason": "stop",
        }
        (out / "calls.jsonl").write_text(
            json.dumps({"item": "a.1", "role": "evolve", "reply": reply}) + "\n"
        )
        server.requests.clear()
        assert (
            subprocess.run(command(server, seeds, out, "--generations", "1"), env=ENV).returncode
            == 0
        )
        assert sorted(kind_of(body) for body in server.requests) == ["answer", "judge"]
    (child,) = read_jsonl(out / "gen_1.jsonl")
    assert child["instruction"] == "Name a bird that cannot fly"
    assert child["usage"]["evolve"] == {"prompt_tokens": 5, "completion_tokens": 6}


@pytest.mark.slow
@pytest.mark.heavy  # left out of make mutate
def test_a_run_through_injected_faults_equals_a_clean_run(tmp_path: Path) -> None:
    """Every retry is counted once. Counted against what the server saw, not against the faults
    it injected: under load a plain reply can outlast --timeout and be asked again too (it
    did at --timeout 1 on a busy CI machine), so the faults are a floor, and each request the
    server received beyond the calls the clean run made (the same calls) is one retry."""
    seeds = write_seeds(tmp_path / "seeds.jsonl", seed_rows(80))
    options = (
        "--generations",
        "2",
        "--concurrency",
        "16",
        "--timeout",
        "5",
        "--max-retries",
        "8",
        "--json",
    )
    with FakeServer() as clean:
        done = subprocess.run(
            command(clean, seeds, tmp_path / "clean", *options),
            env=ENV,
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stderr
    calls = len(clean.requests) - json.loads(done.stdout)["retries"]
    faults = fault_rates(seed=7, rate_429=0.10, rate_500=0.05, hang=0.02, malformed=0.02, drop=0.02)
    with FakeServer(faults=faults, hang_seconds=6) as flaky:
        result = subprocess.run(
            command(flaky, seeds, tmp_path / "flaky", *options),
            env=ENV,
            capture_output=True,
            text=True,
        )
    assert result.returncode == 0, result.stderr
    assert set(flaky.faults_sent) == {"429", "500", "hang", "malformed", "drop"}
    assert run_content(tmp_path / "flaky") == run_content(tmp_path / "clean")
    summary = json.loads(result.stdout)
    assert summary["retries"] == len(flaky.requests) - calls
    assert summary["retries"] >= sum(flaky.faults_sent.values())
    manifest = json.loads((tmp_path / "flaky" / "run.json").read_text())
    assert sum(manifest["retries"].values()) == summary["retries"]


# -- malformed input, through the CLI ----------------------------------------------------


@pytest.mark.parametrize(
    ("case", "name", "content", "line", "message"), BAD_FILES, ids=[c[0] for c in BAD_FILES]
)
def test_malformed_seed_files_give_one_line_and_exit_2(
    evol,
    server,
    tmp_path: Path,
    case: str,
    name: str,
    content: bytes,
    line: int | None,
    message: str,
) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "earlier.txt").write_text("kept")
    path = tmp_path / name
    path.write_bytes(content)
    result = evol("run", path, "--out", out, "--base-url", server.base_url)
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    where = f"{path}:{line}:" if line else f"{path}:"
    assert len(lines) == 1 and lines[0].startswith(f"evol: error: {where}") and message in lines[0]
    assert "Traceback" not in result.output
    assert [p.name for p in out.iterdir()] == ["earlier.txt"]
    assert server.requests == []


SKIPPABLE = [
    case
    for case in BAD_FILES
    if case[3] is not None
    and case[0]
    not in (
        "array as JSONL",
        "CSV without header",
        "JSON not an array",
        "broken JSON array",
        "huge integer in a JSON array",  # the whole array fails to parse: not a row
    )
]


@pytest.mark.parametrize(
    ("case", "name", "content", "line", "message"), SKIPPABLE, ids=[c[0] for c in SKIPPABLE]
)
def test_skip_invalid_skips_and_counts_the_bad_row(
    evol, server, tmp_path: Path, case: str, name: str, content: bytes, line: int, message: str
) -> None:
    path = tmp_path / name
    good = b'{"instruction": "A good seed"}\n' if name.endswith(".jsonl") else b"A good seed,\n"
    path.write_bytes(content + (good if name.endswith(".jsonl") else b"\n" + good))
    result = evol(
        "run",
        path,
        "--out",
        tmp_path / "run",
        "--base-url",
        server.base_url,
        "--generations",
        "0",
        "--skip-invalid",
        "--json",
    )
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["skipped_seeds"] >= 1 and summary["seeds"] >= 1
    manifest = json.loads((tmp_path / "run" / "run.json").read_text())
    assert any(
        skip["line"] == line and message in skip["why"] for skip in manifest["seeds"]["skipped"]
    )


@pytest.mark.parametrize("make", ["missing", "directory", "parent is a file"])
def test_unusable_seed_paths(evol, tmp_path: Path, make: str) -> None:
    path = tmp_path / "seeds.jsonl"
    if make == "directory":
        path.mkdir()
    if make == "parent is a file":
        (tmp_path / "file").write_text("x")
        path = tmp_path / "file" / "seeds.jsonl"
    result = evol("run", path, "--out", tmp_path / "run", "--base-url", "http://127.0.0.1:9/v1")
    assert result.exit_code == 2
    assert (
        result.stderr.startswith(f"evol: error: {path}: ")
        and len(result.stderr.strip().splitlines()) == 1
    )
    assert not (tmp_path / "run").exists()


JOURNAL_DAMAGE = [
    ('{"item": "s1.2", "role": "evol', "not JSON"),
    ("[1, 2]", "not a call's reply"),
    ('{"item": "s1.2", "role": "evolve", "reply": {"text": 5}}', "not a call's reply"),
    ('{"item": "s1.2", "role": "evolve"}', "not a call's reply"),
]


@pytest.mark.parametrize(("line", "what"), JOURNAL_DAMAGE, ids=[w for _l, w in JOURNAL_DAMAGE])
def test_a_damaged_journal_line_before_the_last_is_one_line_and_deleting_it_resumes(
    evol, server, tmp_path: Path, line: str, what: str
) -> None:
    seeds = write_seeds(tmp_path / "seeds.jsonl", seed_rows(7))
    straight, out = tmp_path / "straight", tmp_path / "run"
    for run in (straight, out):
        assert (
            evol(
                "run", seeds, "--out", run, "--base-url", server.base_url, "--generations", "1"
            ).exit_code
            == 0
        )
    reply = {"text": "a reply", "prompt_tokens": 1, "completion_tokens": 1, "finish_reason": "stop"}
    good = json.dumps({"item": "s9.2", "role": "evolve", "reply": reply})
    journal = out / "calls.jsonl"
    journal.write_text(f"{good}\n{line}\n{good}\n")  # not the last line: no crash tears that
    before = {path.name: path.read_bytes() for path in out.iterdir()}
    again = ("run", seeds, "--out", out, "--base-url", server.base_url, "--generations", "2")
    result = evol(*again)  # a traceback would raise here
    assert result.exit_code == 2
    assert result.stderr == (
        f"evol: error: {journal}:2: damaged line ({what}): the journal only saves paying twice "
        "for calls made before a crash: delete it to make them again, or start again with "
        "--overwrite\n"
    )
    assert {path.name: path.read_bytes() for path in out.iterdir()} == before
    journal.unlink()  # as the message says
    assert evol(*again).exit_code == 0
    assert (
        evol(
            "run", seeds, "--out", straight, "--base-url", server.base_url, "--generations", "2"
        ).exit_code
        == 0
    )
    assert run_content(out) == run_content(straight)
