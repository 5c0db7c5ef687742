"""Hostile cases against `evol run --verifiable` (issue #26, second half): answers that fail an
answer rule while they are drawn again, judges that never confirm, odd reply shapes, kill -9
mid-sampling and --batch. Each test fails where evol misbehaves."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

from evol.method.constraints import check, from_record
from tests.support.batch_server import BatchServer
from tests.support.fake_server import FakeServer, VerifiableResponder, constrained_answer, kind_of
from tests.support.hostile_server import HostileServer, models_body, response
from tests.support.runs import assert_valid_run, read_jsonl, run_args, write_seeds
from tests.support.verifiable import WORDS, SecondAnswerBad

pytestmark = pytest.mark.usefixtures("private_cache")


ENV_BASE = {k: v for k, v in os.environ.items() if not k.startswith(("EVOL_", "OPENAI_"))}


def seeds_file(tmp_path: Path, count: int = 4) -> Path:
    rows = [{"instruction": f"Explain topic number {i} to a student."} for i in range(count)]
    return write_seeds(tmp_path / "seeds.jsonl", rows)


def records(out: Path) -> list[dict]:
    rows = [r for g in range(6) for r in read_jsonl(out / f"gen_{g}.jsonl")]
    return rows + read_jsonl(out / "eliminated.jsonl")


# -- rejection sampling ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [
        "Sorry, I cannot help with that.",
        ("Here is the first part of a long answer, which then", "length"),
        "",
    ],
    ids=["refusal", "truncated", "empty"],
)
def test_a_bad_retry_does_not_end_the_sampling(evol, tmp_path: Path, bad: object) -> None:
    """With --answer-attempts 3, answer 2 failing an answer rule is one more failed answer:
    answer 3 meets the constraints and should be kept. evol eliminates the record at answer 2
    (reason sorry / truncated / stopwords_only), the attempts left unused."""
    seeds = write_seeds(tmp_path / "s.jsonl", [{"instruction": "Explain topic one."}])
    out = tmp_path / "out"
    with FakeServer(responder=SecondAnswerBad(bad=bad)) as server:
        result = evol(
            *run_args(
                server,
                seeds,
                out,
                "--verifiable",
                "--generations",
                "1",
                "--seed",
                "1",
                "--answer-attempts",
                "3",
                "--constraint-ids",
                WORDS,
            )  # fmt: skip
        )
    assert result.exit_code == 0
    eliminated = read_jsonl(out / "eliminated.jsonl")
    assert [r["reason"] for r in eliminated] in ([], ["constraint_unmet"])
    assert [r["attempts"] for r in read_jsonl(out / "gen_1.jsonl")] == [3]


@dataclass
class RefusesAfterFirst(VerifiableResponder):
    """Answer 1 fails the constraints; every further answer is a refusal."""

    def answer(self, instruction: str):  # type: ignore[override]
        if "(v" not in instruction:
            return super().answer(instruction)
        with self.lock:
            self.answers[instruction] += 1
            attempt = self.answers[instruction]
        return constrained_answer(instruction, meet=False) if attempt == 1 else "Sorry, no."


def test_retries_that_all_fail_an_answer_rule_end_as_constraint_unmet(evol, tmp_path: Path) -> None:
    """No answer passes: constraint_unmet, its detail naming the id answer 1 failed and the
    rule each further answer failed; the first failed answer kept as the rejected one."""
    seeds = write_seeds(tmp_path / "s.jsonl", [{"instruction": "Explain topic one."}])
    out = tmp_path / "out"
    with FakeServer(responder=RefusesAfterFirst()) as server:
        result = evol(
            *run_args(
                server,
                seeds,
                out,
                "--verifiable",
                "--generations",
                "1",
                "--seed",
                "1",
                "--answer-attempts",
                "2",
                "--constraint-ids",
                WORDS,
            )  # fmt: skip
        )
    assert result.exit_code == 0, result.output
    (record,) = read_jsonl(out / "eliminated.jsonl")
    assert (record["reason"], record["attempts"]) == ("constraint_unmet", 3)
    assert WORDS in record["detail"]
    assert "failed an answer rule: answer 2: sorry, answer 3: sorry" in record["detail"]
    assert record["rejected_output"] != record["output"] == "Sorry, no."
    assert record["unmet"][WORDS] >= 1


def test_every_kept_answer_passes_and_dpo_pairs_are_right(evol, tmp_path: Path) -> None:
    """Every kept answer meets its constraints strictly; each dpo pair's chosen passes and
    its rejected fails; stats' attempts agree with the files."""
    out = tmp_path / "out"
    with FakeServer(responder=VerifiableResponder(pass_rate=0.4)) as server:
        result = evol(
            *run_args(
                server,
                seeds_file(tmp_path, 8),
                out,
                "--verifiable",
                "--generations",
                "3",
                "--seed",
                "5",
                "--answer-attempts",
                "2",
                "--constraint-ids",
                f"{WORDS},keywords:existence,punctuation:no_comma,"
                "detectable_content:postscript,startend:end_checker",
            )  # fmt: skip
        )
    assert result.exit_code == 0, result.output
    assert_valid_run(out)
    kept = [r for g in (1, 2, 3) for r in read_jsonl(out / f"gen_{g}.jsonl")]
    by_id = {r["id"]: r for r in kept}
    for record in kept:  # constraints only accumulate: a child's start with its parent's
        parent = by_id.get(record["parent_id"], {"constraints": []})
        assert record["constraints"][: len(parent["constraints"])] == parent["constraints"]
        assert len(record["constraints"]) == len(parent["constraints"]) + 1
    by_prompt = {}
    for record in kept:
        constraints = from_record(record["constraints"])
        assert all(v.strict for v in check(record["output"], constraints)), record["id"]
        by_prompt[record["instruction"]] = constraints
    assert evol("export", out, "--format", "dpo", "--out", tmp_path / "dpo.jsonl").exit_code == 0
    pairs = read_jsonl(tmp_path / "dpo.jsonl")
    assert pairs
    for pair in pairs:
        constraints = by_prompt[pair["prompt"]]
        assert all(v.strict for v in check(pair["chosen"], constraints))
        assert not all(v.strict for v in check(pair["rejected"], constraints))
    stats = json.loads(evol("stats", out, "--json").output)["constraints"]
    attempts = Counter(str(r["attempts"]) for r in kept)
    assert stats["attempts"] == dict(attempts)
    unmet = sum(
        1 for r in read_jsonl(out / "eliminated.jsonl") if r["reason"] == "constraint_unmet"
    )
    assert stats["unmet"] == unmet
    # Each id's answers: every attempt of every record carrying it, kept or not.
    answers: Counter[str] = Counter()
    failed: Counter[str] = Counter()
    for record in [*kept, *read_jsonl(out / "eliminated.jsonl")]:
        if record.get("attempts") is None:
            continue
        for c in record["constraints"]:
            answers[c["id"]] += record["attempts"]
            failed[c["id"]] += (record.get("unmet") or {}).get(c["id"], 0)
    for cid, rate in stats["pass_rate"].items():
        assert (rate["answers"], rate["met"]) == (answers[cid], answers[cid] - failed[cid]), cid


