"""Issue #25, the run side of a new user's first hour: progress without a terminal, a resume
that says so, a stop at start that leaves run.json, a dry run that knows the embedded model."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from evol.llm import BackendSettings
from evol.progress import Progress, format_progress
from tests.support.backends import registered_backend
from tests.support.fake_server import FakeServer, Fault, kind_of, scripted
from tests.support.runs import read_jsonl, refused_url, run_args, run_at, without_quiet, write_seeds
from tests.support.subprocesses import evol_child

SEEDS = [{"instruction": f"Task {i}: explain the idea"} for i in range(6)]
NUMBER = r"\d+"
PROGRESS_LINE = re.compile(
    rf"evol: progress: (?P<done>{NUMBER})/(?P<total>{NUMBER}) (?P<unit>steps|calls) "
    rf"\((?P<percent>{NUMBER})%\), (?:(?P<kept>{NUMBER}) kept, (?P<eliminated>{NUMBER}) "
    rf"eliminated, )?\d+\.\d calls/s, (?:ETA (?:unknown|(?:\d+h)?(?:\d+m)?\d+[sm])|"
    rf"ended after (?:\d+h)?(?:\d+m)?\d+[sm])"
)


def read_lines(child: subprocess.Popen[str], lines: list[str]) -> None:
    for line in child.stderr or []:
        lines.append(line)


def all_records(out: Path) -> list[dict]:
    files = sorted(out.glob("gen_*.jsonl")) + [out / "eliminated.jsonl"]
    return [record for path in files for record in read_jsonl(path)]


# 1. Progress without a terminal ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("latest", "first", "elapsed", "ended", "expected"),
    [
        (
            Progress(120, 400, calls=120, kept=88, eliminated=32),
            Progress(0, 400, calls=0, kept=0, eliminated=0),
            29.3,
            False,
            "progress: 120/400 steps (30%), 88 kept, 32 eliminated, 4.1 calls/s, ETA 1m08s",
        ),
        (  # a resume: the pace counts only this process's steps
            Progress(170, 200, calls=30, kept=150, eliminated=20),
            Progress(160, 200, calls=0, kept=140, eliminated=20),
            10.0,
            False,
            "progress: 170/200 steps (85%), 150 kept, 20 eliminated, 3.0 calls/s, ETA 30s",
        ),
        (
            Progress(3, 9000, calls=9, kept=3, eliminated=0),
            Progress(0, 9000, calls=0, kept=0, eliminated=0),
            1.0,
            False,
            "progress: 3/9000 steps (0%), 3 kept, 0 eliminated, 9.0 calls/s, ETA 49m59s",
        ),
        (
            Progress(1, 10_000, calls=2, kept=1, eliminated=0),
            Progress(0, 10_000, calls=0, kept=0, eliminated=0),
            1.0,
            False,
            "progress: 1/10000 steps (0%), 1 kept, 0 eliminated, 2.0 calls/s, ETA 2h46m",
        ),
        (
            Progress(0, 40, calls=0, kept=0, eliminated=0),
            Progress(0, 40, calls=0, kept=0, eliminated=0),
            5.0,
            False,
            "progress: 0/40 steps (0%), 0 kept, 0 eliminated, 0.0 calls/s, ETA unknown",
        ),
        (  # scoring counts calls
            Progress(40, 40, unit="call"),
            Progress(0, 40, unit="call"),
            100.0,
            True,
            "progress: 40/40 calls (100%), 0.4 calls/s, ended after 1m40s",
        ),
    ],
)
def test_a_progress_line_says_done_kept_eliminated_speed_and_eta(
    latest: Progress, first: Progress, elapsed: float, ended: bool, expected: str
) -> None:
    line = format_progress(latest, first, elapsed, ended=ended)
    assert line == expected
    assert PROGRESS_LINE.fullmatch(f"evol: {line}")


@pytest.mark.slow
def test_a_run_without_a_terminal_prints_progress_lines_and_a_last_one(tmp_path: Path) -> None:
    seeds, out = write_seeds(tmp_path / "seeds.jsonl", SEEDS), tmp_path / "run"

    # Round 2's evolutions wait until a progress line has come: the run cannot end before it,
    # however fast or slow the machine.
    def hold(body: dict) -> bool:
        return kind_of(body) == "evolve" and "Also consider" in body["messages"][-1]["content"]

    with FakeServer(hold=hold, latency=0.01) as server:
        arguments = without_quiet(run_args(server, seeds, out, "--generations", "2"))
        child = evol_child(*arguments, env={"EVOL_PROGRESS_INTERVAL": "0.05"})
        lines: list[str] = []
        reader = threading.Thread(target=read_lines, args=(child, lines), daemon=True)
        reader.start()
        server.wait_until(lambda: any("ETA" in line for line in lines))
        server.release()
        assert child.wait(600) == 0  # hang guards, never a pace: the reader reads to the end
        reader.join(600)
        assert not reader.is_alive()
    progress = [line.rstrip("\n") for line in lines if "progress:" in line]
    for line in progress:
        assert PROGRESS_LINE.fullmatch(line), line
    *periodic, last = progress
    assert periodic and all("ETA" in line for line in periodic)
    assert last.startswith("evol: progress: 18/18 steps (100%), ") and "ended after" in last
    summary = json.loads((out / "run.json").read_text())["summary"]
    assert f"{summary['kept']} kept, {summary['eliminated']} eliminated" in last
    assert all("\x1b" not in line for line in lines)


def test_quiet_silences_progress_and_score_reports_it_too(evol, server, tmp_path: Path) -> None:
    seeds, out = write_seeds(tmp_path / "seeds.jsonl", SEEDS[:2]), tmp_path / "run"
    env = {"EVOL_PROGRESS_INTERVAL": "0.01"}
    quiet = evol(*run_args(server, seeds, out, "--generations", "1"), env=env)
    assert quiet.exit_code == 0 and "progress" not in quiet.stderr
    scored = evol("score", out, "--base-url", server.base_url, "--no-metrics", env=env)
    assert scored.exit_code == 0, scored.stderr
    progress = [line for line in scored.stderr.splitlines() if "progress:" in line]
    assert progress and all(PROGRESS_LINE.fullmatch(line) for line in progress)
    assert re.fullmatch(r"evol: progress: (\d+)/\1 calls \(100%\), .* ended after .*", progress[-1])


@pytest.mark.parametrize("value", ["soon", "0", "-1", "inf"])
def test_a_bad_progress_interval_is_one_line(evol, server, tmp_path: Path, value: str) -> None:
    seeds, out = write_seeds(tmp_path / "seeds.jsonl", SEEDS[:1]), tmp_path / "run"
    result = evol(
        *without_quiet(run_args(server, seeds, out)), env={"EVOL_PROGRESS_INTERVAL": value}
    )
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        "evol: error: EVOL_PROGRESS_INTERVAL must be a number of seconds above 0"
    ]
    assert server.requests == []


# 2. Resume says so ----------------------------------------------------------------------------


@pytest.mark.slow
def test_a_resume_says_how_far_the_run_got_and_what_it_sends_again(tmp_path: Path) -> None:
    seeds, out = write_seeds(tmp_path / "seeds.jsonl", SEEDS), tmp_path / "run"

    def hold(body: dict) -> bool:  # round 2's evolutions: 4 in flight when the signal comes
        return kind_of(body) == "evolve" and "Also consider" in body["messages"][-1]["content"]

    options = ("--generations", "3", "--concurrency", "4", "--json")
    with FakeServer(hold=hold) as server:
        child = evol_child(*run_args(server, seeds, out, *options))
        server.wait_until(lambda: server.held == 4)
        held = [body["messages"] for body in server.requests if hold(body)]
        child.send_signal(signal.SIGINT)
        stdout, _ = child.communicate(timeout=600)
        server.release()
    assert child.returncode == 130
    stopped = json.loads(stdout)
    assert stopped["status"] == "interrupted" and stopped["calls_cut_off"] == 4
    assert stopped["resumed"] is False and stopped["steps_done_at_start"] == 0
    on_disk = len(all_records(out))  # each step done left one record, kept or eliminated

    with FakeServer() as server:
        child = evol_child(*without_quiet(run_args(server, seeds, out, *options)))
        stdout, stderr = child.communicate(timeout=600)
        resent = [body["messages"] for body in server.requests]
    assert child.returncode == 0, stderr
    assert f"evol: resuming {out}: {on_disk} of 24 steps done, 4 calls to repeat\n" in stderr
    assert all(messages in resent for messages in held)  # the 4 cut off are indeed sent again
    summary = json.loads(stdout)
    assert summary["resumed"] is True and summary["status"] == "complete"
    assert (summary["steps"], summary["steps_done_at_start"]) == (24, on_disk)
    assert summary["calls_to_repeat"] == 4 and summary["calls_cut_off"] == 0


@pytest.mark.slow
def test_a_fresh_run_a_finished_one_and_a_killed_one_say_what_they_are(
    evol, tmp_path: Path
) -> None:
    # Seeds with an output need no call: they are recorded before any evolution is asked for.
    rows = [row | {"output": "An answer."} for row in SEEDS[:3]]
    seeds, out = write_seeds(tmp_path / "seeds.jsonl", rows), tmp_path / "run"
    with FakeServer() as server:
        fresh = evol(*run_args(server, seeds, out, "--generations", "1", "--json"))
        again = evol(*run_args(server, seeds, out, "--generations", "1", "--json"))
    first, second = json.loads(fresh.stdout), json.loads(again.stdout)
    assert (first["resumed"], first["steps"], first["steps_done_at_start"]) == (False, 6, 0)
    assert first["calls_to_repeat"] == 0 and "resuming" not in fresh.stderr
    assert (second["resumed"], second["steps_done_at_start"], second["calls_to_repeat"]) == (
        True,
        6,
        0,
    )

    # A run killed outright leaves run.json saying "running": what it had in flight is unknown.
    def hold(body: dict) -> bool:
        return kind_of(body) == "judge"

    killed = tmp_path / "killed"
    with FakeServer(hold=hold) as server:
        child = evol_child(*run_args(server, seeds, killed, "--generations", "2"))
        server.wait_until(lambda: server.held == 3)
        child.kill()
        child.communicate(timeout=600)
        server.release()
    assert json.loads((killed / "run.json").read_text())["status"] == "running"
    with FakeServer() as server:
        resumed = evol(*without_quiet(run_args(server, seeds, killed, "--generations", "2")))
    assert resumed.exit_code == 0, resumed.stderr
    assert (
        f"evol: resuming {killed}: 3 of 9 steps done, calls to repeat unknown (the last run "
        "stopped without recording what it had in flight)\n" in resumed.stderr
    )
    assert json.loads((killed / "run.json").read_text())["summary"]["calls_to_repeat"] is None


# 3. A stop at start leaves run.json ----------------------------------------------------------


@pytest.mark.parametrize("model", [None, "fake-model"], ids=["asking-the-model", "first-calls"])
@pytest.mark.parametrize("cause", ["unreachable", "wrong key"])
def test_a_stop_at_start_leaves_a_failed_run_json_and_the_same_command_goes_on(
    evol, tmp_path: Path, cause: str, model: str | None
) -> None:
    seeds, out = write_seeds(tmp_path / "seeds.jsonl", SEEDS[:2]), tmp_path / "run"
    key = "sk-wrong-0123456789abcdef"
    extra = ["--generations", "1", "--json", "--quiet", "--api-key", key]
    extra += ["--model", model] if model else []
    with FakeServer(api_key="sk-right") as server:
        url = refused_url() if cause == "unreachable" else server.base_url
        result = evol("run", seeds, "--out", out, "--base-url", url, *extra)
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("evol: error: ")
    expected = "cannot reach" if cause == "unreachable" else "authentication failed"
    manifest = json.loads((out / "run.json").read_text())
    assert manifest["status"] == "failed" and expected in manifest["summary"]["error"]
    assert json.loads(result.stdout)["status"] == "failed"
    assert key not in (out / "run.json").read_text() and key not in result.output

    with FakeServer(api_key=key) as server:  # the same command, the cause fixed
        goes_on = evol("run", seeds, "--out", out, "--base-url", server.base_url, *extra)
    assert goes_on.exit_code == 0, goes_on.stderr
    summary = json.loads(goes_on.stdout)
    assert summary["status"] == "complete" and summary["kept"] + summary["eliminated"] == 4


def test_a_run_that_cannot_go_on_says_so_and_a_complete_one_stays_complete(
    evol, tmp_path: Path
) -> None:
    seeds, out = write_seeds(tmp_path / "seeds.jsonl", SEEDS[:2]), tmp_path / "run"
    # The first request fails with no retry left: one step failed, the run is "failed" (exit 1).
    with FakeServer(faults=scripted(Fault("status", 500))) as server:
        first = evol(*run_args(server, seeds, out, "--generations", "1", "--max-retries", "0"))
    assert first.exit_code == 1
    before = json.loads((out / "run.json").read_text())
    stopped = evol(*run_at(refused_url(), seeds, out, "--generations", "1"))
    assert stopped.exit_code == 2
    after = json.loads((out / "run.json").read_text())
    assert after["status"] == "failed" and "cannot reach" in after["summary"]["error"]
    assert after["fingerprint"] == before["fingerprint"] and after["counts"] == before["counts"]

    with FakeServer() as server:
        done = evol(*run_args(server, seeds, out, "--generations", "1", "--json"))
    assert done.exit_code == 0 and json.loads(done.stdout)["resumed"] is True
    complete = (out / "run.json").read_text()
    stopped = evol(*run_at(refused_url(), seeds, out, "--generations", "2"))
    assert stopped.exit_code == 2 and (out / "run.json").read_text() == complete


@pytest.mark.parametrize(
    "problem",
    [("--generations", "-1"), ("--seed-file-is-bad",), ("--concurrency", "0")],
    ids=["bad-flag-value", "bad-seed-file", "bad-concurrency"],
)
def test_a_usage_error_before_the_start_leaves_no_directory(
    evol, server, tmp_path: Path, problem: tuple[str, ...]
) -> None:
    seeds, out = write_seeds(tmp_path / "seeds.jsonl", SEEDS[:1]), tmp_path / "run"
    if problem == ("--seed-file-is-bad",):
        seeds.write_text('{"instruction": "fine"}\nnot json\n', encoding="utf-8")
        problem = ()
    result = evol(*run_args(server, seeds, out, *problem))
    assert result.exit_code == 2 and not out.exists() and server.requests == []


# 4. The dry run knows the embedded model -----------------------------------------------------


def test_a_dry_run_with_the_embedded_model_costs_nothing_and_names_it(evol, tmp_path: Path) -> None:
    seeds, out = write_seeds(tmp_path / "seeds.jsonl", SEEDS[:2]), tmp_path / "run"
    weights = tmp_path / "tiny-model.Q4.gguf"
    weights.write_bytes(b"GGUF")  # named, never loaded
    for backend in (["--backend", "local"], []):  # asked for, or nothing else configured
        options = [*backend, "--model-path", weights, "--generations", "2", "--dry-run"]
        text = evol("run", seeds, "--out", out, *options).stdout
        assert "cost unknown" not in text and "--price-in" not in text
        assert (
            "backend local (runs on this machine), model tiny-model.Q4.gguf for every role" in text
        )
        assert "at most 14 calls, $0 (free: runs on this machine)" in text
        plan = json.loads(evol("run", seeds, "--out", out, *options, "--json").stdout)
        assert plan["backend"] == "local" and plan["cost_usd"] == 0.0
        assert plan["models"] == dict.fromkeys(("evolve", "answer", "judge"), "tiny-model.Q4.gguf")
        assert all(role["cost_usd"] == 0.0 for role in plan["roles"].values())
    assert not out.exists()


def test_a_dry_run_names_the_backend_and_each_roles_model(evol, tmp_path: Path) -> None:
    seeds, out = write_seeds(tmp_path / "seeds.jsonl", SEEDS[:2]), tmp_path / "run"
    options = ["--out", out, "--base-url", "http://127.0.0.1:8000/v1", "--dry-run"]
    text = evol("run", seeds, *options, "--judge-model", "judge-7b").stdout
    assert (
        "backend openai, models: evolve the backend's model (asked at start), answer the "
        "backend's model (asked at start), judge judge-7b" in text
    )
    plan = json.loads(evol("run", seeds, *options, "--model", "gpt-4o-mini", "--json").stdout)
    assert plan["backend"] == "openai" and plan["cost_usd"] > 0
    assert set(plan["models"].values()) == {"gpt-4o-mini"}


def test_on_a_terminal_the_progress_is_a_bar_and_a_message_a_line_above_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The bar (tqdm, loaded only here) takes each report, a message is printed above it
    with its escape sequences made harmless, and the work's result comes back."""
    from evol.cli import progress_display

    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)

    def work(on_progress, on_info) -> str:
        on_progress(Progress(done=3, total=8, unit="call"))
        on_info("model \x1b[31mx\x1b[0m")
        return "done"

    assert progress_display.with_progress(False, work) == "done"
    shown = capsys.readouterr().err
    assert "evol: model " in shown and "\x1b" not in shown
    assert "3/8" in shown and "call" in shown


