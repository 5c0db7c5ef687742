"""Run directories written by today's evol (tests/fixtures/run_v1/) are read as they were.

These pin today's behaviour before the refactor of #23 moves it: each fixture resumes without
paying for anything twice; `stats`, `show`, `export`, `merge` and `score --dry-run` print what
they printed when the fixtures were made (golden/); a batch request's custom_id is formed as
it is now; and which errors stop a run or a scoring at once, and which are retried or fail one
record only. Rebuild the fixtures with tests/fixtures/make_run_v1.py.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from evol.llm.batch import request_line
from evol.llm.protocol import GenerationParams
from evol.rundir.manifest import load_manifest
from tests.support.batch_server import BatchServer
from tests.support.fake_server import ContextOverflow, FakeServer, Fault, kind_of
from tests.support.hostile_server import HostileServer, response
from tests.support.runs import read_jsonl
from tests.support.scoring import ScoringResponder

_SPEC = importlib.util.spec_from_file_location(
    "make_run_v1", Path(__file__).parents[1] / "fixtures" / "make_run_v1.py"
)
assert _SPEC is not None and _SPEC.loader is not None
fixtures = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(fixtures)

RECORD_FILES = ("gen_0.jsonl", "gen_1.jsonl", "gen_2.jsonl", "gen_3.jsonl", "eliminated.jsonl")


@pytest.fixture
def runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of run_v1/, as the working directory: the fixtures record relative paths."""
    copy = tmp_path / "run_v1"
    shutil.copytree(fixtures.ROOT, copy)
    monkeypatch.chdir(copy)
    return copy


def run_args(url: str, out: str, *extra: str) -> tuple[str, ...]:
    return ("run", "seeds.jsonl", "--out", out, "--base-url", url, *fixtures.OPTIONS, *extra)


def records(run: Path) -> dict[str, list[dict[str, Any]]]:
    return {name: read_jsonl(run / name) for name in (*RECORD_FILES, "dataset.jsonl")}


def chat_requests(run: Path) -> int:
    """The requests a complete run paid for, by its own count."""
    summary = json.loads((run / "run.json").read_text())["summary"]
    return sum(summary["requests"].values())


def normalised_manifest(path: Path) -> dict[str, Any]:
    return json.loads(fixtures.normalise((path / "run.json").read_text()))


# -- what the commands print ------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(fixtures.GOLDEN))
def test_commands_print_what_they_printed(evol, runs: Path, name: str) -> None:
    expected = (runs / "golden" / f"{name}.txt").read_text()
    assert fixtures.golden_output(evol, name, runs) == expected


def test_merging_the_shards_again_writes_the_merged_run(evol, runs: Path) -> None:
    assert fixtures.golden_output(evol, "merged.merge", runs).startswith("exit 0\n")
    recorded = fixtures.ROOT / "merged"
    assert records(runs / "merged") == records(recorded)
    # Written again, it is format 2: the format-1 file recorded, read (upgraded), nothing else.
    upgraded = json.dumps(load_manifest(recorded).model_dump(mode="json"), ensure_ascii=False)
    assert normalised_manifest(runs / "merged") == json.loads(fixtures.normalise(upgraded))
    # The merged shards hold what one unsharded run holds.
    assert records(recorded) == records(runs / "complete")


# -- resuming pays for nothing twice ----------------------------------------------------------


@pytest.mark.parametrize(
    ("out", "extra"),
    [
        ("complete", ()),
        ("shard_0", ("--shard", "0/2")),
        ("shard_1", ("--shard", "1/2")),
        ("scored", ()),
    ],
)
def test_a_finished_run_resumes_with_no_request(
    evol, runs: Path, out: str, extra: tuple[str, ...]
) -> None:
    before = records(runs / out)
    with FakeServer() as server:
        result = evol(*run_args(server.base_url, out, *extra))
        assert server.requests == []
    assert result.exit_code == 0, result.stderr
    assert records(runs / out) == before


def test_a_merged_run_is_no_run_to_resume_and_nothing_is_sent(evol, runs: Path) -> None:
    with FakeServer() as server:
        result = evol(*run_args(server.base_url, "merged"))
        assert server.requests == []
    assert result.exit_code == 2
    assert result.stderr == (
        "evol: error: merged holds a run made with other options: --shard (run has 'merged', "
        "now None); use the same options to resume, another --out, or --overwrite to start "
        "afresh\n"
    )


