"""Attacks on the judge in a schema (#24 items 1-3): replies the builder's tests did not try,
servers that refuse the schema in other ways, and the answer check across kills and batches."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from evol.llm.openai_api import json_object_format
from evol.method.elimination import Reason
from evol.method.judging import (
    ANSWER_CHECK_SCHEMA,
    VERDICT_SCHEMA,
    read_answer_check,
    read_judgement,
)
from evol.method.verdicts import Verdict
from tests.support.batch_server import BatchServer
from tests.support.fake_server import FakeServer, Fault, Responder, first_user_turn, kind_of
from tests.support.runs import Evol, read_jsonl, run_args, write_seeds


def verdict_object(verdict: str = "different", second_is: str = "instruction", **more: str) -> str:
    return json.dumps({"reason": "r", "second_is": second_is, "verdict": verdict} | more)


# -- the JSON object among other text ------------------------------------------------------


@pytest.mark.parametrize(
    "reply",
    [
        # A note after the object that holds a brace of its own.
        verdict_object(second_is="answer") + "\nNote: I read {input} as a placeholder.",
        # Prose before the object that holds one.
        "The {x} slot is filled in. " + verdict_object(second_is="answer"),
        # A fence, and a closing remark with braces.
        "```json\n" + verdict_object(second_is="answer") + "\n```\n(see {above})",
        # The keys as a model that ignored the schema might capitalise them.
        json.dumps({"Reason": "r", "Second_Is": "answer", "Verdict": "Different"}),
    ],
)
def test_the_object_is_found_whatever_braces_or_key_case_surround_it(reply: str) -> None:
    judgement = read_judgement(reply)
    assert (judgement.form, judgement.verdict, judgement.second_is) == (
        "schema",
        Verdict.DIFFERENT,
        "answer",
    )
    failure = judgement.failure(reply)
    assert failure is not None and failure.reason == Reason.NOT_AN_INSTRUCTION


def test_an_answer_check_object_followed_by_a_brace_is_read_as_the_schema() -> None:
    reply = json.dumps({"reason": "wants the data", "answer": "asks_for_information"})
    check = read_answer_check(reply + " (it asked for {table})")
    assert (check.form, check.problem) == ("schema", "asks_for_information")


def test_the_first_object_the_schema_allows_is_the_verdict() -> None:
    # A first object off the schema (an echo of the example), then the real one.
    reply = '{"reason": "...", "second_is": "...", "verdict": "..."}\n' + verdict_object("equal")
    judgement = read_judgement(reply)
    assert (judgement.form, judgement.verdict) == ("schema", Verdict.EQUAL)


@pytest.mark.parametrize(
    "reply",
    [
        "{" * 100_000,  # deep nesting: no recursion error
        '{"reason": "' + "x" * 1_000_000 + '"',  # a 1 MB reason, never closed
        "{" * 5_000 + "}" * 5_000,
    ],
)
def test_hostile_objects_are_read_without_error(reply: str) -> None:
    assert read_judgement(reply).form == "prose"
    assert read_answer_check(reply).form == "unread"


# -- the answer check read from prose ------------------------------------------------------


@pytest.mark.parametrize(
    "reply",
    [
        "The reply neither asks for information nor says the task is unclear; it does the work.",
        "It never asks for information.",
        "It does not only acknowledge the task.",
        "No asks_for_information here.",
        # A contraction denies as "not" does: the label named, then turned down.
        "The answer isn't asks_for_information.",
        "I wouldn't say only_acknowledges: it does the work.",
    ],
)
def test_a_choice_the_prose_denies_is_not_read_as_chosen(reply: str) -> None:
    check = read_answer_check(reply)
    assert check.failure() is None, check


# -- replies cut at the token limit --------------------------------------------------------

SEEDS = [
    {"instruction": "Explain why the sky is blue."},
    {"instruction": "List three prime numbers."},
]


class CutReplies(Responder):
    """The judge model's first reply stops at the token limit inside its reason, which reads
    like a verdict of its own ("the same as the first", "asks for information")."""

    def judge(self, second: str, *, asked_again: bool = False, structured: bool = False) -> Any:
        if asked_again:
            return verdict_object()
        return '{"reason": "The second is the same as the first but adds a year limit', "length"

    def check_answer(self, task: str, structured: bool) -> Any:
        return '{"reason": "The reply never asks for information and gives the', "length"


def run(evol: Evol, server: FakeServer, tmp_path: Path, *extra: object) -> tuple[Any, Path]:
    seeds = write_seeds(tmp_path / "seeds.jsonl", SEEDS)
    out = tmp_path / "run"
    return evol(*run_args(server, seeds, out, "--generations", "1", *extra)), out


def evolutions(out: Path, name: str) -> list[dict[str, Any]]:
    return [row for row in read_jsonl(out / name) if row["generation"]]


def test_a_reply_cut_inside_its_reason_gives_no_verdict_and_no_check(
    evol: Evol, tmp_path: Path
) -> None:
    with FakeServer(responder=CutReplies()) as server:
        result, out = run(evol, server, tmp_path, "--answer-check")
        assert result.exit_code == 0, result.output
        judged = server.requests_for("judge")
    # The cut reply says nothing yet: the judge is asked again, and its verdict stands.
    assert len(judged) == 4 and sum(len(body["messages"]) > 1 for body in judged) == 2
    assert evolutions(out, "eliminated.jsonl") == []
    assert len(evolutions(out, "dataset.jsonl")) == 2
    read = json.loads((out / "run.json").read_text())["judging"]["replies_read_as"]
    # The cut checks eliminate nothing: the 2 seeds' answers and the 2 evolutions'.
    assert read == {"judge": {"schema": 2}, "answer_check": {"unread": 4}}


# -- servers that refuse the schema --------------------------------------------------------

BACKENDS = ["openai", "openai-sdk"]


def flagged(body: dict[str, Any]) -> Fault | None:
    """A 400 for another reason than the schema, whose message happens to hold a word that
    servers use for one ("grammar"): the judge's request on a flagged rewrite."""
    if kind_of(body) == "judge" and "[flagged]" in first_user_turn(body):
        return Fault("status", 400, message="Flagged: the text on English grammar breaks a policy")
    return None


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_400_that_the_schema_did_not_cause_does_not_turn_the_schema_off(
    evol: Evol, tmp_path: Path, backend: str
) -> None:
    seeds = [{"instruction": "Fix the grammar of this line. [flagged]"}, *SEEDS]
    with FakeServer(faults=flagged) as server:
        out = tmp_path / "run"
        result = evol(
            *run_args(server, write_seeds(tmp_path / "s.jsonl", seeds), out),
            *("--generations", "1", "--concurrency", "1", "--backend", backend),
        )
        assert result.exit_code == 0, result.output
        judged = server.requests_for("judge")
    # The flagged rewrite is rejected (asked without the schema too, it is refused again)...
    gone = evolutions(out, "eliminated.jsonl")
    assert [(row["root_id"], row["reason"]) for row in gone] == [("s1", "rejected")]
    # ... and the other judge calls still ask for the schema, and get it.
    others = [body for body in judged if "[flagged]" not in first_user_turn(body)]
    assert len(others) == 2 and all("response_format" in body for body in others)
    read = json.loads((out / "run.json").read_text())["judging"]["replies_read_as"]
    assert read == {"judge": {"schema": 2}}


