"""The judge model in a schema (#24): the verdict and what the rewrite is in one call, the
answer check by meaning, and prose for servers that refuse or ignore the schema."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from evol.config import RunConfig
from evol.llm.openai_api import json_object_format
from evol.llm.openai_compatible import OpenAICompatibleBackend
from evol.llm.protocol import BackendSettings, Capabilities
from evol.method.elimination import EliminationRules, Reason
from evol.method.judging import (
    ANSWER_CHECK_SCHEMA,
    ANSWER_PROBLEMS,
    REASON_MAX_CHARS,
    REWRITE_PROBLEMS,
    VERDICT_SCHEMA,
    read_answer_check,
    read_judgement,
)
from evol.method.verdicts import Verdict, parse_verdict
from evol.preflight import with_instruction_check as _with_instruction_check
from tests.support.backends import registered_backend
from tests.support.fake_server import FakeServer, Responder
from tests.support.runs import Evol, read_jsonl, run_args, write_seeds

# -- reading the replies ---------------------------------------------------------------------


def verdict_object(verdict: str = "different", second_is: str = "instruction", **more: str) -> str:
    return json.dumps({"verdict": verdict, "second_is": second_is, "reason": "r"} | more)


@pytest.mark.parametrize(
    ("reply", "verdict", "second_is"),
    [
        (verdict_object(), Verdict.DIFFERENT, "instruction"),
        (verdict_object("equal"), Verdict.EQUAL, "instruction"),
        (verdict_object("EQUAL ", " Talks_To_User"), Verdict.EQUAL, "talks_to_user"),
        ("```json\n" + verdict_object(second_is="answer") + "\n```", Verdict.DIFFERENT, "answer"),
        (
            "Here it is: " + verdict_object(second_is="missing_part"),
            Verdict.DIFFERENT,
            "missing_part",
        ),
    ],
)
def test_a_verdict_in_the_schema_is_read_as_the_schema_says(
    reply: str, verdict: Verdict, second_is: str
) -> None:
    judgement = read_judgement(reply)
    assert (judgement.verdict, judgement.second_is, judgement.form) == (
        verdict,
        second_is,
        "schema",
    )


@pytest.mark.parametrize(
    "reply",
    [
        "Not Equal",
        "They are not the same: the second adds a limit, so the two cannot be called equal.",
        '{"verdict": "different", "second_is": "instruc',  # cut at the token limit
        '{"verdict": "maybe", "second_is": "instruction", "reason": ""}',  # off the schema
        '{"verdict": "equal"}',  # no second_is: read as prose
        "{not json} Equal",
    ],
)
def test_a_reply_off_the_schema_is_read_as_prose(reply: str) -> None:
    judgement = read_judgement(reply)
    assert judgement.form == "prose" and judgement.second_is is None
    assert judgement.verdict == parse_verdict(reply)


@given(st.text(max_size=300))
@pytest.mark.slow
def test_any_reply_gives_a_judgement_and_prose_reads_as_before(reply: str) -> None:
    judgement = read_judgement(reply)
    if judgement.form == "prose":
        assert judgement.verdict == parse_verdict(reply) and judgement.second_is is None
    else:
        assert judgement.second_is in ("instruction", *REWRITE_PROBLEMS)


@given(
    st.sampled_from(["equal", "different"]),
    st.sampled_from(["instruction", *REWRITE_PROBLEMS]),
    st.text(max_size=2000),
    st.text(max_size=40),
)
def test_any_object_the_schema_allows_is_read_whole(
    verdict: str, second_is: str, reason: str, around: str
) -> None:
    reply = json.dumps({"verdict": verdict, "second_is": second_is, "reason": reason})
    judgement = read_judgement(reply)
    assert judgement.form == "schema" and judgement.verdict == verdict
    assert judgement.second_is == second_is
    assert len(judgement.reason) <= REASON_MAX_CHARS and "\n" not in judgement.reason


def test_only_an_instruction_that_is_different_passes() -> None:
    assert read_judgement(verdict_object()).failure("x") is None
    equal = read_judgement(verdict_object("equal", "talks_to_user")).failure("x")
    assert equal is not None and equal.reason == Reason.NO_INFORMATION_GAIN
    for problem, words in REWRITE_PROBLEMS.items():
        failure = read_judgement(verdict_object(second_is=problem, reason="ends with (none)"))
        found = failure.failure("x")
        assert found is not None and found.reason == Reason.NOT_AN_INSTRUCTION
        assert words in found.detail and "ends with (none)" in found.detail


def test_an_answer_check_is_read_from_the_schema_or_from_the_one_choice_it_names() -> None:
    for choice, reason in ANSWER_PROBLEMS.items():
        check = read_answer_check(json.dumps({"answer": choice, "reason": "wants the data"}))
        failure = check.failure()
        assert check.form == "schema" and failure is not None and failure.reason == reason
        what = choice.replace("_", " ")
        assert failure.detail == f"the answer check says it {what}: 'wants the data'"
        # The record's detail quotes the judge only where it gave a reason.
        unsaid = read_answer_check(json.dumps({"answer": choice, "reason": ""})).failure()
        assert unsaid is not None and unsaid.detail == f"the answer check says it {what}"
        prose = read_answer_check(f"I would say: {what}.")
        assert prose.form == "prose" and prose.problem == choice
        found = prose.failure()
        assert found is not None and found.detail == f"the answer check says it {what}"
    passed = read_answer_check('{"answer": "does_the_task", "reason": ""}')
    assert passed.failure() is None and passed.form == "schema"
    assert read_answer_check("does the task").failure() is None


@pytest.mark.parametrize(
    "reply",
    ["", "It is fine, I think.", "asks_for_information or does_the_task?", '{"answer": "yes"}'],
)
def test_an_answer_check_that_names_no_one_choice_eliminates_nothing(reply: str) -> None:
    check = read_answer_check(reply)
    assert check.form == "unread" and check.failure() is None


@given(st.text(max_size=300))
def test_any_answer_check_reply_is_read_without_error(reply: str) -> None:
    check = read_answer_check(reply)
    assert check.problem is None or check.problem in ANSWER_PROBLEMS


def test_the_schemas_are_closed_choices_with_every_field_required() -> None:
    for schema in (VERDICT_SCHEMA, ANSWER_CHECK_SCHEMA):
        assert schema["additionalProperties"] is False
        assert set(schema["required"]) == set(schema["properties"])
    assert VERDICT_SCHEMA["properties"]["verdict"]["enum"] == ["equal", "different"]
    assert set(VERDICT_SCHEMA["properties"]["second_is"]["enum"]) == {
        "instruction",
        *REWRITE_PROBLEMS,
    }
    assert set(ANSWER_CHECK_SCHEMA["properties"]["answer"]["enum"]) == {
        "does_the_task",
        *ANSWER_PROBLEMS,
    }


def test_the_embedded_model_gets_the_schema_as_llama_cpp_spells_it() -> None:
    form = {"type": "json_schema", "json_schema": {"name": "v", "schema": VERDICT_SCHEMA}}
    assert json_object_format(form) == {"type": "json_object", "schema": VERDICT_SCHEMA}


# -- a run against a server ------------------------------------------------------------------

SEEDS = [
    {"instruction": "Explain why the sky is blue."},
    {"instruction": "List three prime numbers. [chatty]"},
    {"instruction": "Summarise the water cycle. [asks]"},
]


def run(evol: Evol, servers: FakeServer | list[FakeServer], tmp_path: Path, *extra: object):
    tmp_path.mkdir(exist_ok=True)
    seeds = write_seeds(tmp_path / "seeds.jsonl", SEEDS)
    out = tmp_path / "run"
    result = evol(*run_args(servers, seeds, out, "--generations", "1", *extra))
    manifest = json.loads((out / "run.json").read_text())
    return result, out, manifest


def eliminated(out: Path) -> dict[str, dict]:
    return {
        row["root_id"]: row for row in read_jsonl(out / "eliminated.jsonl") if row["generation"]
    }


def test_the_judge_is_asked_in_a_schema_and_a_rewrite_that_is_no_instruction_fails(
    evol: Evol, server: FakeServer, tmp_path: Path
) -> None:
    result, out, manifest = run(evol, server, tmp_path)
    assert result.exit_code == 0, result.output
    judged = server.requests_for("judge")
    assert len(judged) == 3
    # OpenAI's Structured Outputs: a named schema, enforced only with "strict": true.
    strict_schema = {"name": "verdict", "strict": True, "schema": VERDICT_SCHEMA}
    assert all(
        body["response_format"] == {"type": "json_schema", "json_schema": strict_schema}
        for body in judged
    )
    assert not any("response_format" in body for body in server.requests_for("evolve"))
    assert not any("response_format" in body for body in server.requests_for("answer"))
    gone = eliminated(out)
    assert set(gone) == {"s2"}
    assert gone["s2"]["reason"] == "not_an_instruction"
    assert "talks to the user" in gone["s2"]["detail"] and "as marked" in gone["s2"]["detail"]
    # No answer is paid for a rewrite the judge turned down; nothing checks answers by default.
    assert len(server.requests_for("answer")) == 3 + 2
    assert server.requests_for("answer_check") == []
    assert manifest["judging"] == {
        "answer_check": False,
        "replies_read_as": {"judge": {"schema": 3}},
    }


NO_FORMATS = ("json_schema", "json_object")


def formats_sent(bodies: list[dict]) -> list[str | None]:
    return [(body.get("response_format") or {}).get("type") for body in bodies]


def test_a_server_that_refuses_the_schema_is_asked_in_prose_after_one_refusal_a_step(
    evol: Evol, tmp_path: Path
) -> None:
    with FakeServer(refuse_formats=NO_FORMATS) as server:
        result, out, manifest = run(evol, server, tmp_path, "--concurrency", "1", "--answer-check")
    assert result.exit_code == 0, result.output
    # json_schema refused, json_object with the schema refused, then prose for good: 3 verdicts,
    # and 6 answer checks (the 3 seeds' answers and the 3 evolutions').
    for role, calls in (("judge", 3), ("answer_check", 6)):
        sent = formats_sent(server.requests_for(role))
        assert sent == ["json_schema", "json_object"] + [None] * calls, role
    # Read as prose: the verdicts stand, the marked rewrite's problem is not seen, and the
    # answer check reads the choice its prose names.
    assert manifest["judging"]["replies_read_as"] == {
        "answer_check": {"prose": 6},
        "judge": {"prose": 3},
    }
    gone = eliminated(out)
    assert set(gone) == {"s3"} and gone["s3"]["reason"] == "asks_for_information"
    # The seed's own answer and its evolution's.
    assert manifest["summary"]["eliminated_per_reason"] == {"asks_for_information": 2}
    assert manifest["summary"]["failed"] == [] and manifest["summary"]["retries"] == 0


def test_a_server_that_takes_only_json_object_gets_the_schema_that_way(
    evol: Evol, tmp_path: Path
) -> None:
    """llama-cpp-python's server answers 500 to a json_schema format, naming the field, and
    takes `{"type": "json_object", "schema": ...}`."""
    with FakeServer(refuse_formats=("json_schema",), refuse_status=500) as server:
        result, out, manifest = run(evol, server, tmp_path, "--concurrency", "1")
    assert result.exit_code == 0, result.output
    judged = server.requests_for("judge")
    assert formats_sent(judged) == ["json_schema", "json_object", "json_object", "json_object"]
    assert judged[-1]["response_format"]["schema"] == VERDICT_SCHEMA
    assert manifest["judging"]["replies_read_as"] == {"judge": {"schema": 3}}
    assert eliminated(out)["s2"]["reason"] == "not_an_instruction"
    assert manifest["summary"]["retries"] == 0


def test_each_endpoint_falls_back_on_its_own(evol: Evol, tmp_path: Path) -> None:
    with FakeServer(refuse_formats=NO_FORMATS) as old, FakeServer() as new:
        seeds = write_seeds(
            tmp_path / "seeds.jsonl",
            [{"instruction": f"Name a colour, case {n}."} for n in range(12)],
        )
        out = tmp_path / "run"
        result = evol(*run_args([old, new], seeds, out, "--generations", "2", "--concurrency", "1"))
    assert result.exit_code == 0, result.output
    old_judged, new_judged = old.requests_for("judge"), new.requests_for("judge")
    assert old_judged and new_judged  # the router sent judge requests to both
    # The old server refused the schema twice and was asked in prose from then on; the new
    # one was asked in the schema every time.
    sent = formats_sent(old_judged)
    assert sent == ["json_schema", "json_object"] + [None] * (len(sent) - 2)
    assert set(formats_sent(new_judged)) == {"json_schema"}
    read = json.loads((out / "run.json").read_text())["judging"]["replies_read_as"]
    assert read["judge"] == {"prose": len(old_judged) - 2, "schema": len(new_judged)}


def test_the_answer_check_runs_when_a_judge_model_is_named_and_not_with_no_answer_check(
    evol: Evol, server: FakeServer, tmp_path: Path
) -> None:
    result, out, manifest = run(evol, server, tmp_path / "a", "--judge-model", "fake-model")
    assert result.exit_code == 0, result.output
    checks = server.requests_for("answer_check")
    assert len(checks) == 3 + 2  # the seeds' answers, and the evolutions the judge let through
    assert all(body["response_format"]["json_schema"]["name"] == "answer_check" for body in checks)
    gone = eliminated(out)
    assert gone["s3"]["reason"] == "asks_for_information"
    assert gone["s3"]["detail"].startswith("the answer check says it asks for information")
    assert manifest["judging"]["answer_check"] is True
    kept = read_jsonl(out / "gen_1.jsonl")
    assert [row["root_id"] for row in kept] == ["s1"]
    assert set(kept[0]["usage"]) == {"evolve", "answer", "judge", "answer_check"}
    # Each check shows the judge model the answer it checks, whole.
    shown = [body["messages"][0]["content"] for body in checks]
    for row in [*read_jsonl(out / "gen_0.jsonl"), *kept]:
        assert any(row["output"] in text for text in shown), row["id"]

    server.requests.clear()
    result, _, manifest = run(
        evol, server, tmp_path / "b", "--judge-model", "fake-model", "--no-answer-check"
    )
    assert result.exit_code == 0 and server.requests_for("answer_check") == []
    assert manifest["judging"]["answer_check"] is False


def test_a_dry_run_and_stats_show_the_answer_checks_calls(
    evol: Evol, server: FakeServer, tmp_path: Path
) -> None:
    seeds = write_seeds(tmp_path / "seeds.jsonl", SEEDS)
    out = tmp_path / "run"
    plan = evol(
        *run_args(server, seeds, out, "--generations", "2", "--answer-check"), "--dry-run", "--json"
    )
    roles = json.loads(plan.output)["roles"]
    # The 3 seeds' answers and 3 x 2 evolutions' answers, at most.
    assert roles["answer_check"]["calls"] == 9 and roles["answer_check"]["completion_tokens"] > 0
    off = evol(*run_args(server, seeds, out, "--generations", "2"), "--dry-run", "--json")
    assert "answer_check" not in json.loads(off.output)["roles"]
    assert (
        evol(*run_args(server, seeds, out, "--generations", "1", "--answer-check")).exit_code == 0
    )
    stats = evol("stats", out, "--json", "--price-in", "1", "--price-out", "2")
    check = json.loads(stats.output)["roles"]["answer_check"]
    # Priced as calls to the judge model, from the tokens the two checks used.
    assert check["model"] == "fake-model" and check["prompt_tokens"] > 0
    assert check["cost_usd"] == pytest.approx(
        (check["prompt_tokens"] * 1 + check["completion_tokens"] * 2) / 1e6
    )


def test_no_instruction_check_keeps_what_the_judge_calls_no_instruction(
    evol: Evol, server: FakeServer, tmp_path: Path
) -> None:
    result, out, manifest = run(evol, server, tmp_path, "--no-instruction-check")
    assert result.exit_code == 0, result.output
    assert eliminated(out) == {}
    assert manifest["config"]["rules"]["instruction_check"] is False
    assert manifest["fingerprint"]["elimination_rules"]["instruction_check"] is False


class InProcessPlugin:
    """A plugin whose model runs in this process, as far as evol can tell."""

    capabilities = Capabilities(in_process=True)


@pytest.mark.parametrize(
    ("backend", "model_path", "asked", "checks"),
    [
        ("openai", None, None, True),
        ("local", None, None, False),  # SmolLM2-135M calls every rewrite no instruction
        ("local", Path("big.gguf"), None, True),
        ("local", None, True, True),
        ("openai", None, False, False),
        ("in-process", None, None, True),  # a plugin's model in this process is no SmolLM2
    ],
)
def test_the_instruction_check_is_on_but_for_the_embedded_default_model(
    tmp_path: Path, backend: str, model_path: Path | None, asked: bool | None, checks: bool
) -> None:
    config = RunConfig(
        seeds=tmp_path / "s.jsonl",
        out=tmp_path / "o",
        model_path=model_path,
        rules=EliminationRules(instruction_check=asked),
    )
    with registered_backend("in-process", InProcessPlugin):
        assert _with_instruction_check(config, backend).rules.instruction_check is checks


def test_a_plugin_in_process_keeps_the_instruction_check_on_for_the_model_it_is_given(
    evol: Evol, tmp_path: Path
) -> None:
    """Only the local backend's embedded model turns the check off, never the in-process
    capability: a plugin run with --model llama-70b still eliminates what is no instruction."""

    class InProcessServer(OpenAICompatibleBackend):
        """In process as far as evol can tell (it gets no URL); it calls the fake server."""

        capabilities = Capabilities(in_process=True)

        def __init__(self, settings: BackendSettings):
            super().__init__(settings.model_copy(update={"base_urls": [server.base_url]}))

    with (
        FakeServer(models=("llama-70b",)) as server,
        registered_backend("in-process", InProcessServer),
    ):
        result, out, manifest = run(
            evol, server, tmp_path, "--backend", "in-process", "--model", "llama-70b"
        )
    assert result.exit_code == 0, result.output
    assert manifest["config"]["rules"]["instruction_check"] is True
    assert manifest["fingerprint"]["elimination_rules"]["instruction_check"] is True
    assert eliminated(out)["s2"]["reason"] == "not_an_instruction"


def test_run_json_counts_the_replies_of_every_run_of_the_directory(
    evol: Evol, server: FakeServer, tmp_path: Path
) -> None:
    seeds = write_seeds(tmp_path / "seeds.jsonl", SEEDS[:1])
    out = tmp_path / "run"
    for generations in ("1", "2", "3"):
        assert evol(*run_args(server, seeds, out, "--generations", generations)).exit_code == 0
    read = json.loads((out / "run.json").read_text())["judging"]["replies_read_as"]
    assert read == {"judge": {"schema": 3}} and len(server.requests_for("judge")) == 3


# -- an answer check cut at the token limit (found by mutation testing) ------------------------


# -- the answer check: a reply cut at the token limit decides nothing ----------------------------


class CutAnswerChecks(Responder):
    """Every answer check's reply names a problem in prose, then is cut at the token limit."""

    def check_answer(self, task: str, structured: bool) -> str | tuple[str, str]:
        return "My choice: asks_for_information, since the answer", "length"