def test_a_scored_run_scores_again_with_no_request(evol, runs: Path) -> None:
    before = (runs / "scored" / "scores.jsonl").read_bytes()
    with FakeServer(responder=ScoringResponder()) as server:
        result = evol("score", "scored", "--base-url", server.base_url, "--answers", "--quiet")
        assert server.requests == []
    assert result.exit_code == 0, result.stderr
    assert (runs / "scored" / "scores.jsonl").read_bytes() == before


def test_an_interrupted_run_with_a_torn_journal_repays_only_the_calls_in_flight(
    evol, runs: Path
) -> None:
    assert not (runs / "interrupted" / "calls.jsonl").read_bytes().endswith(b"\n")  # torn
    killed = json.loads((runs / "interrupted.json").read_text())
    with FakeServer() as server:
        result = evol(*run_args(server.base_url, "interrupted"))
        resumed = len(server.requests)
    assert result.exit_code == 0, result.stderr
    paid_twice = killed["requests_before_kill"] + resumed - chat_requests(runs / "complete")
    assert paid_twice == killed["in_flight_at_kill"]
    assert records(runs / "interrupted") == records(runs / "complete")
    assert not (runs / "interrupted" / "calls.jsonl").exists()


@pytest.mark.slow
@pytest.mark.heavy  # left out of make mutate
def test_a_pending_batch_run_resumes_without_submitting_a_row_again(evol, runs: Path) -> None:
    state = json.loads((runs / "batch_pending.server.json").read_text())
    server = BatchServer(hold=True)
    fixtures.restore(server, state)
    with server:
        args = run_args(server.base_url, "batch_pending", *fixtures.BATCH_OPTIONS)
        # batch_2 still runs: nothing is uploaded or created, the run stays pending.
        assert evol(*args).exit_code == 3
        assert server.requests == ["GET /v1/batches/batch_2"]
        server.release()
        codes: list[int] = []
        while not codes or codes[-1] == 3:
            assert len(codes) < 30, "the run never finished"
            codes.append(evol(*args).exit_code)
        assert codes[-1] == 0
        assert set(server.submitted.values()) == {1}  # no row submitted twice
    assert records(runs / "batch_pending") == records(runs / "complete")


# -- custom_id --------------------------------------------------------------------------------


def test_a_batch_custom_id_is_the_cut_sha256_of_its_step_and_body() -> None:
    """A resumed batch run finds its rows by custom_id: formed any other way, every row of a
    pending batch would be submitted, and paid for, again."""
    messages = [{"role": "user", "content": "Rate this: é"}]
    params = GenerationParams(temperature=0.0, max_tokens=100)
    custom_id, line = request_line(messages, "fake-model", params, "s1.2/judge")
    assert custom_id == "evol-5e6241def906554115211bab08a56572"
    body = {"model": "fake-model", "messages": messages, "temperature": 0.0, "max_tokens": 100}
    keyed = json.dumps(
        {"step": "s1.2/judge", "body": body},
        sort_keys=True,
        ensure_ascii=False,
        separators=(",", ":"),
    )
    assert custom_id == "evol-" + hashlib.sha256(keyed.encode()).hexdigest()[:32]
    assert json.loads(line) == {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": body,
    }
    assert line.endswith(b"}\n") and b"\n" not in line[:-1]
    without_step, _ = request_line(messages, "fake-model", params)
    assert without_step == "evol-61f22d274968fa1d0a4a7a72b9d61eff"


def test_the_pending_batch_s_custom_ids_hash_the_record_id_and_role() -> None:
    """Each row of the fixture's pending batch is `{"step": "<record id>/<role>", "body": …}`."""
    state = json.loads((fixtures.ROOT / "batch_pending.server.json").read_text())
    lines = [line for batch in state["batches"] for line in batch["lines"]]
    assert lines
    ids = [f"s{n}{suffix}" for n in range(1, 8) for suffix in ("", ".1", ".2", ".3")]
    steps = [f"{item}/{role}" for item in ids for role in ("evolve", "answer", "judge")]
    found = Counter()
    for line in lines:
        body = line["body"]
        params = GenerationParams.model_validate(
            {k: v for k, v in body.items() if k not in ("model", "messages")}
        )
        matches = [
            step
            for step in steps
            if request_line(body["messages"], body["model"], params, step)[0] == line["custom_id"]
        ]
        assert len(matches) == 1, line["custom_id"]
        found[matches[0].partition("/")[2]] += 1
    assert set(found) == {"judge", "evolve"}  # round 1's verdicts, round 2's retries


