"""`evol score`: each scorer's reading of replies, resume without paying twice, kill -9, errors.

Everything that goes over HTTP talks to the fake server with a responder for scoring prompts;
the log-probability path runs against an in-process backend (the `openai` backend on this
branch does not parse log-probabilities yet).
"""

from __future__ import annotations

import json
import math
import re
import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from string import Template
from typing import Any

import pytest

from evol.errors import RunDirError
from evol.llm import Completion, LLMRequest, register_backend
from evol.method.prompts import PromptSet
from evol.quality.contamination import read_contamination
from evol.quality.readings import (
    expected_score,
    read_number,
    read_ranking,
)
from evol.quality.scores import SCORES, read_score_lines
from evol.quality.scoring import ScoreConfig, score_run
from tests.support.fake_server import FakeServer, Fault
from tests.support.runs import read_jsonl, record, write_run
from tests.support.scoring import (
    UNPARSEABLE,
    LogprobBackend,
    ScoringResponder,
    by_key,
    difficulty_of,
    kept,
    kind_of_score,
    make_run,
    quality_of,
    ranks,
    scores,
    task,
)
from tests.support.subprocesses import ENV

# -- reading replies -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("7", 7.0),
        (" 7.\n", 7.0),
        ("**9**", 9.0),
        ("10", 10.0),
        ("1", 1.0),
        ("0", None),  # below the scale
        ("11", None),  # above it
        ("6.5", 6.5),
        ("I'd rate it a 7 out of 10.", 7.0),
        ("Score: 8/10", 8.0),
        ("Difficulty: 3", 3.0),
        ("I would rate this task's difficulty as 4, since it needs 2 steps.", 4.0),
        ("It is a 6.", 6.0),
        ("Somewhere between 6 and 7.", None),  # two numbers, no rating word: not guessed
        ("Rating: 12", None),
        (UNPARSEABLE, None),
        ("", None),
        # The scale is no score; a negative number is none either.
        ("Rating (1-10): 8", 8.0),
        ("On a 1 to 10 scale, I'd say 6", 6.0),
        ("Score: 1\u201310, here 4", 4.0),
        ("-3", None),
        ("Rating: \u22125", None),
        # Long runs of digits are no score, and read in linear time.
        ("1" * 5000, None),
        ("9" * 20_000 + " out of 10", None),
        ("7" + " " * 3000 + "out of 10", 7.0),  # a score near the start is found
    ],
)
def test_read_number(reply: str, expected: float | None) -> None:
    found = read_number(reply, 10)
    assert (found and found[0]) == expected
    if found:
        assert float(reply[found[1] : found[2]]) == expected


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("#1: 2\n#2: 3\n#3: 1", {1: 2.0, 2: 3.0, 3: 1.0}),
        ("[1] Score: 1\n[2] Score: 3\n[3] Score: 2", {1: 1.0, 2: 3.0, 3: 2.0}),
        ("Version 1 - 2\nVersion 2 - 2", {1: 2.0, 2: 2.0}),
        ("#1: 2\n#1: 3\n#2: 9\n#4: 1", {1: 2.0}),  # first wins; out of range ignored
        ("Version 1 is simpler than version 2.", {}),
        ("#" + "1" * 1500 + ": 2\n#2: 1", {2: 1.0}),  # a version of 1,500 digits is none
    ],
)
def test_read_ranking(reply: str, expected: dict[int, float]) -> None:
    assert {k: v for k, (v, _s, _e) in read_ranking(reply, 3).items()} == expected


def alternatives(**probabilities: float) -> dict[str, float]:
    return {token.removeprefix("t"): math.log(p) for token, p in probabilities.items()}


@pytest.mark.parametrize(
    ("tokens", "text", "expected"),
    [
        # Deita's expectation: 7 * .6 + 8 * .3 over the digits' .9; "x" is not a score.
        ([alternatives(t7=0.6, t8=0.3, x=0.1)], "7", (7 * 0.6 + 8 * 0.3) / 0.9),
        # " 7" and "7" are the same number; "0" and "11" are off the scale.
        (
            [{" 7": math.log(0.5), "7": math.log(0.25), " 0": -1.0, "11": -1.0}],
            " 7",
            7.0,
        ),
        # The score after other tokens; a chosen token found among several alternatives.
        (
            [{"Score": 0.0}, {":": 0.0, ";": -3.0}, {" 3": math.log(0.5), " 5": math.log(0.5)}],
            "Score: 3",
            4.0,
        ),
        # "10" split into "1" and "0": not one token, so the text's number stands.
        ([{"1": -0.1, "9": -2.0}, {"0": 0.0}], "10", None),
        # Tokens that do not spell the text cannot be lined up.
        ([{"8": 0.0}], "7", None),
        # An alternative "1" on a scale to 10 may start a "10" that a tokenizer split into
        # digits: without a "10" token among the alternatives, it is not read as 1.
        ([alternatives(t8=0.4, t1=0.6)], "8", 8.0),
        ([{"8": math.log(0.4), "1": math.log(0.3), "10": math.log(0.3)}], "8", 6.5),
        ([alternatives(t1=0.6, t8=0.4)], "1", 0.6 * 1 + 0.4 * 8),  # "1" chosen: the text ends
        # A digit string of 5,000 characters is no alternative, nor a logprob past float range.
        ([{"7": 0.0, "1" * 5000: -1.0, "9": float("nan")}], "7", 7.0),
        # Hostile values: NaN, positive, +inf and a string are not probabilities.
        (
            [{"7": math.log(0.5), "9": float("nan"), "3": 5.0, "2": float("inf"), "4": "x"}],
            "7",
            7.0,
        ),
    ],
)
def test_expected_score(tokens: list[dict[str, Any]], text: str, expected: float | None) -> None:
    found = read_number(text, 10)
    assert found is not None
    value = expected_score(tokens, text, found[1], found[2], 10)
    assert value == (None if expected is None else pytest.approx(expected, abs=1e-4))