def test_an_answer_check_cut_at_the_token_limit_eliminates_nothing(evol, tmp_path: Path) -> None:
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text(
        "".join(json.dumps({"instruction": f"Explain idea {i}"}) + "\n" for i in range(2))
    )
    with FakeServer(responder=CutAnswerChecks()) as server:
        result = evol(
            *run_args(server, seeds, tmp_path / "run", "--generations", "1", "--answer-check")
        )
        checks = len(server.requests_for("answer_check"))
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "run" / "eliminated.jsonl").exists()
    manifest = json.loads((tmp_path / "run" / "run.json").read_text())
    assert checks >= 4 and manifest["judging"]["replies_read_as"]["answer_check"] == {
        "unread": checks
    }


def test_the_judges_word_on_requirements_counts_only_where_it_was_asked() -> None:
    reply = '{"reason": "dropped", "second_is": "instruction", "states_requirements": "no", "verdict": "different"}'
    asked = read_judgement(reply, states_asked=True)
    assert asked.states is False
    failure = asked.failure(reply)
    assert failure and failure.reason == Reason.CONSTRAINT_LOST and "dropped" in failure.detail
    plain = read_judgement(reply)
    assert plain.states is None and plain.failure(reply) is None
    kept = read_judgement(reply.replace('"no"', '"YES"'), states_asked=True)
    assert kept.states is True and kept.failure(reply) is None
    silent = read_judgement(reply.replace(', "states_requirements": "no"', ""), states_asked=True)
    assert silent.states is None and silent.failure(reply) is None
    equal = read_judgement(reply.replace('"different"', '"equal"'), states_asked=True)
    assert equal.failure(reply).reason == Reason.NO_INFORMATION_GAIN  # the paper's rule first