def test_a_fixed_seed_gives_the_same_run(evol, tmp_path: Path) -> None:
    """The same --seed gives the same records, whatever --concurrency."""
    outs = []
    for name, concurrency in (("a", "1"), ("b", "4")):
        out = tmp_path / name
        with FakeServer(responder=VerifiableResponder(pass_rate=0.5)) as server:
            assert (
                evol(
                    *run_args(
                        server,
                        seeds_file(tmp_path),
                        out,
                        "--verifiable",
                        "--generations",
                        "3",
                        "--seed",
                        "9",
                        "--concurrency",
                        concurrency,
                    )  # fmt: skip
                ).exit_code
                == 0
            )
        outs.append(sorted(json.dumps(r, sort_keys=True) for r in records(out)))
    assert outs[0] == outs[1]


# -- usage ----------------------------------------------------------------------------------------


def test_constraint_ids_naming_nothing_is_a_usage_error(evol, tmp_path: Path) -> None:
    """`--constraint-ids ,` names no id: evol takes it as an empty pool and eliminates every
    evolution as no_constraint_left, saying "each constraint of every id contradicts one the
    lineage carries ()", exit 0."""
    out = tmp_path / "out"
    with FakeServer(responder=VerifiableResponder()) as server:
        result = evol(
            *run_args(
                server,
                seeds_file(tmp_path, 1),
                out,
                "--verifiable",
                "--generations",
                "1",
                "--constraint-ids",
                ",",
            )  # fmt: skip
        )
    assert result.exit_code == 2, result.output
    assert "--constraint-ids ',' names no id" in result.output
    assert len(result.output.strip().splitlines()) == 1, result.output
    assert server.requests == [] and not (out / "eliminated.jsonl").exists()