@pytest.mark.parametrize(
    ("name", "names"),
    [
        ("score_difficulty", {"task"}),
        ("score_quality", {"task", "answer"}),
        ("score_complexity", {"count", "versions"}),
        ("score_single_again", {"maximum"}),
        ("score_ranking_again", {"count"}),
    ],
)
def test_templates_take_exactly_their_placeholders(name: str, names: set[str]) -> None:
    template = Template(PromptSet.load()[name].text)
    assert template.is_valid() and set(template.get_identifiers()) == names


def test_a_scoring_prompt_is_overridden_by_a_file_and_checked_when_loaded(
    evol, made_run: Path, tmp_path: Path
) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "score_difficulty.txt").write_text("MY OWN RUBRIC <task>\n$task\n</task> 1-10?\n")
    with FakeServer(responder=ScoringResponder()) as server:
        result = evol(
            "score", made_run, "--base-url", server.base_url, "--quiet", "--no-complexity",
            "--no-metrics", "--prompts", mine,
        )  # fmt: skip
        assert result.exit_code == 0, result.stderr
        sent = [body["messages"][0]["content"] for body in server.requests]
    assert sent and all(text.startswith("MY OWN RUBRIC") for text in sent)
    (mine / "score_quality.txt").write_text("$task but no answer slot\n")
    broken = evol("score", made_run, "--model", "m", "--base-url", "http://127.0.0.1:9/v1",
                  "--answers", "--prompts", mine)  # fmt: skip
    assert broken.exit_code == 2
    assert "score_quality.txt: missing placeholder $answer" in broken.stderr


@pytest.fixture
def made_run(evol, tmp_path: Path) -> Path:
    """A real run of the seeds above: 4 lineages of 3 kept records."""
    return make_run(evol, tmp_path)


def test_each_scorer_reads_numbers_prose_and_asks_again_once(evol, made_run: Path) -> None:
    with FakeServer(responder=ScoringResponder()) as server:
        result = evol("score", made_run, "--base-url", server.base_url, "--answers", "--json")
        requests = list(server.requests)
    assert result.exit_code == 0, result.output
    records = kept(made_run)
    got = by_key(made_run)
    for r in records:
        never = "[never]" in r["instruction"]
        assert got["difficulty", r["id"]] == (None if never else difficulty_of(task(r)))
        assert got["quality", r["id"]] == (None if never else quality_of(r["output"]))
    for root in ("s1", "s2", "s3", "s4"):
        chain = [r for r in records if r["root_id"] == root]
        expected = dict(zip([r["id"] for r in chain], ranks([task(r) for r in chain]), strict=True))
        if root == "s4":
            expected = dict.fromkeys(expected)  # [never]: missing, not guessed
        assert got["complexity", root] == expected

    # One call per record and scorer, a second for [mute] and [never], none for the rest.
    asked = Counter((kind_of_score(body), len(body["messages"])) for body in requests)
    assert asked == {
        ("difficulty", 1): 12,
        ("difficulty", 3): 6,
        ("quality", 1): 12,
        ("quality", 3): 6,
        ("complexity", 1): 4,
        ("complexity", 3): 2,
    }
    again = [b for b in requests if len(b["messages"]) == 3 and kind_of_score(b) == "difficulty"]
    assert again[0]["messages"][1] == {"role": "assistant", "content": UNPARSEABLE}
    single_again = PromptSet.load()["score_single_again"].render(maximum="10")
    assert again[0]["messages"][2]["content"] == single_again
    for body in requests:
        assert (body["temperature"], body["logprobs"], body["top_logprobs"]) == (0, True, 20)
        assert body["max_tokens"] <= 8 * 3 + 16
    missing = [s for s in scores(made_run) if s.get("score", 0) is None]
    assert {(s["scorer"], s["asked"]) for s in missing} == {("difficulty", 2), ("quality", 2)}

    summary = json.loads(result.stdout)
    assert summary["status"] == "complete"
    assert summary["scorers"]["difficulty"] | {"mean": None} == {
        "model": "fake-model",
        "scored": 9,
        "missing": 3,
        "already": 0,
        "failed": 0,
        "waiting": 0,
        "from_logprobs": 0,
        "asked_again": 6,
        "logprobs_refused": False,
        "records_scored": 9,
        "mean": None,
    }
    values = [difficulty_of(task(r)) for r in records if "[never]" not in r["instruction"]]
    assert summary["scorers"]["difficulty"]["mean"] == round(sum(values) / len(values), 4)