# -- which errors stop at once (pinned before #23 moves the rule into one place) --------------

FAST_FAILURE = ("--concurrency", "1", "--max-retries", "1", "--retry-max-wait", "0.01")


def on_evolve(fault: Fault) -> Callable[[dict[str, Any]], Fault | None]:
    return lambda body: fault if kind_of(body) == "evolve" else None


def always(fault: Fault) -> Callable[[dict[str, Any]], Fault | None]:
    return lambda _body: fault


@contextmanager
def going_down_once_held(
    is_held: Callable[[dict[str, Any]], bool], **options: Any
) -> Iterator[FakeServer]:
    """A server that answers (the model list, say), then goes down for good once a request
    `is_held` arrives: that request is dropped and every later one finds no server."""
    server = FakeServer(hold=is_held, **options).start()
    done = threading.Event()

    def stop_when_held() -> None:
        server.wait_until(lambda: server.held >= 1 or done.is_set())
        server.stop()

    watcher = threading.Thread(target=stop_when_held, daemon=True)
    watcher.start()
    try:
        yield server
    finally:
        done.set()  # a test that failed before the hold still stops the server
        watcher.join(30)


def run_one_seed(evol, tmp_path: Path, url: str, instruction: str, *extra: str):
    seeds = tmp_path / "one.jsonl"
    seeds.write_text(json.dumps({"instruction": instruction}) + "\n")
    out = tmp_path / "one"
    args = ("run", seeds, "--out", out, "--base-url", url, "--generations", "1", "--quiet")
    result = evol(*args, *FAST_FAILURE, *extra)
    return result, json.loads((out / "run.json").read_text())


