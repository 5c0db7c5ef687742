"""`evol score --batch`: the scoring calls through the fake Files + Batches API, on the same
call layer as `evol run --batch`: the same scores as live at half the price, --batch-no-wait in
steps that exit 3, a killed process re-attaches to its batches and pays no row twice, and live
scoring is refused while a scoring batch still runs."""

from __future__ import annotations

import hashlib
import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.batch_server import BatchServer, content_of
from tests.support.fake_server import FakeServer
from tests.support.scoring import ScoringResponder, by_key, kept, make_run, score_args, scores
from tests.support.subprocesses import ENV

PRICES = ("--price-in", "1", "--price-out", "2")


@pytest.fixture
def made_run(evol, tmp_path: Path) -> Path:
    """A real run: 4 lineages of 3 kept records (test_scoring's)."""
    return make_run(evol, tmp_path)


def score_cost(evol, run: Path) -> float:
    result = evol("stats", run, "--json", *PRICES)
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)["roles"]["score"]["cost_usd"]


def test_score_batch_scores_as_live_does_at_half_the_price(evol, made_run, tmp_path) -> None:
    live = shutil.copytree(made_run, tmp_path / "live")
    with FakeServer(responder=ScoringResponder()) as server:
        assert evol(*score_args(live, server.base_url)).exit_code == 0
    with BatchServer(responder=ScoringResponder()) as server:
        result = evol(*score_args(made_run, server.base_url, "--batch"))
        assert result.exit_code == 0, result.stderr
        assert server.batches and sum(server.answered.values()) == len(server.answered)
    assert by_key(made_run) == by_key(live)
    assert all(line["batch"] for line in scores(made_run))
    assert not any(line.get("batch") for line in scores(live))
    assert score_cost(evol, made_run) == pytest.approx(score_cost(evol, live) / 2, abs=2e-6)
    plans = [
        json.loads(evol("score", live, "--dry-run", "--json", "--model", "gpt-4o", *extra).stdout)
        for extra in ((), ("--batch",))
    ]
    assert plans[1]["cost_usd"] == pytest.approx(plans[0]["cost_usd"] / 2, abs=2e-6)


@pytest.mark.slow
def test_score_batch_no_wait_goes_in_steps_that_exit_3_and_pays_each_row_once(
    evol, made_run, tmp_path
) -> None:
    straight = shutil.copytree(made_run, tmp_path / "straight")
    with BatchServer(responder=ScoringResponder()) as server:
        assert evol(*score_args(straight, server.base_url, "--batch")).exit_code == 0
    with BatchServer(responder=ScoringResponder(), hold=True) as server:
        first = evol(*score_args(made_run, server.base_url, "--batch-no-wait"), "--json")
        assert first.exit_code == 3, first.stderr
        summary = json.loads(first.stdout)
        assert summary["status"] == "pending"
        assert sum(s["waiting"] for s in summary["scorers"].values()) > 0
        held = len(server.batches)
        again = evol(*score_args(made_run, server.base_url, "--batch-no-wait"))
        assert again.exit_code == 3 and len(server.batches) == held  # nothing submitted twice
        refused = evol("score", made_run, "--base-url", server.base_url, "--quiet")
        assert refused.exit_code == 2 and "still running" in refused.stderr
        server.release()
        steps = 0
        while (done := evol(*score_args(made_run, server.base_url, "--batch-no-wait"))).exit_code:
            assert done.exit_code == 3, done.stderr
            steps += 1
            assert steps < 20
        assert max(server.submitted.values()) == 1  # no row sent twice
    assert by_key(made_run) == by_key(straight)