def test_a_rerun_pays_for_nothing_scored_and_another_model_scores_afresh(
    evol, made_run: Path
) -> None:
    with FakeServer(models=("judge-a", "judge-b"), responder=ScoringResponder()) as server:
        base = ("score", made_run, "--base-url", server.base_url, "--no-complexity")
        assert evol(*base, "--model", "judge-a").exit_code == 0
        first = len(server.requests)
        assert first == 12 + 6  # 12 records, [mute] and [never] asked twice
        rerun = evol(*base, "--model", "judge-a", "--json")
        assert rerun.exit_code == 0 and len(server.requests) == first
        assert json.loads(rerun.stdout)["scorers"]["difficulty"]["already"] == 12
        # Missing scores are not asked for again unless asked to: [never]'s three, twice each.
        assert evol(*base, "--model", "judge-a", "--retry-missing").exit_code == 0
        assert len(server.requests) == first + 3 * 2
        assert evol(*base, "--model", "judge-b").exit_code == 0
        assert len(server.requests) == first + 6 + 18
        assert {body["model"] for body in server.requests[first + 6 :]} == {"judge-b"}
    lines = scores(made_run)
    assert Counter(line["model"] for line in lines) == {"judge-a": 12 + 3, "judge-b": 12}


def test_scoring_shows_its_progress_as_calls_done_of_the_calls_to_make(made_run: Path) -> None:
    """From 0 before the first call to every call, one at a time, counted in calls: the
    progress the command shows while it scores."""
    progress: list[tuple[int, int, str]] = []
    with FakeServer(responder=ScoringResponder()) as server:
        config = ScoreConfig(
            run_dir=made_run, base_urls=[server.base_url], complexity=False, metrics=False
        )
        summary = score_run(
            config, on_progress=lambda p: progress.append((p.done, p.total, p.unit))
        )
    assert summary.status == "complete"
    assert progress == [(done, 12, "call") for done in range(13)]  # a job a record


def test_a_torn_last_line_is_cut_and_its_record_scored_again(evol, made_run: Path) -> None:
    with FakeServer(responder=ScoringResponder()) as server:
        command = ("score", made_run, "--base-url", server.base_url, "--model", "fake-model")
        assert evol(*command, "--no-complexity").exit_code == 0
        whole = (made_run / "scores.jsonl").read_bytes()
        last = whole.rstrip(b"\n").rsplit(b"\n", 1)[-1]
        (made_run / "scores.jsonl").write_bytes(whole[: -len(last) - 1] + last[:25])
        before = len(server.requests)
        assert evol(*command, "--no-complexity").exit_code == 0
        assert len(server.requests) - before == (2 if b'"asked":2' in last else 1)
    assert (made_run / "scores.jsonl").read_bytes() == whole


def test_a_server_that_refuses_logprobs_is_asked_without_them(evol, made_run: Path) -> None:
    refusal = Fault("status", 400, message="logprobs are not supported by this model")
    refuse = lambda body: refusal if body.get("logprobs") else None  # noqa: E731
    with FakeServer(responder=ScoringResponder(), faults=refuse) as server:
        result = evol(
            "score",
            made_run,
            "--base-url",
            server.base_url,
            "--answers",
            "--concurrency",
            "1",
            "--json",
        )
        requests = list(server.requests)
    assert result.exit_code == 0, result.output
    # One refusal per scorer, then every request of that scorer goes without.
    refused = Counter(kind_of_score(body) for body in requests if body.get("logprobs"))
    assert refused == {"difficulty": 1, "complexity": 1, "quality": 1}
    summary = json.loads(result.stdout)["scorers"]
    assert all(s["logprobs_refused"] and s["failed"] == 0 for s in summary.values())
    assert summary["difficulty"]["records_scored"] == 9