RUN_TABLE = [
    # name, server options, evol options, seed marker, exit, requests (seed answer, evolve),
    # and how it ended: "stopped", "eliminated:<reason>" or "failed"
    ("401", {"api_key": "sk-right"}, ("--api-key", "sk-wrong"), "", 2, (1, 0), "stopped"),
    ("404 model", {}, ("--model", "no-such-model"), "", 2, (1, 0), "stopped"),
    ("400 context length", {}, (), " [too-long]", 0, (1, 1), "eliminated:too_long"),
    ("400", {"faults": on_evolve(Fault("status", 400))}, (), "", 0, (1, 1), "eliminated:rejected"),
    ("429", {"faults": on_evolve(Fault("status", 429, retry_after=0))}, (), "", 1, (1, 2), "failed"),
    ("500", {"faults": on_evolve(Fault("status", 500))}, (), "", 1, (1, 2), "failed"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("server_options", "options", "marker", "code", "requests", "ending"),
    [row[1:] for row in RUN_TABLE],
    ids=[row[0] for row in RUN_TABLE],
)
def test_which_errors_stop_a_run(
    evol,
    tmp_path: Path,
    server_options: dict[str, Any],
    options: tuple[str, ...],
    marker: str,
    code: int,
    requests: tuple[int, int],
    ending: str,
) -> None:
    with FakeServer(**server_options) as server:
        result, manifest = run_one_seed(
            evol, tmp_path, server.base_url, f"Explain recursion{marker}", "--model", "fake-model",
            *options,
        )  # fmt: skip
        sent = (len(server.requests_for("answer")), len(server.requests_for("evolve")))
    assert result.exit_code == code, result.stderr
    assert sent == requests  # no retry but of a 429 or a 5xx
    eliminated = read_jsonl(tmp_path / "one" / "eliminated.jsonl")
    if ending == "stopped":
        assert manifest["status"] == "failed" and manifest["summary"]["error"]
        assert len(result.stderr.strip().splitlines()) == 1
    elif ending == "failed":
        assert manifest["status"] == "failed" and manifest["summary"]["error"] is None
        assert [(f["id"], f["role"]) for f in manifest["summary"]["failed"]] == [("s1.1", "evolve")]
        assert eliminated == []
    else:
        assert manifest["status"] == "complete"
        assert [(r["id"], r["reason"]) for r in eliminated] == [("s1.1", ending.partition(":")[2])]


def test_an_endpoint_gone_after_answering_stops_a_run_after_its_retries(
    evol, tmp_path: Path
) -> None:
    with going_down_once_held(lambda body: kind_of(body) == "evolve") as server:
        result, manifest = run_one_seed(evol, tmp_path, server.base_url, "Explain recursion")
    assert result.exit_code == 2
    assert manifest["status"] == "failed"
    assert result.stderr.startswith("evol: error: cannot reach ")
    assert result.stderr.endswith(" (2 tries)\n")


SCORE_TABLE = [
    # name, server options, evol options, exit, requests, difficulty lines written, failed
    ("401", {"api_key": "sk-right"}, ("--api-key", "sk-wrong"), 2, 1, 0, None),
    ("404 model", {}, ("--model", "no-such-model"), 2, 1, 0, None),
    ("400", {"faults": always(Fault("status", 400))}, (), 1, 20, 0, 20),
    ("429", {"faults": always(Fault("status", 429, retry_after=0))}, (), 1, 40, 0, 20),
    ("500", {"faults": always(Fault("status", 500))}, (), 1, 40, 0, 20),
]  # fmt: skip


def overflowing(_body: dict[str, Any]) -> str:
    raise ContextOverflow


@pytest.mark.parametrize(
    ("server_options", "options", "code", "requests", "lines", "failed"),
    [row[1:] for row in SCORE_TABLE],
    ids=[row[0] for row in SCORE_TABLE],
)
def test_which_errors_stop_a_scoring(
    evol,
    runs: Path,
    server_options: dict[str, Any],
    options: tuple[str, ...],
    code: int,
    requests: int,
    lines: int,
    failed: int | None,
) -> None:
    with FakeServer(responder=ScoringResponder(), **server_options) as server:
        result = evol(
            "score", "complete", "--base-url", server.base_url, "--no-complexity", "--no-metrics",
            "--model", "fake-model", "--json", "--quiet", *FAST_FAILURE, *options,
        )  # fmt: skip
        sent = len(server.requests)
    assert result.exit_code == code, result.stderr
    assert sent == requests  # no retry but of a 429 or a 5xx
    assert len(read_jsonl(runs / "complete" / "scores.jsonl")) == lines
    summary = json.loads(result.stdout)
    if failed is None:
        assert summary["status"] == "failed" and len(result.stderr.strip().splitlines()) == 1
    else:
        assert summary["scorers"]["difficulty"]["failed"] == failed


def test_a_context_length_refusal_is_a_missing_score_not_retried(evol, runs: Path) -> None:
    with FakeServer(responder=overflowing) as server:
        result = evol(
            "score", "complete", "--base-url", server.base_url, "--no-complexity", "--no-metrics",
            "--model", "fake-model", "--json", "--quiet", *FAST_FAILURE,
        )  # fmt: skip
        sent = len(server.requests)
    assert result.exit_code == 0, result.stderr
    assert sent == 20
    lines = read_jsonl(runs / "complete" / "scores.jsonl")
    assert len(lines) == 20 and all(line["score"] is None for line in lines)
    assert "maximum context length" in lines[0]["error"]


def test_a_redirect_stops_a_scoring_at_once(evol, runs: Path) -> None:
    async def moved(request, writer) -> bool:
        if request.path.endswith("/models"):
            writer.write(response("200 OK", b'{"object": "list", "data": [{"id": "fake-model"}]}'))
        else:
            writer.write(response("307 Temporary Redirect", b"", "Location: http://elsewhere/v1"))
        return True

    with HostileServer(moved) as server:
        result = evol(
            "score", "complete", "--base-url", server.base_url, "--no-complexity", "--no-metrics",
            "--quiet", *FAST_FAILURE,
        )  # fmt: skip
        sent = len(server.chat_requests())
    assert result.exit_code == 2
    assert sent == 1
    assert "redirects to http://elsewhere/v1" in result.stderr


def test_an_endpoint_gone_after_answering_stops_scoring_as_it_stops_a_run(evol, runs: Path) -> None:
    """One idea of a fatal error for run and score (#23): before the one call layer, score
    failed each of the 20 records after its retries and went on."""
    with going_down_once_held(lambda _body: True, responder=ScoringResponder()) as server:
        result = evol(
            "score", "complete", "--base-url", server.base_url, "--no-complexity", "--no-metrics",
            "--json", "--quiet", *FAST_FAILURE,
        )  # fmt: skip
    assert result.exit_code == 2, result.stderr
    assert json.loads(result.stdout)["error"].startswith("cannot reach ")
    assert json.loads(result.stdout)["error"].endswith(" (2 tries)")
    assert read_jsonl(runs / "complete" / "scores.jsonl") == []