def test_score_batch_no_wait_counts_each_waiting_call_once_and_says_how_to_collect_them(
    evol, made_run
) -> None:
    """Every call of the first step waits in a held batch: the summary counts each once, per
    scorer (a record for difficulty and quality, a lineage for complexity), and the text
    says how many wait and what to do."""
    records = kept(made_run)
    lineages = {record["root_id"] for record in records}
    calls = {"difficulty": len(records), "complexity": len(lineages), "quality": len(records)}
    with BatchServer(responder=ScoringResponder(), hold=True) as server:
        first = evol(*score_args(made_run, server.base_url, "--batch-no-wait"), "--json")
        assert first.exit_code == 3, first.stderr
        summary = json.loads(first.stdout)
        assert {name: s["waiting"] for name, s in summary["scorers"].items()} == calls
        again = evol(*score_args(made_run, server.base_url, "--batch-no-wait"))
        assert again.exit_code == 3, again.stderr
    assert (
        f"{sum(calls.values())} calls wait in batches (--batch-no-wait): run the same command "
        "again to collect them"
    ) in again.stdout.splitlines()


@pytest.mark.slow
def test_a_killed_score_batch_reattaches_to_its_batch_and_pays_no_row_twice(
    made_run, tmp_path
) -> None:
    straight = shutil.copytree(made_run, tmp_path / "straight")
    with BatchServer(responder=ScoringResponder()) as server:
        command = [
            sys.executable,
            "-m",
            "evol",
            *map(str, score_args(straight, server.base_url, "--batch")),
        ]
        assert subprocess.run(command, env=ENV).returncode == 0
        rows = sum(server.submitted.values())
    state = made_run / "batch-score" / "batches.jsonl"
    with BatchServer(responder=ScoringResponder(), hold=True) as server:
        command = [
            sys.executable,
            "-m",
            "evol",
            *map(str, score_args(made_run, server.base_url, "--batch")),
        ]
        process = subprocess.Popen(command, env=ENV, stderr=subprocess.DEVNULL)
        try:
            server.wait_until(
                lambda: (
                    bool(server.batches) and state.exists() and b'"created"' in state.read_bytes()
                )
            )
        finally:
            process.send_signal(signal.SIGKILL)
            process.wait()
        server.release()
        assert subprocess.run(command, env=ENV).returncode == 0
        assert max(server.submitted.values()) == 1 and sum(server.submitted.values()) == rows
    assert by_key(made_run) == by_key(straight)


def test_score_batches_are_the_runs_own_state_kept_through_overwrite_and_export(
    evol, made_run, tmp_path
) -> None:
    seeds = made_run.parent / "seeds.jsonl"
    with BatchServer(responder=ScoringResponder(), hold=True) as server:
        pending = evol(*score_args(made_run, server.base_url, "--batch-no-wait"))
        assert pending.exit_code == 3, pending.stderr
        overwrite = evol("run", seeds, "--out", made_run, "--overwrite", "--model", "m",
                         "--base-url", server.base_url, "--quiet")  # fmt: skip
        assert overwrite.exit_code == 2 and "evol score --batch" in overwrite.stderr
        assert (made_run / "batch-score").is_dir() and (made_run / "scores.jsonl").exists()
        inside = evol("export", made_run, "--out", made_run / "batch-score" / "x.jsonl")
        assert inside.exit_code == 2, inside.stderr
        server.release()
        while evol(*score_args(made_run, server.base_url, "--batch-no-wait")).exit_code == 3:
            pass
    with FakeServer() as server:
        again = evol("run", seeds, "--out", made_run, "--overwrite", "--model", "fake-model",
                     "--base-url", server.base_url, "--quiet", "--generations", "1")  # fmt: skip
        assert again.exit_code == 0, again.stderr
    assert not (made_run / "batch-score").exists() and not (made_run / "scores.jsonl").exists()