def test_a_request_refused_for_its_content_keeps_logprobs_for_the_others(
    evol, made_run: Path
) -> None:
    records = read_jsonl(made_run / "dataset.jsonl")
    victim = records[0]["instruction"]
    flagged = Fault("status", 400, message="filtered by the content management policy")
    task = f"<task>\n{victim}\n</task>"
    refuse = lambda body: flagged if task in body["messages"][0]["content"] else None  # noqa: E731
    with FakeServer(responder=ScoringResponder(), faults=refuse) as server:
        result = evol(
            "score", made_run, "--base-url", server.base_url, "--no-complexity",
            "--concurrency", "1", "--json",
        )  # fmt: skip
        requests = list(server.requests)
    assert result.exit_code == 1, result.output  # one record not scored, as a run's failed step
    summary = json.loads(result.stdout)["scorers"]["difficulty"]
    assert not summary["logprobs_refused"] and summary["failed"] == 1
    assert all(body.get("logprobs") for body in requests)  # nobody lost them
    first_asks = [body for body in requests if len(body["messages"]) == 1]
    assert len(first_asks) == len(records)  # the refused one is not sent again without them


def test_a_failed_ask_again_keeps_the_paid_first_reply(evol, tmp_path: Path) -> None:
    run = write_run(tmp_path / "run", [record("s1", "[mute] Name a river")])
    second = lambda body: Fault("status", 503) if len(body["messages"]) > 1 else None  # noqa: E731
    with FakeServer(responder=ScoringResponder(), faults=second) as server:
        command = ("score", run, "--base-url", server.base_url, "--no-complexity")
        assert evol(*command, "--max-retries", "0").exit_code == 0
        assert len(server.requests) == 2
        assert evol(*command).exit_code == 0  # recorded missing: not asked again
        assert len(server.requests) == 2
    [line] = scores(run)
    assert line["score"] is None and line["asked"] == 2 and UNPARSEABLE in line["reply"]
    assert "503" in line["error"] and line["usage"]["prompt_tokens"] > 0


@pytest.mark.parametrize("bad", ["NaN", "-5", "Infinity"])
def test_a_score_line_outside_the_scale_is_corrupt(evol, made_run: Path, bad: str) -> None:
    line = {"scorer": "difficulty", "model": "m", "id": "s1", "digest": "d", "score": "SCORE"}
    text = json.dumps(line).replace('"SCORE"', bad)
    (made_run / "scores.jsonl").write_text(text + "\n" + text + "\n")
    result = evol("stats", made_run)
    assert result.exit_code == 2 and "scores.jsonl:1" in result.stderr


def test_score_and_select_print_json_when_they_fail(evol, tmp_path: Path) -> None:
    for command in (
        ("score", tmp_path / "nowhere", "--model", "m"),
        ("select", tmp_path / "nowhere", "--budget", "1", "--out", tmp_path / "o.jsonl"),
    ):
        result = evol(*command, "--json")
        assert result.exit_code == 2
        assert json.loads(result.stdout)["status"] == "failed"


def test_authentication_failure_stops_at_once(evol, made_run: Path) -> None:
    with FakeServer(api_key="sk-right", responder=ScoringResponder()) as server:
        result = evol(
            "score", made_run, "--base-url", server.base_url, "--api-key", "sk-wrong",
            "--model", "fake-model", "--concurrency", "1",
        )  # fmt: skip
        assert len(server.requests) == 1
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines()[-1] == (
        f"evol: error: authentication failed for {server.base_url}: check --api-key"
    )
    assert scores(made_run) == []


def test_a_failed_call_is_left_for_the_next_run_and_exits_1(evol, made_run: Path) -> None:
    def always_500(body: dict[str, Any]) -> Fault | None:
        return Fault("status", 500) if "[prose]" in body["messages"][0]["content"] else None

    options = ("--no-complexity", "--max-retries", "1", "--retry-max-wait", "0.01")
    with FakeServer(responder=ScoringResponder(), faults=always_500) as server:
        result = evol("score", made_run, "--base-url", server.base_url, *options, "--json")
    assert result.exit_code == 1
    summary = json.loads(result.stdout)
    assert (summary["status"], summary["scorers"]["difficulty"]["failed"]) == ("failed", 3)
    with FakeServer(responder=ScoringResponder()) as server:
        assert evol("score", made_run, "--base-url", server.base_url, *options).exit_code == 0
        assert len(server.requests) == 3
    assert sum(1 for (scorer, _id), v in by_key(made_run).items() if v is not None) == 9


def test_score_caps_reply_bodies_like_run(evol, made_run: Path) -> None:
    class Bloated(ScoringResponder):
        def rate(self, task: str, value: int, again: bool) -> str:
            padding = " with more words" * 200 if "[prose]" in task else ""  # ~3 KB
            return super().rate(task, value, again) + padding

    options = ("--no-complexity", "--max-retries", "1", "--retry-max-wait", "0.01")
    with FakeServer(responder=Bloated()) as server:
        capped = ("--max-response-mb", "0.002", "--json")  # 2 KiB
        result = evol("score", made_run, "--base-url", server.base_url, *options, *capped)
        assert result.exit_code == 1, result.stderr
        assert json.loads(result.stdout)["scorers"]["difficulty"]["failed"] == 3
        assert evol("score", made_run, "--base-url", server.base_url, *options).exit_code == 0