# -- kill -9 mid-sampling -------------------------------------------------------------------------


def command(url: str, seeds: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "evol", "run", str(seeds), "--out", str(out), "--base-url", url,
            "--quiet", "--retry-max-wait", "0.05", *extra]  # fmt: skip


@pytest.mark.slow
def test_kill_9_mid_sampling_pays_nothing_twice(tmp_path: Path, private_cache: Path) -> None:
    """Hold the first retry (answer_2 of a constrained instruction), kill -9, resume: the calls
    paid are a straight run's plus the one held."""
    seeds = seeds_file(tmp_path, 3)
    options = ("--verifiable", "--generations", "2", "--seed", "4", "--concurrency", "1",
               "--constraint-ids", f"{WORDS},keywords:existence")  # fmt: skip
    env = {**ENV_BASE, "XDG_CACHE_HOME": str(private_cache)}
    with FakeServer(responder=VerifiableResponder(pass_rate=0.3)) as server:
        straight = tmp_path / "straight"
        assert (
            subprocess.run(command(server.base_url, seeds, straight, *options), env=env).returncode
            == 0
        )
        straight_calls = len(server.requests)
    seen: Counter[str] = Counter()

    def hold(body: dict) -> bool:
        content = body["messages"][-1]["content"]
        if kind_of(body) != "answer" or "(v" not in content:
            return False
        seen[content] += 1
        return seen[content] == 3  # the third answer to one instruction: answer_3

    killed = tmp_path / "killed"
    # One answerer for both halves: answer k to an instruction is the k-th it gives (the held
    # request is never answered: the server drops it on stopping).
    answerer = VerifiableResponder(pass_rate=0.3)
    with FakeServer(responder=answerer, hold=hold) as server:
        process = subprocess.Popen(command(server.base_url, seeds, killed, *options), env=env)
        try:
            server.wait_until(lambda: server.held == 1 or process.poll() is not None)
        finally:
            process.send_signal(signal.SIGKILL)
            process.wait()
        assert server.held == 1
        sent = len(server.requests)
    with FakeServer(responder=answerer) as server:
        assert (
            subprocess.run(command(server.base_url, seeds, killed, *options), env=env).returncode
            == 0
        )
        resumed = len(server.requests)
    assert sent + resumed - straight_calls == 1
    assert sorted(json.dumps(r, sort_keys=True) for r in records(killed)) == sorted(
        json.dumps(r, sort_keys=True) for r in records(straight)
    )


# -- --batch --------------------------------------------------------------------------------------