def test_score_batch_rows_are_named_by_scorer_record_and_ask_as_before_the_journal(
    evol, made_run
) -> None:
    """A row's custom_id hashes its step and body. A score submitted by an earlier build, and
    collected by this one, is found again only while the step keeps its form, scorer/record/ask:
    the journal's richer key (text digest and model) must not reach the batch rows."""
    with BatchServer(responder=ScoringResponder()) as server:
        assert evol(*score_args(made_run, server.base_url, "--batch")).exit_code == 0
        lines = [
            json.loads(line)
            for content in server.files.values()
            for line in content.splitlines()
            if line.startswith(b'{"custom_id"')
        ]
    named = {(line["scorer"], line["id"]) for line in scores(made_run)}
    steps = [f"{scorer}/{key}/ask{n}" for scorer, key in named for n in (1, 2)]
    assert lines and named

    def custom_id(step: str, body: dict) -> str:
        keyed = json.dumps(
            {"step": step, "body": body}, sort_keys=True, separators=(",", ":"), ensure_ascii=False
        )
        return f"evol-{hashlib.sha256(keyed.encode()).hexdigest()[:32]}"

    for line in lines:
        assert line["custom_id"] in {custom_id(step, line["body"]) for step in steps}


def test_live_scoring_is_refused_while_ended_score_batches_hold_paid_replies(
    evol, made_run
) -> None:
    refuse_one = lambda line, _times: "error:400" if "[prose]" in content_of(line) else "ok"  # noqa: E731
    with BatchServer(responder=ScoringResponder(), row_fate=refuse_one) as server:
        batched = evol(*score_args(made_run, server.base_url, "--batch"))
        assert batched.exit_code == 1, batched.stderr  # a row refused: the scoring failed
    assert (made_run / "batch-score").is_dir()  # kept: its batches hold what was paid
    with FakeServer(responder=ScoringResponder()) as server:
        live = evol("score", made_run, "--base-url", server.base_url, "--quiet", "--answers")
        assert live.exit_code == 2 and "hold replies" in live.stderr
        assert server.requests == []
    assert live.stderr == (
        f"evol: error: {made_run}: batches of an earlier `evol score --batch` hold replies "
        "that may not be in scores.jsonl yet and are paid for: collect them with --batch (or "
        "delete batch-score/ to ask live, paying again)\n"
    )


def test_a_complete_batched_scoring_forgets_its_batches_and_live_scoring_goes_on(
    evol, made_run
) -> None:
    with BatchServer(responder=ScoringResponder()) as server:
        assert evol(*score_args(made_run, server.base_url, "--batch")).exit_code == 0
    assert not (made_run / "batch-score").exists()
    with FakeServer(responder=ScoringResponder()) as server:
        live = evol("score", made_run, "--base-url", server.base_url, "--quiet", "--answers")
        assert live.exit_code == 0, live.stderr
        assert server.requests == []  # everything was scored by the batches


def scoring(run: Path, url: str, *extra: str) -> list[object]:
    """`evol score` with fast polls, without --answers: each call names its own scorer."""
    fast = ("--batch-poll-interval", "0.05", "--retry-max-wait", "0.05", "--quiet")
    return ["score", run, "--base-url", url, "--model", "fake-model", *fast, *extra]


def test_a_complete_batched_scoring_keeps_the_batches_another_scorer_still_runs(
    evol, made_run
) -> None:
    """Difficulty waits in a batch that runs on; complexity, scored meanwhile with --batch,
    completes. Its end forgets no batch state while difficulty's batch runs: the next
    scoring of difficulty collects that batch, and no row is paid twice."""
    state = made_run / "batch-score"
    with BatchServer(responder=ScoringResponder(), hold=True) as server:
        first = evol(*scoring(made_run, server.base_url, "--no-complexity", "--batch-no-wait"))
        assert first.exit_code == 3, first.stderr
        (difficulty,) = server.batches.values()
        difficulty.done_at = float("inf")  # it runs on after the release
        server.release()
        other = evol(*scoring(made_run, server.base_url, "--no-difficulty", "--batch"))
        assert other.exit_code == 0, other.stderr
        assert state.is_dir()  # difficulty's batch still runs
        difficulty.done_at = 0.0
        last = evol(*scoring(made_run, server.base_url, "--no-complexity", "--batch"))
        assert last.exit_code == 0, last.stderr
        assert set(server.submitted.values()) == {1}  # difficulty's rows were not asked again
    assert not state.exists()  # nothing runs now: forgotten
    assert {line["scorer"] for line in scores(made_run)} == {"difficulty", "complexity"}