class DetailServer(FakeServer):
    """A FastAPI-style server: the schema refused with 422 and a pydantic `detail` list."""

    async def _reply(self, request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        if "response_format" in body:
            detail = [
                {
                    "type": "extra_forbidden",
                    "loc": ["body", "response_format"],
                    "msg": "Extra inputs are not permitted",
                }
            ]
            return web.json_response({"detail": detail}, status=422)
        return await super()._reply(request, body)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_422_that_names_the_schema_in_its_detail_falls_back_to_prose(
    evol: Evol, tmp_path: Path, backend: str
) -> None:
    with DetailServer() as server:
        result, out = run(evol, server, tmp_path, "--concurrency", "1", "--backend", backend)
    assert result.exit_code == 0, result.output
    assert evolutions(out, "eliminated.jsonl") == []
    read = json.loads((out / "run.json").read_text())["judging"]["replies_read_as"]
    assert read == {"judge": {"prose": 2}}


def test_refusals_racing_under_concurrency_are_each_asked_again_and_none_is_rejected(
    evol: Evol, tmp_path: Path
) -> None:
    seeds = [{"instruction": f"Describe animal number {n}."} for n in range(24)]
    # Every judge request waits until 16 are in flight, so all of them race the refusal.
    hold = lambda body: kind_of(body) == "judge"  # noqa: E731
    with FakeServer(refuse_formats=("json_schema", "json_object"), hold=hold) as server:
        out = tmp_path / "run"
        args = run_args(server, write_seeds(tmp_path / "s.jsonl", seeds), out)
        done: list[Any] = []
        runner = threading.Thread(
            target=lambda: done.append(evol(*args, "--generations", "1", "--concurrency", "16"))
        )
        runner.start()
        server.wait_until(lambda: server.held >= 16)
        server.release()
        runner.join()
        judged = server.requests_for("judge")
    assert done[0].exit_code == 0, done[0].output
    assert evolutions(out, "eliminated.jsonl") == []
    # Each judge request goes down the steps (json_schema, json_object, none) from where its
    # endpoint stood when it was sent, and is answered once, at the last: never sent twice at
    # one step, never eliminated for a refusal.
    ladder = ["json_schema", "json_object", None]
    steps: dict[str, list[str | None]] = {}
    for body in judged:
        form = (body.get("response_format") or {}).get("type")
        steps.setdefault(first_user_turn(body), []).append(form)
    assert len(steps) == 24
    assert all(sent == ladder[ladder.index(sent[0]) :] for sent in steps.values())
    assert sum(sent[0] == "json_schema" for sent in steps.values()) >= 16  # all raced
    read = json.loads((out / "run.json").read_text())["judging"]["replies_read_as"]
    assert read == {"judge": {"prose": 24}}


# -- --batch -------------------------------------------------------------------------------


def test_batch_rows_refused_for_their_schema_are_asked_again_without_it(
    evol: Evol, tmp_path: Path
) -> None:
    def row_fate(line: dict[str, Any], times: int) -> str:
        return "error:400" if "response_format" in line["body"] else "ok"

    refusal = lambda _line: "response_format json_schema is not supported for this model"  # noqa: E731
    with BatchServer(row_fate=row_fate, error_text=refusal) as server:
        out = tmp_path / "run"
        seeds = write_seeds(tmp_path / "s.jsonl", SEEDS)
        result = evol(
            *run_args(server, seeds, out, "--generations", "1", "--batch", "--answer-check"),
            *("--batch-poll-interval", "0.05", "--retry-max-wait", "0.05", "--model", "fake-model"),
        )
        assert result.exit_code == 0, result.output
    assert evolutions(out, "eliminated.jsonl") == []
    assert len(evolutions(out, "dataset.jsonl")) == 2
    read = json.loads((out / "run.json").read_text())["judging"]["replies_read_as"]
    assert read == {"judge": {"prose": 2}, "answer_check": {"prose": 2 + 2}}  # seeds too


# -- the answer check across a kill -9 -----------------------------------------------------

ENV = {k: v for k, v in os.environ.items() if not k.startswith(("EVOL_", "OPENAI_"))}


@pytest.mark.slow
def test_a_kill_between_answer_and_check_pays_neither_the_answer_nor_the_judge_again(
    tmp_path: Path,
) -> None:
    rows = [{"instruction": "Explain why the sky is blue."}, {"instruction": "Sum it up. [asks]"}]
    seeds, out = write_seeds(tmp_path / "s.jsonl", rows), tmp_path / "run"
    command = [
        sys.executable, "-m", "evol", "run", str(seeds), "--out", str(out), "--quiet",
        "--generations", "1", "--concurrency", "2", "--answer-check", "--retry-max-wait", "0.05",
    ]  # fmt: skip
    # Both slots held by the evolutions' answer checks (the seeds' go through): nothing else
    # is in flight when the kill lands.
    hold = lambda body: (  # noqa: E731
        kind_of(body) == "answer_check" and "Also consider case" in first_user_turn(body)
    )
    with FakeServer(hold=hold) as server:
        process = subprocess.Popen([*command, "--base-url", server.base_url], env=ENV)
        try:
            server.wait_until(lambda: server.held == 2 or process.poll() is not None)
        finally:
            process.send_signal(signal.SIGKILL)
            process.wait()
        assert server.held == 2
        server.release()
    with FakeServer() as server:
        resumed = subprocess.run([*command, "--base-url", server.base_url], env=ENV)
        assert resumed.returncode == 0
        sent = Counter(kind_of(body) for body in server.requests)
        evolution_answers = [
            body
            for body in server.requests_for("answer")
            if first_user_turn(body) not in {row["instruction"] for row in rows}
        ]
    assert (sent["evolve"], sent["judge"], len(evolution_answers)) == (0, 0, 0)
    assert sent["answer_check"] == 2  # each check once, from the journal's answer
    gone = evolutions(out, "eliminated.jsonl")
    assert [(row["root_id"], row["reason"]) for row in gone] == [("s2", "asks_for_information")]
    assert [row["root_id"] for row in evolutions(out, "dataset.jsonl")] == ["s1"]
    read = json.loads((out / "run.json").read_text())["judging"]["replies_read_as"]
    assert read == {"judge": {"schema": 2}, "answer_check": {"schema": 2}}


# -- the answer check with the judge's other modes -----------------------------------------

THREE = [
    {"instruction": "Explain why the sky is blue."},
    {"instruction": "List three prime numbers. [chatty]"},
    {"instruction": "Summarise the water cycle. [asks]"},
]


@pytest.mark.parametrize(
    ("mode", "checks", "gone"),
    [
        ("--no-judge", 3, {"s3": "asks_for_information"}),
        ("--parallel-judge", 2, {"s2": "not_an_instruction", "s3": "asks_for_information"}),
        ("--seed=1", 2, {"s2": "not_an_instruction", "s3": "asks_for_information"}),
    ],
)
def test_the_answer_check_runs_once_per_answer_the_other_rules_let_through(
    evol: Evol, server: FakeServer, tmp_path: Path, mode: str, checks: int, gone: dict[str, str]
) -> None:
    seeds, out = write_seeds(tmp_path / "s.jsonl", THREE), tmp_path / "run"
    args = [*run_args(server, seeds, out, "--generations", "1", "--answer-check", mode)]
    plan = json.loads(evol(*args, "--dry-run", "--json").output)["roles"]
    result = evol(*args)
    assert result.exit_code == 0, result.output
    checked = server.requests_for("answer_check")
    assert len(checked) == 3 + checks <= plan["answer_check"]["calls"] == 6
    # Each seed's answer is checked once, and each evolution's answer the rules let through.
    evolved = [body for body in checked if "Also consider case" in first_user_turn(body)]
    assert len(evolved) == checks
    rows = evolutions(out, "eliminated.jsonl")
    assert {row["root_id"]: row["reason"] for row in rows} == gone


# -- the embedded model's grammar ----------------------------------------------------------


@pytest.mark.parametrize("schema", [VERDICT_SCHEMA, ANSWER_CHECK_SCHEMA])
def test_the_schemas_become_a_grammar_of_their_own_not_llama_cpps_fallback(
    schema: dict[str, Any],
) -> None:
    llama_grammar = pytest.importorskip("llama_cpp.llama_grammar")
    form = json_object_format(
        {"type": "json_schema", "json_schema": {"name": "n", "schema": schema}}
    )
    # llama-cpp-python falls back to any JSON, silently, when a schema does not convert.
    text = llama_grammar.json_schema_to_gbnf(json.dumps(form["schema"]))
    llama_grammar.LlamaGrammar.from_string(text, verbose=False)
    root = next(line for line in text.splitlines() if line.startswith("root ::="))
    assert root.index("reason-kv") < root.index(
        f"{list(schema['properties'])[-1]}-kv".replace("_", "-")
    )
    for field in schema["properties"].values():
        for choice in field.get("enum", []):
            assert f'"\\"{choice}\\""' in text


def test_a_reason_with_raw_control_characters_as_the_grammar_allows_is_read() -> None:
    # The grammar's strings take any character but a quote or backslash: a raw newline or tab.
    reply = '{"reason": "talks to\nthe user\t(offers help)", "second_is": "talks_to_user", '
    judgement = read_judgement(reply + '"verdict": "different"}')
    assert (judgement.form, judgement.second_is) == ("schema", "talks_to_user")
    assert judgement.reason == "talks to the user (offers help)"
    check = read_answer_check('{"reason": "wants\nthe table", "answer": "asks_for_information"}')
    assert (check.form, check.problem) == ("schema", "asks_for_information")


# -- the judge's words on a terminal -------------------------------------------------------


class EscapingJudge(Responder):
    """A judge whose reason clears the screen and retitles the terminal."""

    def judge(self, second: str, *, asked_again: bool = False, structured: bool = False) -> Any:
        reason = "\x1b[2J\x1b]0;pwned\x07 offers help \u202e"
        return json.dumps({"reason": reason, "second_is": "talks_to_user", "verdict": "different"})


def test_escape_sequences_in_the_judges_reason_reach_no_file_or_terminal_raw(
    evol: Evol, tmp_path: Path
) -> None:
    with FakeServer(responder=EscapingJudge()) as server:
        result, out = run(evol, server, tmp_path)
    assert result.exit_code == 0, result.output
    raw = (out / "eliminated.jsonl").read_text(encoding="utf-8")
    assert "offers help" in raw
    assert not any(mark in raw for mark in ("\x1b", "\x07", "\u202e", "\\u001b", "\\u0007"))
    shown = evol("show", out, "s1.1")
    assert "offers help" in shown.output and "\x1b" not in shown.output


# -- found by the third mutation round ---------------------------------------------------------


# -- structured output: only a refusal of the format steps down from it ---------------------------


def test_a_server_error_or_a_refusal_for_the_content_keeps_structured_output(
    evol, tmp_path: Path
) -> None:
    """A 500 on a structured request is retried, and a 400 that does not name the format
    fails that request alone: neither makes the endpoint's later requests go without
    json_schema (each step down costs a request, and loses the schema's checks)."""
    from tests.support.fake_server import kind_of

    faults = iter(
        [Fault("status", 500), Fault("status", 400, message="flagged by the content filter")]
    )

    def plan(body: dict[str, Any]) -> Fault | None:
        return next(faults, None) if "response_format" in body else None

    seeds = write_seeds(
        tmp_path / "seeds.jsonl",
        [{"instruction": f"Explain idea {i} of gardening"} for i in range(3)],
    )
    with FakeServer(faults=plan) as server:
        result = evol(
            *run_args(server, seeds, tmp_path / "run", "--generations", "2", "--concurrency", "1"),
            "--max-retries", "2", "--retry-max-wait", "0.01",
        )  # fmt: skip
        judged = [body for body in server.requests if kind_of(body) == "judge"]
    assert result.exit_code in (0, 1), result.output
    assert len(judged) >= 6
    formats = [(body.get("response_format") or {}).get("type") for body in judged]
    assert formats == ["json_schema"] * len(judged), formats