def test_a_dry_run_names_the_model_a_plugin_knows_without_a_call(evol, tmp_path: Path) -> None:
    """The registry asks the backend's class (`planned_model`), never its name: a plugin that
    knows its model is named in the plan like the embedded one."""

    class KnowsItsModel:
        @staticmethod
        def planned_model(settings: BackendSettings) -> str:
            return f"plugin-model-{settings.timeout:g}"

    seeds, out = write_seeds(tmp_path / "seeds.jsonl", SEEDS[:2]), tmp_path / "run"
    with registered_backend("knows", KnowsItsModel):
        options = ["--out", out, "--backend", "knows", "--timeout", "7", "--dry-run", "--json"]
        plan = json.loads(evol("run", seeds, *options).stdout)
    assert plan["backend"] == "knows"
    assert plan["models"] == dict.fromkeys(("evolve", "answer", "judge"), "plugin-model-7")


TWO_SEEDS = [{"instruction": f"Task {i}: explain the idea"} for i in range(2)]


@pytest.mark.slow
def test_a_progress_interval_past_what_a_thread_can_wait_is_no_traceback(tmp_path: Path) -> None:
    """EVOL_PROGRESS_INTERVAL=1e10 is a number above 0, yet Event.wait(1e10) overflows."""
    seeds, out = write_seeds(tmp_path / "seeds.jsonl", TWO_SEEDS), tmp_path / "run"
    with FakeServer() as server:
        arguments = without_quiet(run_args(server, seeds, out, "--generations", "1"))
        child = evol_child(*arguments, env={"EVOL_PROGRESS_INTERVAL": "1e10"})
        _, stderr = child.communicate(timeout=600)
    assert child.returncode == 0, stderr
    assert "Traceback" not in stderr and "OverflowError" not in stderr
    assert "evol: progress: 4/4 steps (100%)" in stderr