def test_batch_keeps_what_a_live_run_keeps(evol, tmp_path: Path) -> None:
    """--batch with --verifiable: the same records and attempts as a live run, each answer
    paid once."""
    seeds = seeds_file(tmp_path, 4)
    options = ("--verifiable", "--generations", "2", "--seed", "6", "--answer-attempts", "2",
               "--constraint-ids", f"{WORDS},keywords:existence,punctuation:no_comma")  # fmt: skip
    live = tmp_path / "live"
    with FakeServer(responder=VerifiableResponder(pass_rate=0.4)) as server:
        assert evol(*run_args(server, seeds, live, *options)).exit_code == 0
        live_calls = len(server.requests)
    batch = tmp_path / "batch"
    with BatchServer(responder=VerifiableResponder(pass_rate=0.4)) as server:
        result = evol(
            "run", seeds, "--out", batch, "--base-url", server.base_url, "--batch",
            "--batch-poll-interval", "0.05", "--retry-max-wait", "0.05", "--model", "fake-model",
            "--quiet", *options,
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        paid = sum(server.answered.values())
    assert_valid_run(batch)

    def content(out: Path) -> list[str]:
        drop = ("usage",)
        return sorted(
            json.dumps({k: v for k, v in r.items() if k not in drop}, sort_keys=True)
            for r in records(out)
        )

    assert content(batch) == content(live)
    assert paid == live_calls


# -- hostile answers ------------------------------------------------------------------------------


PASSING = constrained_answer("Answer with less than 300 words.", meet=True)


ODD_ANSWERS = {
    "null content": {"message": {"role": "assistant", "content": None}},
    "parts list": {
        "message": {"role": "assistant", "content": [{"type": "text", "text": PASSING}]}
    },
    "number content": {"message": {"role": "assistant", "content": 5}},
    "no message": {},
    "dict content": {"message": {"role": "assistant", "content": {"text": PASSING}}},
    "huge": {"message": {"role": "assistant", "content": "word " * 400_000}},
}


def hostile_answers(shape: str):
    """Evolve and judge as VerifiableResponder does; every answer to a constrained instruction
    in an odd shape."""
    scripted = VerifiableResponder()

    async def behaviour(request, writer) -> bool:
        if request.path.endswith("/models"):
            writer.write(response("200 OK", models_body()))
            return True
        body = request.json
        reply = scripted(body)
        text = reply[0] if isinstance(reply, tuple) else reply
        choice = {"index": 0, "message": {"role": "assistant", "content": text}}
        if kind_of(body) == "answer" and "(v" in body["messages"][-1]["content"]:
            choice = {"index": 0, **ODD_ANSWERS[shape]}
        payload = {
            "id": "x", "object": "chat.completion", "model": body.get("model"),
            "choices": [{**choice, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1},
        }  # fmt: skip
        writer.write(response("200 OK", json.dumps(payload).encode()))
        return True

    return behaviour


@pytest.mark.parametrize("shape", list(ODD_ANSWERS))
def test_an_odd_answer_is_never_kept_wrongly_nor_a_traceback(
    evol, tmp_path: Path, shape: str
) -> None:
    out = tmp_path / "out"
    seeds = write_seeds(tmp_path / "s.jsonl", [{"instruction": "Explain topic one."}])
    with HostileServer(hostile_answers(shape)) as server:
        result = evol(
            "run", seeds, "--out", out, "--base-url", server.base_url, "--quiet",
            "--retry-max-wait", "0.01", "--verifiable", "--generations", "1",
            "--constraint-ids", f"{WORDS}", "--answer-attempts", "1",
        )  # fmt: skip
    assert len(result.output.strip().splitlines()) <= 1, result.output
    for record in read_jsonl(out / "gen_1.jsonl"):
        assert all(v.strict for v in check(record["output"], from_record(record["constraints"])))


# -- rewrites and judges --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("marker", "ids", "reason"),
    [("[reverse]", WORDS, "constraint_lost"), ("[drop-requirement]", WORDS, "constraint_lost"),
     ("[unstated]", "punctuation:no_comma", "constraint_lost")],
)  # fmt: skip
def test_a_rewrite_that_loses_its_constraint_is_eliminated(
    evol, tmp_path: Path, marker: str, ids: str, reason: str
) -> None:
    out = tmp_path / "out"
    seeds = write_seeds(tmp_path / "s.jsonl", [{"instruction": f"Explain topic one {marker}."}])
    with FakeServer(responder=VerifiableResponder()) as server:
        assert (
            evol(
                *run_args(
                    server,
                    seeds,
                    out,
                    "--verifiable",
                    "--generations",
                    "1",
                    "--constraint-ids",
                    ids,
                )  # fmt: skip
            ).exit_code
            == 0
        )
    assert [r["reason"] for r in read_jsonl(out / "eliminated.jsonl")] == [reason]


@dataclass
class UnsureJudge(VerifiableResponder):
    """The judge does not answer whether the rewrite states its requirements: the key is
    missing, its value outside the schema's yes/no, or the reply is prose."""

    shape: str = "missing"

    def judge(self, second: str, *, asked_again: bool = False, structured: bool = False) -> str:
        reply = super().judge(second, asked_again=asked_again, structured=structured)
        if not reply.startswith("{"):
            return reply
        if self.shape == "prose":
            return "Not Equal"
        verdict = json.loads(reply)
        if self.shape == "missing":
            verdict.pop("states_requirements")
        else:
            verdict["states_requirements"] = self.shape
        return json.dumps(verdict)


@pytest.mark.parametrize("shape", ["missing", "partially", "prose"])
def test_an_unconfirmed_statement_is_not_kept(evol, tmp_path: Path, shape: str) -> None:
    """punctuation:no_comma is unworded: the free check only looks for "comma", the judge is
    asked the rest. A judge that never says "yes" has not confirmed the rewrite states it;
    evol keeps the rewrite all the same (states None counts as stated)."""
    out = tmp_path / "out"
    seeds = write_seeds(tmp_path / "s.jsonl", [{"instruction": "Explain topic one."}])
    with FakeServer(responder=UnsureJudge(shape=shape)) as server:
        assert (
            evol(
                *run_args(
                    server,
                    seeds,
                    out,
                    "--verifiable",
                    "--generations",
                    "1",
                    "--constraint-ids",
                    "punctuation:no_comma",
                )  # fmt: skip
            ).exit_code
            == 0
        )
    assert read_jsonl(out / "gen_1.jsonl") == []


@dataclass
class ConfirmsWhenAskedAgain(UnsureJudge):
    """Says nothing of the requirements at first; asked again, says "yes"."""

    def judge(self, second: str, *, asked_again: bool = False, structured: bool = False) -> str:
        if asked_again:
            return VerifiableResponder.judge(self, second, structured=structured)
        return super().judge(second, asked_again=asked_again, structured=structured)


def test_an_unconfirmed_statement_is_asked_again(evol, tmp_path: Path) -> None:
    """The judge is asked once more (judge_again, as for a reply with no verdict); its "yes"
    then keeps the rewrite. A rewrite with no unworded constraint is asked once."""
    out = tmp_path / "out"
    seeds = write_seeds(tmp_path / "s.jsonl", [{"instruction": "Explain topic one."}])
    with FakeServer(responder=ConfirmsWhenAskedAgain()) as server:
        assert (
            evol(
                *run_args(
                    server,
                    seeds,
                    out,
                    "--verifiable",
                    "--generations",
                    "1",
                    "--constraint-ids",
                    "punctuation:no_comma",
                )  # fmt: skip
            ).exit_code
            == 0
        )
        judge_calls = len(server.requests_for("judge"))
    assert [r["id"] for r in read_jsonl(out / "gen_1.jsonl")] == ["s1.1"]
    assert judge_calls == 2
    with FakeServer(responder=ConfirmsWhenAskedAgain()) as server:
        assert (
            evol(
                *run_args(
                    server,
                    seeds,
                    tmp_path / "worded",
                    "--verifiable",
                    "--generations",
                    "1",
                    "--constraint-ids",
                    WORDS,
                )  # fmt: skip
            ).exit_code
            == 0
        )
        assert len(server.requests_for("judge")) == 1