@pytest.mark.slow
def test_rpm_and_tpm_pace_every_scoring_call_and_batch_refuses_them(
    evol, made_run: Path, tmp_path: Path
) -> None:
    unpaced = shutil.copytree(made_run, tmp_path / "unpaced")
    base = ("--no-complexity", "--json")
    with FakeServer(responder=ScoringResponder()) as server:
        # Budgets far above what the calls need: none waits, each is counted as let through.
        budget = ("--rpm", "600000", "--tpm", "1000000000")
        paced = evol("score", made_run, "--base-url", server.base_url, *base, *budget)
        free = evol("score", unpaced, "--base-url", server.base_url, *base)
    assert paced.exit_code == free.exit_code == 0, paced.output + free.output
    summary = json.loads(paced.stdout)
    assert summary["requests"] == summary["paced"] == 12 + 6  # [mute] and [never] asked twice
    assert json.loads(free.stdout)["paced"] == 0
    assert by_key(made_run) == by_key(unpaced)
    for option in ("--rpm", "--tpm"):
        refused = evol("score", made_run, "--batch", option, "10", "--base-url", server.base_url)
        assert refused.exit_code == 2 and "--rpm and --tpm pace live" in refused.stderr


def test_dry_run_counts_the_calls_left_and_prices_them(evol, made_run: Path) -> None:
    options = ("--model", "m", "--price-in", "1", "--price-out", "2", "--json")
    plan = json.loads(evol("score", made_run, "--dry-run", "--answers", *options).stdout)
    assert {name: p["calls"] for name, p in plan["scorers"].items()} == {
        "difficulty": 12,
        "complexity": 4,
        "quality": 12,
    }
    rows = plan["scorers"].values()
    assert plan["calls"] == 28
    assert plan["cost_usd"] == round(
        (sum(p["prompt_tokens"] for p in rows) + 2 * sum(p["completion_tokens"] for p in rows))
        / 1e6,
        6,
    )
    assert not (made_run / "scores.jsonl").exists()
    with FakeServer(models=("m",), responder=ScoringResponder()) as server:
        assert evol("score", made_run, "--base-url", server.base_url, "--model", "m").exit_code == 0
    left = json.loads(evol("score", made_run, "--dry-run", "--answers", *options).stdout)
    assert {name: p["calls"] for name, p in left["scorers"].items()} == {
        "difficulty": 0,
        "complexity": 0,
        "quality": 12,
    }
    assert left["scorers"]["difficulty"]["already"] == 12
    text = evol("score", made_run, "--dry-run", "--model", "m").stdout
    assert "0 calls to make with m" in text and "estimated cost: unknown" in text


def test_a_run_being_written_is_not_scored(evol, made_run: Path) -> None:
    from evol.rundir.store import RunStore

    store = RunStore.open(made_run, generations=99, overwrite=False)
    try:
        result = evol("score", made_run, "--no-difficulty", "--no-complexity")
    finally:
        store.close()
    assert result.exit_code == 2 and "another evol process is writing" in result.stderr


# -- kill -9 ---------------------------------------------------------------------------------

CONCURRENCY = 4


def score_command(run: Path, server: FakeServer) -> list[str]:
    return [
        sys.executable, "-m", "evol", "score", str(run), "--base-url", server.base_url, "--quiet",
        "--concurrency", str(CONCURRENCY), "--retry-max-wait", "0.05", "--answers",
    ]  # fmt: skip


def hold_evolved(body: dict[str, Any]) -> bool:
    """The difficulty requests of evolved records. The seeds' come first and are answered
    and written; then every worker waits on a held request, and nothing else can be in
    flight: the moment to stop the process is the same on any machine."""
    content = body["messages"][0]["content"]
    return kind_of_score(body) == "difficulty" and "Also consider case" in content


def stop_while_held(run: Path, how: signal.Signals) -> tuple[int, int]:
    """Score `run` until CONCURRENCY requests are held, then send `how`; returns (requests
    the server saw, exit status)."""
    with FakeServer(responder=ScoringResponder(), hold=hold_evolved) as server:
        process = subprocess.Popen(score_command(run, server), env=ENV)
        try:
            server.wait_until(lambda: server.held == CONCURRENCY or process.poll() is not None)
        finally:
            process.send_signal(how)
            status = process.wait()
        assert server.held == CONCURRENCY
        server.release()
        return len(server.requests), status


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGINT])
@pytest.mark.slow
def test_a_stop_repays_only_the_calls_in_flight(
    made_run: Path, tmp_path: Path, how: signal.Signals
) -> None:
    straight = shutil.copytree(made_run, tmp_path / "straight")
    with FakeServer(responder=ScoringResponder()) as server:
        assert subprocess.run(score_command(straight, server), env=ENV).returncode == 0
        straight_calls = len(server.requests)

    sent_before, status = stop_while_held(made_run, how)
    assert status == (-signal.SIGKILL if how == signal.SIGKILL else 130)
    assert 0 < len(scores(made_run)) < len(scores(straight))

    with FakeServer(responder=ScoringResponder()) as server:
        assert subprocess.run(score_command(made_run, server), env=ENV).returncode == 0
        sent_after = len(server.requests)
    assert sent_before + sent_after - straight_calls == CONCURRENCY
    assert by_key(made_run) == by_key(straight)
    assert len(scores(made_run)) == len(scores(straight))


