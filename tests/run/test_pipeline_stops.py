"""What run.json and `--json` say when a run stops, checked in this process so that mutmut
counts them (#22).

Mutation testing left these promises of `evol.pipeline` unpinned: a stop before the first call
(the server unreachable, its key refused) leaves a run.json that says "failed" and why, names
the models the options named, keeps the directory's history and lets the same command start
afresh; a resumed run that cannot start says so in its own run.json; a run stopped mid-way by
its server prints the summary run.json holds, and says so when run.json cannot be written; a
finished run that an earlier evol wrote, run again, reports every step done.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support.fake_server import FakeServer, Fault, scripted
from tests.support.runs import refused_url, run_args, write_seeds

SEEDS = [{"instruction": f"Task {i}: explain the idea of number {i}"} for i in range(3)]
KEY = "sk-wrong-0123456789abcdef"


def run_json(out: Path) -> dict[str, Any]:
    return json.loads((out / "run.json").read_text(encoding="utf-8"))


def run_at(url: str, seeds: Path, out: Path, *extra: object) -> list[object]:
    """`evol run ... --json` against `url`, which may be a server that is not there."""
    return ["run", seeds, "--out", out, "--base-url", url, "--quiet", "--json", *extra]


def without(summary: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {key: value for key, value in summary.items() if key not in keys}


# -- a stop before the first call -------------------------------------------------------------


def test_a_stop_at_start_leaves_run_json_failed_with_the_cause_and_its_own_time(
    evol, tmp_path: Path
) -> None:
    seeds, out = write_seeds(tmp_path / "seeds.jsonl", SEEDS), tmp_path / "run"
    began = time.monotonic()
    result = evol(*run_at(refused_url(), seeds, out, "--generations", "2"))
    took = time.monotonic() - began
    assert result.exit_code == 2
    manifest = run_json(out)
    summary = manifest["summary"]
    assert manifest["status"] == summary["status"] == "failed"
    assert summary["error"].startswith("cannot reach ") and summary["error"] in result.stderr
    assert (summary["seeds"], summary["steps"], summary["kept"]) == (3, 9, 0)
    printed = json.loads(result.stdout)
    assert without(printed, "error", "exit_code") == without(summary, "error")
    # The time it took is measured inside the command, so it is no more than the test saw.
    assert 0 <= summary["elapsed_s"] <= took + 0.001
    assert manifest["timings"]["total_elapsed_s"] == summary["elapsed_s"]


@pytest.mark.parametrize("left_to_server", ["evolve", "answer", "judge"])
def test_a_stop_at_start_names_the_models_the_options_named_and_no_other(
    evol, tmp_path: Path, left_to_server: str
) -> None:
    seeds, out = write_seeds(tmp_path / "seeds.jsonl", SEEDS), tmp_path / "run"
    named = {role: f"{role}-model-7b" for role in ("evolve", "answer", "judge")}
    del named[left_to_server]  # so the run asks the server, which is not there
    options = [option for role, name in named.items() for option in (f"--{role}-model", name)]
    result = evol(*run_at(refused_url(), seeds, out, *options))
    assert result.exit_code == 2
    manifest = run_json(out)
    assert manifest["summary"]["models"] == named
    assert manifest["backend"]["models"] == named


def test_after_a_stop_at_start_the_same_command_runs_afresh(evol, tmp_path: Path) -> None:
    seeds, out = write_seeds(tmp_path / "seeds.jsonl", SEEDS), tmp_path / "run"
    extra = ["--generations", "1", "--api-key", KEY]
    with FakeServer(api_key="sk-right") as server:
        refused = evol(*run_at(server.base_url, seeds, out, *extra))
    assert refused.exit_code == 2 and "authentication failed" in run_json(out)["summary"]["error"]
    assert KEY not in (out / "run.json").read_text()
    with FakeServer(api_key=KEY) as server:  # the same command, the key now right
        again = evol(*run_at(server.base_url, seeds, out, *extra))
    assert again.exit_code == 0, again.stderr
    summary = json.loads(again.stdout)
    assert summary["status"] == "complete" and not summary["resumed"]
    assert summary["kept"] + summary["eliminated"] == 6


def test_a_second_stop_at_start_keeps_when_the_directory_began_and_its_time_so_far(
    evol, tmp_path: Path
) -> None:
    seeds, out = write_seeds(tmp_path / "seeds.jsonl", SEEDS), tmp_path / "run"
    assert evol(*run_at(refused_url(), seeds, out)).exit_code == 2
    manifest = run_json(out)
    # As a stop at start long ago left it, after 1000 s of runs in all.
    manifest["created_at"] = "2020-01-02T03:04:05+00:00"
    manifest["timings"]["total_elapsed_s"] = 1000.0
    (out / "run.json").write_text(json.dumps(manifest), encoding="utf-8")
    assert evol(*run_at(refused_url(), seeds, out)).exit_code == 2
    after = run_json(out)
    assert after["status"] == "failed" and after["created_at"] == "2020-01-02T03:04:05+00:00"
    this_run = after["timings"]["this_run_elapsed_s"]
    assert after["timings"]["total_elapsed_s"] == pytest.approx(1000.0 + this_run, abs=0.002)


def test_a_resumed_run_that_cannot_reach_its_server_says_so_in_its_run_json(
    evol, tmp_path: Path
) -> None:
    seeds, out = write_seeds(tmp_path / "seeds.jsonl", SEEDS), tmp_path / "run"
    # One step fails for good: the run ends "failed", its records and fingerprint on disk.
    with FakeServer(faults=scripted(Fault("status", 500))) as server:
        first = evol(*run_args(server, seeds, out, "--generations", "1", "--max-retries", "0"))
    assert first.exit_code == 1
    before = run_json(out)
    assert before["summary"]["error"] is None
    stopped = evol(*run_at(refused_url(), seeds, out, "--generations", "1"))
    assert stopped.exit_code == 2
    after = run_json(out)
    assert after["status"] == after["summary"]["status"] == "failed"
    assert after["summary"]["error"].startswith("cannot reach ")
    assert after["summary"]["error"] in stopped.stderr
    assert without(after, "updated_at", "summary") == without(before, "updated_at", "summary")
    assert without(after["summary"], "error") == without(before["summary"], "error")


# -- a stop mid-way ---------------------------------------------------------------------------


def test_a_run_stopped_by_its_server_records_why_and_prints_the_summary_it_recorded(
    evol, tmp_path: Path
) -> None:
    seeds, out = write_seeds(tmp_path / "seeds.jsonl", SEEDS), tmp_path / "run"
    extra = ["--model", "fake-model", "--api-key", KEY, "--generations", "1"]
    with FakeServer(api_key="sk-right") as server:  # the model named: the first call is refused
        result = evol(*run_at(server.base_url, seeds, out, *extra))
        assert server.requests, "the run got as far as its first calls"
    assert result.exit_code == 2
    summary = run_json(out)["summary"]
    assert summary["status"] == "failed" and "authentication failed" in summary["error"]
    assert KEY not in (out / "run.json").read_text()
    printed = json.loads(result.stdout)
    assert printed["exit_code"] == 2
    assert without(printed, "error", "exit_code") == without(summary, "error")


def test_a_stop_whose_run_json_cannot_be_written_says_both_in_one_line(
    evol, tmp_path: Path
) -> None:
    seeds, out = write_seeds(tmp_path / "seeds.jsonl", SEEDS[:1]), tmp_path / "run"
    manifest = out / "run.json"

    def refuse_and_block_run_json(_body: dict[str, Any]) -> Fault:
        # A directory where run.json was: the rename over it fails, as a full disk would.
        if not manifest.is_dir():
            manifest.unlink()
            (manifest / "in-the-way").mkdir(parents=True)
        return Fault("status", 401, message="Incorrect API key provided.")

    extra = ["--model", "fake-model", "--generations", "1", "--concurrency", "1"]
    with FakeServer(faults=refuse_and_block_run_json) as server:
        result = evol(*run_at(server.base_url, seeds, out, *extra))
    assert result.exit_code == 2  # the exit code of what stopped the run
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("evol: error: ") and "authentication failed" in line
    assert line.endswith(
        "; and run.json was not updated either (Is a directory): it still says what it said "
        "before this run"
    )
    printed = json.loads(result.stdout)
    assert printed["status"] == "failed" and printed["exit_code"] == 2
    assert printed["error"] == line.removeprefix("evol: error: ")
    assert (printed["seeds"], printed["steps"], printed["models"]["judge"]) == (1, 2, "fake-model")


# -- a finished run, run again ------------------------------------------------------------------


def test_a_finished_run_of_an_earlier_evol_run_again_reports_every_step_done(
    evol, server, tmp_path: Path
) -> None:
    seeds, out = write_seeds(tmp_path / "seeds.jsonl", SEEDS), tmp_path / "run"
    first = evol(*run_args(server, seeds, out, "--generations", "2", "--json"))
    assert first.exit_code == 0, first.stderr
    manifest = run_json(out)
    # An evol before #25 wrote no step counts in the summary.
    for key in ("resumed", "steps", "steps_done_at_start", "calls_to_repeat", "calls_cut_off"):
        del manifest["summary"][key]
    (out / "run.json").write_text(json.dumps(manifest), encoding="utf-8")
    calls = len(server.requests)
    again = evol(*run_args(server, seeds, out, "--generations", "2", "--json"))
    assert again.exit_code == 0, again.stderr
    assert len(server.requests) == calls
    summary = json.loads(again.stdout)
    assert summary["resumed"] is True
    assert summary["steps"] == summary["steps_done_at_start"] == 9  # 3 seeds, 2 rounds each
    assert (summary["calls_to_repeat"], summary["calls_cut_off"]) == (0, 0)
