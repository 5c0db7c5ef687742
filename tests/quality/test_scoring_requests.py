"""What `evol score` asks and reports: the user's turn, every attempt and token, a prompt over the
context, a record's input, a second model's summary, a scorer without log-probabilities, the
table's columns, the failures it names, and a run another process writes.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from evol.rundir.records import compose
from tests.support.fake_server import FakeServer, Fault, Responder, scripted
from tests.support.runs import read_jsonl, record, run_args, write_run, write_seeds
from tests.support.score_runs import scored_run
from tests.support.scoring import ScoringResponder

__all__ = ["scored_run"]

# -- evol score: what it asks, and the figures it reports --------------------------------------

UNREADABLE = "Hard to say: it depends on the reader."


SINGLE_AGAIN = "Reply with the number only: one whole number from 1 to 10."


RANKING_AGAIN = 'Reply with the scores only, one line per version from #1 to #{}, like "#1: 2".'


class Scores(Responder):
    """A score by length; a task marked [mute] gets no number on the first ask."""

    def __call__(self, body: dict[str, Any]) -> str:
        first, again = body["messages"][0]["content"], len(body["messages"]) > 1
        if "[mute]" in first and not again:
            return UNREADABLE
        if '<version id="' in first:
            versions = re.findall(r'<version id="\d+">\n(.*?)\n</version>', first, re.S)
            return "\n".join(f"#{k}: {k}" for k in range(1, len(versions) + 1))
        if "<task>" in first:
            return str(len(first.split()) % 10 + 1)
        return super().__call__(body)


def words(text: str) -> int:
    return len(text.split())


def test_a_scoring_asks_as_the_user_and_reports_every_attempt_and_token(
    evol, scored_run: Path, tmp_path: Path
) -> None:
    """The summary's requests, retries and usage are what the server saw and billed; every
    request is a well-formed chat (a real server refuses a message without its role); a reply
    without a number is asked again in the words of its scorer."""
    run = tmp_path / "run"
    shutil.copytree(scored_run, run)
    faults = scripted(Fault("status", 500), None, Fault("status", 429, retry_after=0))
    started = time.monotonic()
    with FakeServer(responder=Scores(), faults=faults) as server:
        result = evol(
            "score", run, "--base-url", server.base_url, "--json", "--concurrency", "1",
            "--max-retries", "2", "--retry-max-wait", "0.01", "--no-metrics",
        )  # fmt: skip
        sent = list(server.requests)
    assert result.exit_code == 0, result.output
    wall = time.monotonic() - started
    summary = json.loads(result.stdout)
    assert summary["requests"] == len(sent) and summary["retries"] == 2
    assert summary["metrics"] is None  # --no-metrics: no file, not an empty name
    elapsed = summary["elapsed_s"]  # the scoring's own time, in milliseconds
    assert 0 < elapsed <= wall and elapsed == round(elapsed, 3)

    answered = [body for place, body in enumerate(sent) if place not in (0, 2)]
    prompt = sum(words(m["content"]) for body in answered for m in body["messages"])
    completion = sum(words(Scores()(body)) for body in answered)
    assert summary["usage"] == {"prompt_tokens": prompt, "completion_tokens": completion}

    asked_again = []
    for body in sent:
        roles = [message["role"] for message in body["messages"]]
        assert roles in (["user"], ["user", "assistant", "user"]), roles
        if len(roles) == 3:
            assert body["messages"][1]["content"] == UNREADABLE
            asked_again.append(body["messages"][2]["content"].strip())
    # The [mute] lineage: its difficulty of each of 3 records, and its ranking of 3 versions.
    assert Counter(asked_again) == {SINGLE_AGAIN: 3, RANKING_AGAIN.format(3): 1}


class Overflows(Scores):
    def __call__(self, body: dict[str, Any]) -> str:
        from tests.support.fake_server import ContextOverflow

        if "primary" in body["messages"][0]["content"]:
            raise ContextOverflow
        return super().__call__(body)


def test_a_prompt_over_the_context_is_recorded_as_asked_once_and_unscored(
    evol, scored_run: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    shutil.copytree(scored_run, run)
    with FakeServer(responder=Overflows()) as server:
        result = evol(
            "score", run, "--base-url", server.base_url, "--no-complexity", "--no-metrics"
        )
    assert result.exit_code == 0, result.output
    lines = [line for line in read_jsonl(run / "scores.jsonl") if line.get("error")]
    assert len(lines) == 3 and all("maximum context length" in line["error"] for line in lines)
    for line in lines:
        assert (line["score"], line["asked"], line["reply"], line["usage"]) == (None, 1, "", {})
        assert line.get("source") is None  # nothing was read


# -- evol score: a record's input is part of its task, and of what its score is for ------------


def test_a_records_input_is_scored_with_it_and_a_new_input_is_scored_again(
    evol, tmp_path: Path
) -> None:
    """The scorer sees the instruction with its input (a task without its data is another
    task); a score is for that input, so a record whose input changed is asked again, and
    only it (and its lineage's ranking)."""
    rows = [
        {"instruction": "Summarize the text", "input": "Rivers carve canyons over time."},
        {"instruction": "Translate the sentence", "input": "Good morning, friends."},
    ]
    seeds = write_seeds(tmp_path / "seeds.jsonl", rows)
    run = tmp_path / "run"
    with FakeServer() as server:
        assert evol(*run_args(server, seeds, run, "--generations", "1")).exit_code == 0
    records = [r for g in (0, 1) for r in read_jsonl(run / f"gen_{g}.jsonl")]
    assert all(r["input"].strip() for r in records) and len(records) == 4

    def score() -> tuple[list[dict[str, Any]], dict[str, Any]]:
        with FakeServer(responder=Scores()) as server:
            result = evol(
                "score", run, "--base-url", server.base_url, "--answers", "--json", "--no-metrics"
            )
            sent = list(server.requests)
        assert result.exit_code == 0, result.output
        return sent, json.loads(result.stdout)

    sent, summary = score()
    assert len(sent) == 4 + 4 + 2  # difficulty and quality of each record, a ranking per lineage
    for body in sent:
        prompt = body["messages"][0]["content"]
        shown = [r for r in records if r["instruction"] in prompt]
        assert shown and all(r["input"] in prompt for r in shown), prompt
    for scorer in ("difficulty", "quality", "complexity"):
        assert summary["scorers"][scorer]["records_scored"] == 4, scorer

    changed = records[1]  # the first seed's evolution
    path = run / "gen_1.jsonl"
    path.write_text(
        path.read_text().replace(json.dumps(changed["input"])[1:-1], "Lakes fill slowly.")
    )
    sent, summary = score()
    prompts = [body["messages"][0]["content"] for body in sent]
    assert len(prompts) == 3 and all("Lakes fill slowly." in prompt for prompt in prompts)
    assert summary["scorers"]["difficulty"]["records_scored"] == 4


class Sevens(Scores):
    """Another judge: 7 for every single score, none for the [mute] task's."""

    def __call__(self, body: dict[str, Any]) -> str:
        if '<version id="' in body["messages"][0]["content"]:
            return super().__call__(body)
        return UNREADABLE if "[mute]" in body["messages"][0]["content"] else "7"


def test_a_second_models_summary_is_of_its_own_scores(
    evol, scored_run: Path, tmp_path: Path
) -> None:
    """Scores of two models in one scores.jsonl: the summary of a scoring is of its model's,
    even where the other model's lines come first and give more scores."""
    run = tmp_path / "run"
    shutil.copytree(scored_run, run)
    common = ("--json", "--no-metrics", "--no-complexity", "--max-retries", "0")
    with FakeServer(models=("judge-a", "judge-b"), responder=Scores()) as server:
        first = evol("score", run, "--base-url", server.base_url, "--model", "judge-a", *common)
    assert first.exit_code == 0, first.output
    with FakeServer(models=("judge-a", "judge-b"), responder=Sevens()) as server:
        second = evol("score", run, "--base-url", server.base_url, "--model", "judge-b", *common)
    assert second.exit_code == 0, second.output
    summary = json.loads(second.stdout)["scorers"]["difficulty"]
    assert (summary["model"], summary["records_scored"], summary["mean"]) == ("judge-b", 3, 7.0)


# -- evol score without log-probabilities --------------------------------------------------------

LOGPROBS_REFUSED = "logprobs are not supported by this model"


def test_without_logprobs_a_scorer_still_asks_at_temperature_0_within_its_token_cap(
    evol, scored_run: Path, tmp_path: Path
) -> None:
    """The step down drops only the log-probabilities: the requests after it are as
    deterministic and as short as before, the user is told once, and every score says it
    was read from the text."""
    run = tmp_path / "run"
    shutil.copytree(scored_run, run)
    refusal = Fault("status", 400, message=LOGPROBS_REFUSED)
    with FakeServer(
        responder=Scores(), faults=lambda body: refusal if body.get("logprobs") else None
    ) as server:
        result = evol(
            "score", run, "--base-url", server.base_url, "--no-complexity", "--no-metrics",
            "--concurrency", "1",
        )  # fmt: skip
        sent = list(server.requests)
    assert result.exit_code == 0, result.output
    first, *after = sent
    assert first["logprobs"] and first["temperature"] == 0
    assert after and all(not body.get("logprobs") for body in after)
    assert all(
        body["temperature"] == 0 and body["max_tokens"] == first["max_tokens"] for body in after
    )
    told = [line for line in result.stderr.splitlines() if "refused log-probabilities" in line]
    assert (
        len(told) == 1
        and LOGPROBS_REFUSED in told[0]
        and "difficulty goes on without them" in told[0]
    )
    lines = read_jsonl(run / "scores.jsonl")
    assert lines and all(line["source"] == "text" for line in lines if line["score"] is not None)
    muted = next(line for line in lines if line["asked"] == 2)
    assert muted["reply"].startswith(f"{UNREADABLE}\n---\n")


def test_a_server_that_refuses_logprobs_even_without_them_is_paid_once_more_per_record(
    evol, scored_run: Path, tmp_path: Path
) -> None:
    """A refusal that names logprobs although none were asked is the request's own: it fails
    that record, it is not one more step down to pay for."""
    run = tmp_path / "run"
    shutil.copytree(scored_run, run)
    refusal = Fault("status", 400, message=LOGPROBS_REFUSED)
    with FakeServer(responder=Scores(), faults=lambda body: refusal) as server:
        result = evol(
            "score", run, "--base-url", server.base_url, "--no-complexity", "--no-metrics",
            "--concurrency", "1", "--json",
        )  # fmt: skip
        sent = len(server.requests)
    assert result.exit_code == 1, result.output
    assert json.loads(result.stdout)["scorers"]["difficulty"]["failed"] == 6
    assert sent == 1 + 6  # the first step down, then each record once without


def test_a_number_followed_by_prose_is_still_read_from_its_log_probabilities() -> None:
    """ "7 out of 10": the expected score is taken from the number's token, the words after it
    aside (Deita's score, not the text's 7)."""
    try:
        from evol.quality.readings import single_reading
    except ImportError:  # 4f7dc9e, before the quality package
        from evol.scoring import single_reading
    from evol.llm import Completion

    half = math.log(0.5)
    tokens = [{"7": half, "8": half}, {" out": 0.0}, {" of": 0.0}, {" 10": 0.0}, {".": 0.0}]
    reading = single_reading(Completion(text="7 out of 10.", top_logprobs=tokens), 10)
    assert (reading.value, reading.source) == (7.5, "logprobs")


class Unreadable(Responder):
    def __call__(self, body: dict[str, Any]) -> str:
        return UNREADABLE


LOGPROBS_REFUSAL = Fault("status", 400, message=LOGPROBS_REFUSED)


@pytest.mark.parametrize(
    ("responder", "faults"),
    [
        (Scores, None),
        (Scores, lambda body: LOGPROBS_REFUSAL if body.get("logprobs") else None),
        (Unreadable, None),
    ],
    ids=["scored", "logprobs refused", "nothing read"],
)
def test_the_score_table_shows_the_figures_of_the_json_summary_in_its_columns(
    evol, scored_run: Path, tmp_path: Path, responder: type[Responder], faults: Any
) -> None:
    """`evol score` prints, for a person, the figures `--json` gives a program: each scorer's
    row under the header, each cell starting where its column's name does."""
    runs = [tmp_path / "text", tmp_path / "json"]
    outputs = []
    for run, extra in zip(runs, [(), ("--json",)], strict=True):
        shutil.copytree(scored_run, run)
        with FakeServer(responder=responder(), faults=faults) as server:
            result = evol("score", run, "--base-url", server.base_url, "--no-metrics", *extra)
        assert result.exit_code == 0, result.output
        outputs.append(result.stdout)
    text, summary = outputs[0].splitlines(), json.loads(outputs[1])
    assert text[0] == f"{runs[0]}: complete"
    header = [
        "scorer",
        "model",
        "now",
        "missing",
        "already",
        "failed",
        "logprobs",
        "records",
        "mean",
    ]
    assert text[1].split() == header
    starts = [text[1].index(name) for name in header]
    rows = text[2 : 2 + len(summary["scorers"])]
    for line, (name, s) in zip(rows, summary["scorers"].items(), strict=True):
        cells = [
            name, s["model"], str(s["scored"]), str(s["missing"]), str(s["already"]),
            str(s["failed"]), "refused" if s["logprobs_refused"] else str(s["from_logprobs"]),
            str(s["records_scored"]), "-" if s["mean"] is None else f"{s['mean']:.2f}",
        ]  # fmt: skip
        assert line.split() == cells and line == line.rstrip(), line
        assert [
            line.index(cell, start) for cell, start in zip(cells, starts, strict=True)
        ] == starts
    assert text[2 + len(rows)] == (
        "(counted in records, each version of a lineage for complexity; failed: calls)"
    )


def test_a_server_that_cannot_say_which_model_it_serves_is_named_as_the_step_that_failed(
    evol, scored_run: Path
) -> None:
    """Without --model, evol score asks the server for its model first: a failure there says
    so, rather than leave the user to guess which call failed."""
    from tests.support.hostile_server import HostileServer, response

    async def unavailable(request, writer) -> bool:
        writer.write(response("503 Service Unavailable", b'{"error": {"message": "busy"}}'))
        return True

    with HostileServer(unavailable) as server:
        result = evol(
            "score", scored_run, "--base-url", server.base_url, "--max-retries", "0",
            "--no-metrics", "--quiet",
        )  # fmt: skip
        chats = len(server.chat_requests())
    assert result.exit_code != 0 and chats == 0
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("evol: error: ") and line.endswith(" (asking it which model it serves)")
    assert "503" in line, line


def test_a_key_revoked_before_the_ask_again_stops_the_scoring_and_records_nothing(
    evol, scored_run: Path, tmp_path: Path
) -> None:
    """A fatal error (here a 401) on the second ask of a [mute] record stops the scoring like
    on any ask; that record's line is not written as missing, so the next run asks again."""
    run = tmp_path / "run"
    shutil.copytree(scored_run, run)
    revoked = Fault("status", 401, message="Incorrect API key provided")
    with FakeServer(
        responder=Scores(), faults=lambda body: revoked if len(body["messages"]) > 1 else None
    ) as server:
        result = evol(
            "score", run, "--base-url", server.base_url, "--no-complexity", "--no-metrics",
            "--concurrency", "1", "--quiet",
        )  # fmt: skip
    assert result.exit_code == 2, result.output
    lines = read_jsonl(run / "scores.jsonl") if (run / "scores.jsonl").exists() else []
    assert all(line["score"] is not None for line in lines), lines


def test_a_scoring_says_what_it_will_ask_and_which_record_failed(
    evol, scored_run: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    shutil.copytree(scored_run, run)
    records = [r for g in (0, 1, 2) for r in read_jsonl(run / f"gen_{g}.jsonl")]
    broken = Fault("status", 500)
    with FakeServer(responder=Scores(), faults=lambda body: broken) as server:
        result = evol(
            "score", run, "--base-url", server.base_url, "--no-complexity", "--no-metrics",
            "--max-retries", "0",
        )  # fmt: skip
    assert result.exit_code == 1, result.output
    said = result.stderr
    assert f"backend openai, model fake-model: {len(records)} calls to make" in said
    for r in records:
        assert f"difficulty of {r['id']} failed after retries: " in said, r["id"]


def test_a_second_scoring_with_the_model_named_says_there_is_nothing_to_ask(
    evol, scored_run: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    shutil.copytree(scored_run, run)
    command = ("score", run, "--no-complexity", "--no-metrics", "--model", "fake-model")
    with FakeServer(responder=Scores()) as server:
        assert evol(*command, "--base-url", server.base_url).exit_code == 0
        again = evol(*command, "--base-url", server.base_url)
        assert again.exit_code == 0, again.output
        assert again.stderr == "evol: every record is scored already: nothing to ask\n"


def test_a_run_another_process_writes_is_not_scored_and_the_user_is_told_when_to(
    evol, scored_run: Path, tmp_path: Path
) -> None:
    from filelock import FileLock

    run = tmp_path / "run"
    shutil.copytree(scored_run, run)
    with FileLock(run / ".evol.lock"):  # the lock an evol run holds while it writes
        result = evol("score", run, "--no-complexity", "--no-metrics", "--model", "m")
    assert result.exit_code == 2
    assert result.stderr == (
        f"evol: error: {run}: another evol process is writing to this directory; score it "
        "when it has stopped\n"
    )


def ranking_prompt(evol, run: Path) -> str:
    """The one complexity prompt `evol score` sends for the run's one lineage."""
    with FakeServer(responder=ScoringResponder()) as server:
        result = evol("score", run, "--base-url", server.base_url, "--no-difficulty")
        prompts = [body["messages"][0]["content"] for body in server.requests]
    assert result.exit_code == 0, result.output
    (prompt,) = prompts
    return prompt


def test_the_ranking_prompt_shows_each_version_once_numbered_and_in_a_fixed_order(
    evol, tmp_path: Path
) -> None:
    """Every version with its input, numbered 1 to N, the count stated; the order drawn from
    the lineage, so a rerun asks the same question."""
    texts = [f"Write {n} lines about the sea, each rhyming with the one before" for n in range(6)]
    chain = [
        record(".".join(["r", *map(str, range(1, k + 1))]), text, input=f"Use the word tide {k}")
        for k, text in enumerate(texts)
    ]
    prompt = ranking_prompt(evol, write_run(tmp_path / "one", chain))
    blocks = re.findall(r'<version id="(\d+)">\n(.*?)\n</version>', prompt, re.S)
    assert [place for place, _text in blocks] == [str(n) for n in range(1, 7)]
    assert sorted(text for _place, text in blocks) == sorted(
        compose(r["instruction"], r["input"]) for r in chain
    )
    shown = "\n\n".join(f'<version id="{place}">\n{text}\n</version>' for place, text in blocks)
    assert shown in prompt and "Below are 6 versions" in prompt
    assert ranking_prompt(evol, write_run(tmp_path / "two", chain)) == prompt
    (line,) = read_jsonl(tmp_path / "one" / "scores.jsonl")  # the reply held no logprobs
    assert (line["scorer"], line["source"]) == ("complexity", "text")