MUTE_SEED = "<task>\n[mute] List three prime numbers below twenty\n</task>"
NEVER_SEED = "<task>\n[never] Describe a cat\n</task>"


def one_at_a_time(run: Path, server: FakeServer, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "evol", "score", str(run), "--base-url", server.base_url, "--quiet",
        "--concurrency", "1", "--no-complexity", "--retry-max-wait", "0.05", *extra,
    ]  # fmt: skip


def killed_at_second_ask(run: Path, task: str, *extra: str) -> list[dict[str, Any]]:
    """Score one call at a time, hold `task`'s second ask, kill -9: the requests sent."""
    held = lambda body: len(body["messages"]) > 1 and task in body["messages"][0]["content"]  # noqa: E731
    with FakeServer(responder=ScoringResponder(), hold=held) as server:
        process = subprocess.Popen(one_at_a_time(run, server, *extra), env=ENV)
        try:
            server.wait_until(lambda: server.held == 1 or process.poll() is not None)
        finally:
            process.send_signal(signal.SIGKILL)
            process.wait()
        assert server.held == 1
        server.release()
        return list(server.requests)


def asks_of(requests: list[dict[str, Any]], task: str) -> Counter[int]:
    """How many requests for `task` the server saw, by the number of messages (1: the first ask,
    3: the question asked again)."""
    return Counter(
        len(body["messages"]) for body in requests if task in body["messages"][0]["content"]
    )


@pytest.mark.slow
def test_a_score_killed_between_two_asks_pays_the_first_once(
    made_run: Path, tmp_path: Path
) -> None:
    straight = shutil.copytree(made_run, tmp_path / "straight")
    with FakeServer(responder=ScoringResponder()) as server:
        assert subprocess.run(one_at_a_time(straight, server), env=ENV).returncode == 0

    # The [mute] seed's reply gives no number: it is asked again, and that second ask is held.
    # One call at a time, so nothing else is in flight when the process is killed.
    held = lambda body: len(body["messages"]) > 1  # noqa: E731
    with FakeServer(responder=ScoringResponder(), hold=held) as server:
        process = subprocess.Popen(one_at_a_time(made_run, server), env=ENV)
        try:
            server.wait_until(lambda: server.held == 1 or process.poll() is not None)
            # The first reply was journalled before the second ask went out.
            journal = read_jsonl(made_run / "score_calls.jsonl")
        finally:
            process.send_signal(signal.SIGKILL)
            process.wait()
        server.release()
        before = list(server.requests)
    assert asks_of(before, MUTE_SEED) == {1: 1, 3: 1}
    # Each reply so far, the last the [mute] seed's: its scorer, record, digest and model.
    scorer, record_id, _digest, model, _prompts = journal[-1]["item"].split("/")
    assert (scorer, record_id, model, journal[-1]["role"]) == (
        "difficulty", "s3", "fake-model", "ask1",
    )  # fmt: skip
    assert journal[-1]["reply"]["text"] == UNPARSEABLE
    assert len(journal) == len(before) - 1  # every reply but the one held

    with FakeServer(responder=ScoringResponder()) as server:
        assert subprocess.run(one_at_a_time(made_run, server), env=ENV).returncode == 0
        after = list(server.requests)
    assert asks_of(after, MUTE_SEED) == {3: 1}  # the first ask replayed, not sent again
    assert (made_run / "scores.jsonl").read_bytes() == (straight / "scores.jsonl").read_bytes()
    assert not (made_run / "score_calls.jsonl").exists()  # nothing waits: the journal goes


@pytest.mark.parametrize("missing_before", [1, 2], ids=["first retry", "second retry"])
@pytest.mark.slow
def test_a_retry_of_a_missing_score_killed_between_its_asks_pays_its_first_once(
    made_run: Path, missing_before: int
) -> None:
    """--retry-missing asks again a question whose line is written (missing): each retry's
    replies are journalled under its own name, so the first ask of a retry killed between its
    asks is replayed, not taken for an earlier time's (which a written line spent)."""
    for _ in range(missing_before):  # the [never] seed's score comes out missing each time
        with FakeServer(responder=ScoringResponder()) as server:
            command = one_at_a_time(made_run, server, "--retry-missing")
            assert subprocess.run(command, env=ENV).returncode == 0
    assert [line["score"] for line in scores(made_run) if line["id"] == "s4"] == [
        None
    ] * missing_before
    before = killed_at_second_ask(made_run, NEVER_SEED, "--retry-missing")
    assert asks_of(before, NEVER_SEED) == {1: 1, 3: 1}
    with FakeServer(responder=ScoringResponder()) as server:
        command = one_at_a_time(made_run, server, "--retry-missing")
        assert subprocess.run(command, env=ENV).returncode == 0
        after = list(server.requests)
    assert asks_of(after, NEVER_SEED) == {3: 1}  # the retry's first ask replayed, not paid again


@pytest.mark.slow
def test_a_journalled_reply_is_not_replayed_to_other_prompts(
    made_run: Path, tmp_path: Path
) -> None:
    """A reply answers the prompt it was asked with: a resume with other --prompts asks anew."""
    before = killed_at_second_ask(made_run, MUTE_SEED)
    assert asks_of(before, MUTE_SEED) == {1: 1, 3: 1}
    prompts = tmp_path / "prompts"
    prompts.mkdir()
    shipped = PromptSet.load()["score_difficulty"].text
    (prompts / "score_difficulty.txt").write_text("CHANGED TEMPLATE. " + shipped)
    with FakeServer(responder=ScoringResponder()) as server:
        command = one_at_a_time(made_run, server, "--prompts", str(prompts))
        assert subprocess.run(command, env=ENV).returncode == 0
        after = list(server.requests)
    assert asks_of(after, MUTE_SEED) == {1: 1, 3: 1}
    assert all(
        "CHANGED TEMPLATE" in body["messages"][0]["content"]
        for body in after
        if MUTE_SEED in body["messages"][0]["content"]
    )


# -- the log-probability path, in process ----------------------------------------------------


@pytest.mark.usefixtures("logprob_backend")
def test_scores_are_expected_values_over_the_digits_when_logprobs_come_back(
    evol, tmp_path: Path
) -> None:
    records = [
        record("s1", "Add two numbers"),
        record("s1.1", "Add two numbers given as words, not digits"),
        record("s1.1.2", "Add two numbers given as words in French, and show the carry steps"),
        record("s2", "A seed alone, with no kept evolution to rank against"),
    ]
    run = write_run(tmp_path / "run", records)
    result = evol("score", run, "--backend", "logprob-fake", "--json")
    assert result.exit_code == 0, result.output
    got = by_key(run)
    for r in records:
        chosen = difficulty_of(r["instruction"])
        expected = chosen if chosen == 10 else 0.75 * chosen + 0.25 * 10
        assert got["difficulty", r["id"]] == pytest.approx(expected, abs=1e-4)
    # s1's chain of 3: ranks 1, 2, 3 by length; each expectation leans a quarter toward 3.
    assert got["complexity", "s1"] == {
        "s1": pytest.approx(0.75 * 1 + 0.25 * 3),
        "s1.1": pytest.approx(0.75 * 2 + 0.25 * 3),
        "s1.1.2": 3.0,
    }
    assert ("complexity", "s2") not in got  # nothing to rank a lone seed against
    assert {s["source"] for s in scores(run)} == {"logprobs"}
    summary = json.loads(result.stdout)["scorers"]
    # Counted in records: s1's chain of 3 is one call and three scores.
    assert summary["difficulty"]["from_logprobs"] == 4 and summary["complexity"]["scored"] == 3
    backend = LogprobBackend.made[-1]
    assert backend.closed == 1
    assert {(p.temperature, p.logprobs, p.top_logprobs) for p in backend.params} == {(0, True, 20)}
    assert {p.max_tokens for p in backend.params} == {16, 8 * 3 + 16}


class MixedSourceBackend(LogprobBackend):
    """A ranking's second line has its ":" and its score in one token: that version's score is
    read from the text, the others' from the log-probabilities."""

    async def complete(self, request: LLMRequest) -> Completion:
        completion = await super().complete(request)
        if '<version id="' not in request.messages[0]["content"]:
            return completion
        tokens = list(completion.top_logprobs or [])
        score = tokens[8]  # line 2 is "#", "2", ":", its score, "\n"
        tokens[7:9] = [{":" + max(score, key=score.__getitem__): 0.0}]
        return completion.model_copy(update={"top_logprobs": tokens})


@pytest.mark.usefixtures("backend_registry")
def test_a_ranking_read_partly_from_logprobs_says_its_source_is_mixed(evol, tmp_path: Path) -> None:
    register_backend("mixed-fake", MixedSourceBackend)
    records = [
        record("s1", "Add two numbers"),
        record("s1.1", "Add two numbers given as words, not digits"),
        record("s1.1.2", "Add two numbers given as words in French, and show the carry steps"),
    ]
    run = write_run(tmp_path / "run", records)
    result = evol("score", run, "--backend", "mixed-fake", "--no-difficulty", "--json")
    assert result.exit_code == 0, result.output
    [line] = scores(run)
    assert line["scores"] == {  # s1 is shown second (an order drawn from the lineage id)
        "s1": 1.0,  # read from the text
        "s1.1": pytest.approx(0.75 * 2 + 0.25 * 3),
        "s1.1.2": 3.0,
    }
    assert line["source"] == "mixed"
    complexity = json.loads(result.stdout)["scorers"]["complexity"]
    assert (complexity["scored"], complexity["from_logprobs"]) == (3, 0)


@pytest.mark.usefixtures("logprob_backend")
def test_the_backend_is_closed_when_a_fatal_error_stops_scoring(evol, tmp_path: Path) -> None:
    run = write_run(tmp_path / "run", [record("s1", "fine"), record("s2", "[auth] no")])
    result = evol(
        "score", run, "--backend", "logprob-fake", "--no-complexity", "--concurrency", "1"
    )
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "evol: error: authentication failed for the fake: check the key"
    )
    assert LogprobBackend.made[-1].closed == 1
    assert [s["id"] for s in scores(run)] == ["s1"]


# -- scores.jsonl's lines, a score out of the maximum, and refusals (found by mutation testing) ---


def score_line(record_id: str, score: float) -> bytes:
    line = {
        "scorer": "difficulty",
        "model": "fake-model",
        "id": record_id,
        "digest": "0" * 16,
        "score": score,
        "usage": {"prompt_tokens": 10, "completion_tokens": 1},
    }
    return json.dumps(line).encode() + b"\n"


def scored_ids(run: Path) -> list[tuple[str, float | None]]:
    return [(line.id, line.score) for line in read_score_lines(run)]


def test_a_blank_line_in_scores_jsonl_hides_none_of_the_lines_after_it(tmp_path: Path) -> None:
    """Each line after it was paid for: dropped, its record would be scored (and paid) again."""
    (tmp_path / SCORES).write_bytes(score_line("a", 3) + b"\n   \n" + score_line("b", 4))
    assert scored_ids(tmp_path) == [("a", 3.0), ("b", 4.0)]


def test_a_last_line_cut_mid_write_is_left_out_and_the_others_are_kept(tmp_path: Path) -> None:
    """A crash can leave the last line's newline written and its text not (a hole of zeros on
    some file systems): the lines before it count."""
    whole = score_line("a", 3) + score_line("b", 4)
    (tmp_path / SCORES).write_bytes(whole + b"\0" * 20 + b"\n")
    assert scored_ids(tmp_path) == [("a", 3.0), ("b", 4.0)]


@pytest.mark.parametrize(
    ("damaged", "after"),
    [(b"not json\n", score_line("b", 4)), (b"\0" * 20 + b"\n", b'{"scorer": "diffi')],
    ids=["a whole line after it", "a torn tail after it"],
)
def test_a_damaged_line_that_is_not_the_last_write_is_named_with_what_to_do(
    tmp_path: Path, damaged: bytes, after: bytes
) -> None:
    """Only the very end of the file can be a write cut short; a bad line with anything after
    it is named, not passed over."""
    path = tmp_path / SCORES
    path.write_bytes(score_line("a", 3) + damaged + after)
    with pytest.raises(RunDirError) as raised:
        read_score_lines(tmp_path)
    assert str(raised.value) == (
        f"{path}:2: not a score line; delete that line (its record is scored again) or the file"
    )


@pytest.mark.parametrize(
    "reply", ["7 Out Of 10", "I would rate it 7 OUT OF 10, no more.", "It is 7/10"]
)
def test_a_score_out_of_the_maximum_is_read_in_any_case(reply: str) -> None:
    found = read_number(reply, 10)
    assert found is not None and found[0] == 7.0
    assert reply[found[1] : found[2]] == "7"


def test_a_run_without_records_is_not_scored(evol, tmp_path: Path) -> None:
    run = write_run(tmp_path / "run", [record("s1", "Name a river.")])
    for path in run.glob("gen_*.jsonl"):
        path.unlink()
    result = evol("score", run, "--base-url", "http://127.0.0.1:9/v1", "--no-metrics")
    assert result.exit_code == 2
    assert result.stderr == f"evol: error: {run}: the run has no records yet\n"


@pytest.mark.parametrize(
    ("content", "why"),
    [
        ('{"ngram": 13', r"Expecting ',' delimiter: line 1 column 13 \(char 12\)"),
        ('{"ngram": "thirteen"}', r"\d+ validation errors? for ContaminationReport"),
    ],
    ids=["not JSON", "not a report"],
)
def test_a_damaged_contamination_check_is_named_with_its_first_fault(
    tmp_path: Path, content: str, why: str
) -> None:
    path = tmp_path / "contamination.json"
    path.write_text(content)
    with pytest.raises(RunDirError) as raised:
        read_contamination(tmp_path)
    expected = re.escape(f"{path}: unreadable (") + why
    assert re.fullmatch(
        expected + re.escape("); check again with evol score --against"), str(raised.value)
    )
