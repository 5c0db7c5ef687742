"""`evol run` end to end against the fake OpenAI-compatible server on 127.0.0.1."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

import evol
from tests.support.fake_server import FakeServer, Fault, Responder, kind_of, scripted
from tests.support.runs import assert_valid_run, read_jsonl, run_args, write_seeds

SEEDS = [
    {"instruction": "Explain {recursion} with #an example", "topic": "cs"},
    {"instruction": "Write a haiku about the sea", "input": "Use the word 'salt'."},
    {"instruction": "Compare TCP and UDP", "output": "TCP is reliable; UDP is not."},
    {"instruction": "Résumé des règles du jeu d'échecs 🚀"},
    {"instruction": "Give three uses of $PATH and ${HOME}"},
]


def args(server: FakeServer, seeds: Path, out: Path, *extra: object) -> list[object]:
    return run_args(server, seeds, out, "--retry-max-wait", "0.05", *extra)


def all_records(out: Path) -> list[dict]:
    return [r for path in sorted(out.glob("gen_*.jsonl")) for r in read_jsonl(path)]


def test_run_writes_every_file_with_consistent_lineage(evol, server, tmp_path: Path) -> None:
    seeds, out = write_seeds(tmp_path / "seeds.jsonl", SEEDS), tmp_path / "run"
    result = evol(*args(server, seeds, out, "--generations", "3", "--json"))
    assert result.exit_code == 0, result.stderr

    gen0 = read_jsonl(out / "gen_0.jsonl")
    assert {r["id"] for r in gen0} == {"s1", "s2", "s3", "s4", "s5"}
    assert all(r["output"] for r in gen0)
    by_id = {r["id"]: r for r in all_records(out)}
    assert (
        by_id["s1"]["metadata"] == {"topic": "cs"}
        and by_id["s3"]["output"] == "TCP is reliable; UDP is not."
    )
    # The seed's other fields stay on its own record; descendants reach them through root_id.
    assert all(r["metadata"] == {} for r in all_records(out) if r["generation"] > 0)
    for generation in (1, 2, 3):
        records = read_jsonl(out / f"gen_{generation}.jsonl")
        assert len(records) == 5  # the fake server's evolutions all pass
        for record in records:
            parent = by_id[record["parent_id"]]
            assert record["generation"] == parent["generation"] + 1 == generation
            assert record["root_id"] == parent["root_id"]
            assert record["operation"] in {
                "add_constraints",
                "deepen",
                "concretize",
                "increase_reasoning",
                "complicate_input",
                "breadth",
            }
            assert record["output"] and record["judge"] == "different"
            assert set(record["usage"]) == {"evolve", "answer", "judge"}

    dataset = read_jsonl(out / "dataset.jsonl")
    assert dataset == all_records(out)
    manifest = json.loads((out / "run.json").read_text())
    assert manifest["status"] == "complete"
    assert manifest["counts"]["kept_per_generation"] == {"0": 5, "1": 5, "2": 5, "3": 5}
    assert manifest["config"]["generations"] == 3 and manifest["versions"]["evol"]
    summary = json.loads(result.stdout)
    assert summary["kept"] == 20 and summary["eliminated"] == 0 and summary["failed"] == []
    # Seeds with an output are not answered again: 4 seed answers plus 15 evolution answers.
    assert summary["requests"] == {"answer": 19, "evolve": 15, "judge": 15}
    assert summary["usage"]["evolve"]["prompt_tokens"] > 0


RULE_SEEDS = [
    # id, seed, the reason its round-1 evolution is eliminated for, and a word of its detail
    ("leak", "[leak] Describe a cat", "prompt_leak", "given prompt"),
    ("same", "[same] Describe a dog", "unchanged", "word for word"),
    ("empty", "[empty] Describe a cow", "empty", "empty"),
    ("equal", "[equal] Describe a fox", "no_information_gain", "found it equal: 'as marked'"),
    ("sorry", "[sorry] Describe an owl", "sorry", "6 words"),
    ("stop", "[stop] Describe a bee", "stopwords_only", "stop words"),
    ("long", "[too-long] Describe a yak", "too_long", "context length"),
    ("cut", "[cut] Describe a ram", "truncated", "token limit"),
    ("cut-answer", "[cut-answer] Describe an elk", "truncated", "token limit"),
    ("unclear", "[unclear-twice] Describe a gnu", "judge_unclear", "hard to say"),
    ("understood", "[understood] Describe an emu", "not_a_task", "Understood"),
    ("sure", "[sure] Describe a koi", "underspecified", "Sure"),
    ("please", "[please] Describe an ant", "asks_for_information", "please provide"),
    ("echo", "[echo] Describe a hen's egg", "not_a_task", "repeats"),
    ("ok", "Describe a hen", None, None),
    ("asked-again", "[unclear] Describe a yak's calf", None, None),
    ("wrapped", "[wrapped] Describe a lark", None, None),
    ("think", "[think] Describe a wren", None, None),
]
# Markers whose answer rule also eliminates the seed's own answer.
BAD_SEED_ANSWERS = {"sorry", "stop", "cut-answer", "understood", "sure", "please", "echo"}


def test_each_elimination_rule_is_recorded_with_its_reason(evol, server, tmp_path: Path) -> None:
    rows = [{"id": key, "instruction": text} for key, text, _, _ in RULE_SEEDS]
    seeds, out = write_seeds(tmp_path / "seeds.jsonl", rows), tmp_path / "run"
    assert evol(*args(server, seeds, out, "--generations", "1")).exit_code == 0

    records = read_jsonl(out / "eliminated.jsonl")
    evolutions = {r["root_id"]: r for r in records if r["generation"] == 1}
    expected = {key: reason for key, _, reason, _ in RULE_SEEDS if reason}
    assert {root: r["reason"] for root, r in evolutions.items()} == expected
    for key, _, reason, word in RULE_SEEDS:
        if reason:
            assert word in evolutions[key]["detail"], (key, evolutions[key]["detail"])
    # A seed's answer that fails an answer rule is eliminated at generation 0 (and not kept).
    assert {r["id"] for r in records if r["generation"] == 0} == BAD_SEED_ANSWERS
    assert {r["id"] for r in read_jsonl(out / "gen_0.jsonl")} == {
        key for key, *_ in RULE_SEEDS
    } - BAD_SEED_ANSWERS
    kept = {r["root_id"]: r for r in read_jsonl(out / "gen_1.jsonl")}
    assert set(kept) == {"ok", "asked-again", "wrapped", "think"}
    assert all(r["judge"] == "different" for r in kept.values())
    # Wrappers are taken off before any rule reads the rewrite, and the detail says so.
    for key in ("wrapped", "think"):
        assert kept[key]["instruction"].startswith(f"[{key}] Describe a ")
        assert kept[key]["instruction"].endswith(".") and "<think>" not in kept[key]["instruction"]
    assert "preamble" in kept["wrapped"]["detail"] and "quotes" in kept["wrapped"]["detail"]
    assert "<think> block" in kept["think"]["detail"] and kept["ok"]["detail"] is None
    # A verdict asked for again costs a second judge call, counted in the record's usage.
    judged = [
        b for b in server.requests_for("judge") if "yak's calf" in b["messages"][0]["content"]
    ]
    assert [len(b["messages"]) for b in judged] == [1, 3]
    # The free checks, the leak rule and a cut rewrite cost no answer or judge call.
    free = {"leak", "same", "empty", "long", "cut"}
    assert all(set(evolutions[k]["usage"]) <= {"evolve"} for k in free)
    manifest = json.loads((out / "run.json").read_text())
    reasons = Counter(expected.values()) + Counter(
        {"sorry": 1, "stopwords_only": 1, "truncated": 1, "not_a_task": 2, "underspecified": 1,
         "asks_for_information": 1}
    )  # fmt: skip
    assert manifest["counts"]["eliminated_per_reason"] == dict(sorted(reasons.items()))
    assert_valid_run(out)


def test_a_failed_evolution_returns_its_parent_to_the_pool(evol, server, tmp_path: Path) -> None:
    rows = [
        {"id": "once", "instruction": "[leak-once] Name a river"},
        {"id": "never", "instruction": "[sorry] Name a lake"},
    ]
    seeds, out = write_seeds(tmp_path / "seeds.jsonl", rows), tmp_path / "run"
    assert evol(*args(server, seeds, out, "--generations", "3")).exit_code == 0

    eliminated = read_jsonl(out / "eliminated.jsonl")
    assert sorted((r["id"], r["parent_id"], r["reason"]) for r in eliminated) == [
        ("never", None, "sorry"),  # the seed's own answer: not kept, yet the seed evolves
        ("never.1", "never", "sorry"),
        ("never.2", "never", "sorry"),
        ("never.3", "never", "sorry"),
        ("once.1", "once", "prompt_leak"),
    ]
    kept = {r["id"]: r for r in all_records(out)}
    # Round 1 failed, so round 2 evolved the seed again: a generation-1 record from round 2.
    assert (kept["once.2"]["parent_id"], kept["once.2"]["generation"], kept["once.2"]["round"]) == (
        "once",
        1,
        2,
    )
    assert (kept["once.2.3"]["parent_id"], kept["once.2.3"]["generation"]) == ("once.2", 2)


def test_rules_can_be_switched_off(evol, server, tmp_path: Path) -> None:
    rows = [
        {"id": k, "instruction": t}
        for k, t in [
            ("eq", "[equal] A"),
            ("so", "[sorry] B"),
            ("st", "[stop] C"),
            ("le", "[leak] D"),
        ]
    ]
    seeds, out = write_seeds(tmp_path / "seeds.jsonl", rows), tmp_path / "run"
    flags = ["--no-judge", "--no-sorry-check", "--no-stopword-check", "--no-leak-check"]
    assert evol(*args(server, seeds, out, "--generations", "1", *flags)).exit_code == 0
    assert not (out / "eliminated.jsonl").exists()
    assert len(read_jsonl(out / "gen_1.jsonl")) == 4
    assert server.requests_for("judge") == []


def test_same_seed_chooses_the_same_operations(evol, server, tmp_path: Path) -> None:
    rows = [{"instruction": f"Task number {i}"} for i in range(12)]
    seeds = write_seeds(tmp_path / "seeds.jsonl", rows)

    def operations(out: Path, seed: int) -> dict[str, str]:
        assert evol(*args(server, seeds, out, "--generations", "2", "--seed", seed)).exit_code == 0
        return {r["id"]: r["operation"] for r in all_records(out) if r["operation"]}

    first, again, other = (
        operations(tmp_path / "a", 5),
        operations(tmp_path / "b", 5),
        operations(tmp_path / "c", 6),
    )
    assert first == again and len(first) == 24
    assert first != other


def test_operation_weights_pick_a_subset(evol, server, tmp_path: Path) -> None:
    seeds, out = write_seeds(tmp_path / "seeds.jsonl", SEEDS), tmp_path / "run"
    assert (
        evol(
            *args(
                server, seeds, out, "--generations", "2", "--operations", "concretize=1,breadth=0"
            )
        ).exit_code
        == 0
    )
    assert {r["operation"] for r in all_records(out) if r["operation"]} == {"concretize"}
    assert all(
        "more specific" in r["messages"][0]["content"] for r in server.requests_for("evolve")
    )


def test_input_is_shown_to_the_evolver_and_carried_along(evol, server, tmp_path: Path) -> None:
    rows = [{"id": "a", "instruction": "Summarize the text", "input": "Cats sleep a lot."}]
    seeds, out = write_seeds(tmp_path / "seeds.jsonl", rows), tmp_path / "run"
    assert (
        evol(*args(server, seeds, out, "--generations", "2", "--operations", "deepen")).exit_code
        == 0
    )
    assert all(
        "<input>\nCats sleep a lot.\n</input>" in r["messages"][0]["content"]
        for r in server.requests_for("evolve")
    )
    assert [r["input"] for r in all_records(out)] == ["Cats sleep a lot."] * 3
    answered = [r["messages"][0]["content"] for r in server.requests_for("answer")]
    assert all(text.endswith("\n\nCats sleep a lot.") for text in answered)


def test_breadth_writes_a_new_instruction_without_the_old_input(
    evol, server, tmp_path: Path
) -> None:
    rows = [{"id": "a", "instruction": "Summarize the text", "input": "Cats sleep a lot."}]
    seeds, out = write_seeds(tmp_path / "seeds.jsonl", rows), tmp_path / "run"
    assert (
        evol(*args(server, seeds, out, "--generations", "1", "--operations", "breadth")).exit_code
        == 0
    )
    (child,) = read_jsonl(out / "gen_1.jsonl")
    assert child["operation"] == "breadth" and child["input"] == ""


def test_seed_answers_can_be_skipped(evol, server, tmp_path: Path) -> None:
    seeds, out = write_seeds(tmp_path / "seeds.jsonl", SEEDS), tmp_path / "run"
    assert evol(*args(server, seeds, out, "--generations", "0", "--no-answer-seeds")).exit_code == 0
    outputs = [r["output"] for r in read_jsonl(out / "gen_0.jsonl")]
    assert outputs.count(None) == 4 and "TCP is reliable; UDP is not." in outputs
    assert server.requests == []


def test_rerunning_a_finished_run_makes_no_calls(evol, server, tmp_path: Path) -> None:
    seeds, out = write_seeds(tmp_path / "seeds.jsonl", SEEDS), tmp_path / "run"
    assert evol(*args(server, seeds, out, "--generations", "2")).exit_code == 0
    before = (out / "dataset.jsonl").read_text()
    calls = len(server.requests)
    assert evol(*args(server, seeds, out, "--generations", "2")).exit_code == 0
    assert len(server.requests) == calls
    assert (out / "dataset.jsonl").read_text() == before


def test_more_generations_extend_a_run(evol, server, tmp_path: Path) -> None:
    seeds = write_seeds(tmp_path / "seeds.jsonl", SEEDS)
    assert evol(*args(server, seeds, tmp_path / "a", "--generations", "1")).exit_code == 0
    assert evol(*args(server, seeds, tmp_path / "a", "--generations", "3")).exit_code == 0
    assert evol(*args(server, seeds, tmp_path / "b", "--generations", "3")).exit_code == 0
    strip = lambda rs: sorted(json.dumps(r, sort_keys=True) for r in rs)  # noqa: E731
    assert strip(read_jsonl(tmp_path / "a" / "dataset.jsonl")) == strip(
        read_jsonl(tmp_path / "b" / "dataset.jsonl")
    )


def test_other_options_on_an_existing_run_are_refused(evol, server, tmp_path: Path) -> None:
    seeds, out = write_seeds(tmp_path / "seeds.jsonl", SEEDS), tmp_path / "run"
    assert evol(*args(server, seeds, out, "--generations", "2")).exit_code == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    result = evol(
        *args(server, seeds, out, "--generations", "1", "--seed", "9", "--operations", "deepen")
    )
    assert result.exit_code == 2
    message = result.stderr.strip()
    assert "\n" not in message and "Traceback" not in message
    assert all(name in message for name in ("--seed", "--operations", "--generations"))
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before

    fresh = evol(*args(server, seeds, out, "--generations", "1", "--seed", "9", "--overwrite"))
    assert fresh.exit_code == 0, fresh.stderr
    assert not (out / "gen_2.jsonl").exists()
    assert json.loads((out / "run.json").read_text())["config"]["seed"] == 9


def test_a_bad_seed_file_stops_with_one_line_and_touches_nothing(
    evol, server, tmp_path: Path
) -> None:
    seeds, out = write_seeds(tmp_path / "seeds.jsonl", SEEDS), tmp_path / "run"
    assert evol(*args(server, seeds, out, "--generations", "1")).exit_code == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with seeds.open("a") as fp:
        fp.write('{"instruction": "fine"}\n{"instruction": oops}\n')
    result = evol(*args(server, seeds, out, "--generations", "1"))
    assert result.exit_code == 2
    assert (
        result.stderr.strip()
        == f"evol: error: {seeds}:7: invalid JSON: Expecting value (column 17)"
    )
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before

    skipped = evol(
        *args(server, seeds, tmp_path / "skip", "--generations", "1", "--skip-invalid", "--json")
    )
    assert skipped.exit_code == 0
    assert json.loads(skipped.stdout)["skipped_seeds"] == 1


def test_an_output_path_that_is_a_file_is_refused(evol, server, tmp_path: Path) -> None:
    seeds, out = write_seeds(tmp_path / "seeds.jsonl", SEEDS), tmp_path / "run"
    out.write_text("precious")
    result = evol(*args(server, seeds, out))
    assert result.exit_code == 2 and "is a file" in result.stderr
    assert out.read_text() == "precious"


def test_transient_failures_are_retried(evol, tmp_path: Path) -> None:
    faults = scripted(
        Fault("status", 429, retry_after=0.01),
        Fault("status", 500),
        Fault("malformed"),
        Fault("drop"),
        Fault("status", 503),
    )
    seeds = write_seeds(tmp_path / "seeds.jsonl", SEEDS)
    with FakeServer(faults=faults) as server:
        result = evol(*args(server, seeds, tmp_path / "run", "--generations", "1", "--json"))
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["retries"] == 5 and summary["failed"] == []
    assert sum(summary["kept_per_generation"].values()) == 10
    manifest = json.loads((tmp_path / "run" / "run.json").read_text())
    assert sum(manifest["retries"].values()) == 5


def test_a_request_that_hangs_is_abandoned_after_timeout_and_retried(evol, tmp_path: Path) -> None:
    seeds = write_seeds(tmp_path / "seeds.jsonl", SEEDS[:2])
    with FakeServer(faults=scripted(Fault("hang")), hang_seconds=5) as server:
        result = evol(
            *args(server, seeds, tmp_path / "run", "--generations", "0", "--timeout", "1", "--json")
        )
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    # At least the hung request was retried; a busy machine may time out another one too.
    assert summary["retries"] >= 1 and summary["failed"] == []
    assert server.faults_sent["hang"] == 1 and summary["kept_per_generation"] == {"0": 2}


def test_steps_that_keep_failing_end_the_run_with_1_and_a_resume_finishes(
    evol, tmp_path: Path
) -> None:
    seeds, out = write_seeds(tmp_path / "seeds.jsonl", SEEDS), tmp_path / "run"
    with FakeServer(faults=lambda body: Fault("status", 500)) as server:
        result = evol(*args(server, seeds, out, "--generations", "2", "--max-retries", "2"))
        assert result.exit_code == 1
        assert len(server.requests) == 3 * 9  # 4 seed answers + 5 evolutions, 3 attempts each
    manifest = json.loads((out / "run.json").read_text())
    assert manifest["status"] == "failed"
    assert len(manifest["summary"]["failed"]) == 9
    assert "answered 500" in manifest["summary"]["failed"][0]["error"]

    with FakeServer() as healthy:
        resumed = evol(*args(healthy, seeds, out, "--generations", "2", "--json"))
    assert resumed.exit_code == 0
    assert json.loads(resumed.stdout)["kept_per_generation"] == {"0": 5, "1": 5, "2": 5}


def test_authentication_failure_stops_at_once_without_the_key(evol, tmp_path: Path) -> None:
    seeds = write_seeds(tmp_path / "seeds.jsonl", [{"instruction": f"Task {i}"} for i in range(40)])
    secret = "sk-test-WRONG-0123456789"
    with FakeServer(api_key="sk-right") as server:
        result = evol(
            *args(
                server,
                seeds,
                tmp_path / "run",
                "--model",
                "fake-model",
                "--concurrency",
                "4",
                "--api-key",
                secret,
            )
        )
        assert len(server.requests) <= 4
    assert result.exit_code == 2
    assert (
        result.stderr.strip()
        == f"evol: error: authentication failed for {server.base_url}: check --api-key"
    )
    with FakeServer(api_key="sk-right") as server:
        from_env = evol(*args(server, seeds, tmp_path / "run2"), env={"OPENAI_API_KEY": secret})
    assert from_env.exit_code == 2 and "check OPENAI_API_KEY" in from_env.stderr
    assert secret not in result.output + from_env.output


def test_an_unknown_model_is_one_line_and_exit_2(evol, server, tmp_path: Path) -> None:
    seeds = write_seeds(tmp_path / "seeds.jsonl", SEEDS)
    result = evol(*args(server, seeds, tmp_path / "run", "--model", "gpt-nope"))
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "no model 'gpt-nope'" in lines[0]


def test_models_per_role_and_the_servers_default(evol, tmp_path: Path) -> None:
    seeds = write_seeds(tmp_path / "seeds.jsonl", SEEDS[:2])
    with FakeServer(models=("big", "small")) as server:
        ambiguous = evol(*args(server, seeds, tmp_path / "a"))
        assert (
            ambiguous.exit_code == 2
            and "name a model with --model: it serves big, small" in ambiguous.stderr
        )
        roles = ["--model", "small", "--evolve-model", "big"]
        assert (
            evol(*args(server, seeds, tmp_path / "b", "--generations", "1", *roles)).exit_code == 0
        )
        assert {r["model"] for r in server.requests_for("evolve")} == {"big"}
        assert {
            r["model"] for r in server.requests_for("answer") + server.requests_for("judge")
        } == {"small"}
    with FakeServer(models=("only-one",)) as server:
        assert evol(*args(server, seeds, tmp_path / "c", "--generations", "1")).exit_code == 0
        assert {r["model"] for r in server.requests} == {"only-one"}
    assert (
        json.loads((tmp_path / "c" / "run.json").read_text())["backend"]["models"]["judge"]
        == "only-one"
    )


@pytest.mark.parametrize("limit", [1, 6])
@pytest.mark.slow
def test_concurrency_bounds_the_requests_in_flight(tmp_path: Path, limit: int) -> None:
    seeds = write_seeds(tmp_path / "seeds.jsonl", [{"instruction": f"Task {i}"} for i in range(30)])
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EVOL_", "OPENAI_"))}
    # Every request is held until `limit` are: the client fills its limit, and the server sees
    # no more than that in flight at any moment of the run.
    with FakeServer(hold=lambda _body: True) as server:
        options = ("--generations", "2", "--concurrency", limit)
        command = [
            sys.executable,
            "-m",
            "evol",
            *map(str, args(server, seeds, tmp_path / "run", *options)),
        ]
        process = subprocess.Popen(command, env=env)
        server.wait_until(lambda: server.held == limit)
        server.release()
        assert process.wait(600) == 0  # a hang guard, never a pace
    assert server.peak_in_flight == limit
    assert len(server.requests) == 30 * 7


def test_generation_options_per_role_are_sent_only_when_set(evol, server, tmp_path: Path) -> None:
    seeds = write_seeds(tmp_path / "seeds.jsonl", SEEDS[:1])

    def sent(run: str, *options: object) -> dict[str, set[tuple]]:
        server.requests.clear()
        assert (
            evol(*args(server, seeds, tmp_path / run, "--generations", "1", *options)).exit_code
            == 0
        )
        keys = ("temperature", "max_tokens", "top_p")
        return {
            kind: {tuple(body.get(key) for key in keys) for body in server.requests_for(kind)}
            for kind in ("evolve", "answer", "judge")
        }

    # The provider's defaults for evolve and answer; the judge's own (temperature 0, 100 tokens).
    assert sent("a") == {
        "evolve": {(None, None, None)},
        "answer": {(None, None, None)},
        "judge": {(0.0, 100, None)},
    }
    assert sent("b", "--temperature", "0.3", "--max-tokens", "64") == {
        "evolve": {(0.3, 64, None)},
        "answer": {(0.3, 64, None)},
        "judge": {(0.0, 100, None)},
    }
    assert sent(
        "c", "--temperature", "0.3", "--evolve-temperature", "1.1", "--answer-max-tokens", "500",
        "--judge-temperature", "0.2", "--judge-max-tokens", "8",
    ) == {
        "evolve": {(1.1, None, None)},
        "answer": {(0.3, 500, None)},
        "judge": {(0.2, 8, None)},
    }  # fmt: skip
    manifest = json.loads((tmp_path / "c" / "run.json").read_text())
    assert manifest["config"]["params"]["answer"] == {
        "temperature": 0.3, "top_p": None, "max_tokens": 500, "logprobs": None, "top_logprobs": None,
    }  # fmt: skip
    plan = evol(*args(server, seeds, tmp_path / "c", "--generations", "2", "--dry-run",
                      "--temperature", "0.3", "--evolve-temperature", "1.1", "--answer-max-tokens",
                      "500", "--judge-temperature", "0.2", "--judge-max-tokens", "8"))  # fmt: skip
    assert "temperature 1.1" in plan.stdout and "max_tokens 500" in plan.stdout
    assert "temperature 0.2, max_tokens 8" in plan.stdout


def test_every_option_reads_its_environment_variable(evol, server, tmp_path: Path) -> None:
    seeds = write_seeds(tmp_path / "seeds.jsonl", SEEDS)
    env = {
        "OPENAI_BASE_URL": server.base_url,
        "EVOL_OUT": str(tmp_path / "run"),
        "EVOL_GENERATIONS": "1",
        "EVOL_OPERATIONS": "deepen",
        "EVOL_JUDGE": "false",
        "EVOL_QUIET": "1",
    }
    assert evol("run", seeds, env=env).exit_code == 0
    manifest = json.loads((tmp_path / "run" / "run.json").read_text())
    assert manifest["config"]["generations"] == 1
    assert manifest["config"]["operations"] == {"deepen": 1.0}
    assert manifest["config"]["rules"]["judge"] is False
    assert server.requests_for("judge") == []


def test_the_api_key_never_reaches_any_output(evol, tmp_path: Path) -> None:
    secret = "sk-test-SECRET-abcdef123456"
    seeds, out = write_seeds(tmp_path / "seeds.jsonl", SEEDS), tmp_path / "run"
    with FakeServer(api_key=secret) as server:
        result = evol(
            *args(server, seeds, out, "--generations", "1", "--json"),
            env={"OPENAI_API_KEY": secret},
        )
    assert result.exit_code == 0
    assert server.headers[0]["Authorization"] == f"Bearer {secret}"
    for path in out.iterdir():
        assert secret not in path.read_text(), path
    assert secret not in result.output


@pytest.mark.parametrize(
    "signal_number", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"]
)
@pytest.mark.slow
def test_a_signal_stops_at_once_saves_progress_and_resume_gives_the_same_dataset(
    tmp_path: Path, signal_number: int
) -> None:
    seeds = write_seeds(tmp_path / "seeds.jsonl", [{"instruction": f"Task {i}"} for i in range(12)])
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EVOL_", "OPENAI_"))}

    def command(server: FakeServer, out: Path) -> list[str]:
        options = ("--generations", "3", "--concurrency", "4")
        return [sys.executable, "-m", "evol", *map(str, args(server, seeds, out, *options))]

    # Round-2 evolutions are held unanswered: once all 4 slots hold one, the run is mid-way
    # and waiting, whatever the machine's speed, and the signal must not wait for them.
    def hold(body: dict) -> bool:
        return kind_of(body) == "evolve" and "Also consider" in body["messages"][-1]["content"]

    out = tmp_path / "interrupted"
    with FakeServer(hold=hold) as server:
        process = subprocess.Popen(command(server, out), env=env, stderr=subprocess.PIPE, text=True)
        server.wait_until(lambda: server.held == 4)
        sent_before_signal = len(server.requests)
        process.send_signal(signal_number)
        _, stderr = process.communicate(timeout=600)
        server.release()
        assert process.returncode == 130, stderr
        assert len(server.requests) == sent_before_signal  # nothing was sent after the signal
    assert "interrupted" in stderr and "Traceback" not in stderr
    assert json.loads((out / "run.json").read_text())["status"] == "interrupted"
    partial = all_records(out)
    assert len(partial) >= 8 and {r["round"] for r in partial} == {0, 1}  # what finished is saved

    with FakeServer() as server:
        assert subprocess.run(command(server, out), env=env).returncode == 0
        resumed_calls = len(server.requests)
        assert subprocess.run(command(server, tmp_path / "straight"), env=env).returncode == 0
        straight_calls = len(server.requests) - resumed_calls

    def content(run: Path) -> list[str]:
        rows = read_jsonl(run / "dataset.jsonl") + read_jsonl(run / "eliminated.jsonl")
        return sorted(json.dumps(r, sort_keys=True) for r in rows)

    assert content(out) == content(tmp_path / "straight")
    ids = [r["id"] for r in read_jsonl(out / "dataset.jsonl")]
    assert len(ids) == len(set(ids)) == 48
    assert resumed_calls < straight_calls


@pytest.mark.parametrize(
    ("header", "max_wait", "waited_at_least"),
    [
        ("0.8", "5", 0.8),  # honoured
        ("999999999", "0.5", 0.5),  # absurd: --retry-max-wait instead
        ("inf", "0.5", 0.5),
        ("Fri, 01 Jan 2100 00:00:00 GMT", "0.5", 0.5),
        ("-3", "0.5", 0.0),
        ("soon", "0.5", 0.0),  # unreadable: the usual backoff
    ],
)
@pytest.mark.slow
def test_retry_after_is_honoured_up_to_retry_max_wait(
    tmp_path: Path, header: str, max_wait: str, waited_at_least: float
) -> None:
    seeds = write_seeds(tmp_path / "seeds.jsonl", SEEDS[:1])
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EVOL_", "OPENAI_"))}
    with FakeServer(faults=scripted(Fault("status", 429, retry_after=header))) as server:
        options = ("--generations", "0", "--retry-max-wait", max_wait, "--json")
        command = [
            sys.executable,
            "-m",
            "evol",
            *map(str, run_args(server, seeds, tmp_path / "run", *options)),
        ]
        # A subprocess with a time limit: a wait that ignored the bound would hang, not fail.
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["retries"] == 1
    assert server.arrivals[1] - server.arrivals[0] >= waited_at_least


@pytest.mark.parametrize("status", [401, 403])
def test_permission_errors_stop_the_run(evol, tmp_path: Path, status: int) -> None:
    seeds = write_seeds(tmp_path / "seeds.jsonl", SEEDS)
    with FakeServer(faults=lambda body: Fault("status", status)) as server:
        result = evol(*args(server, seeds, tmp_path / "run", "--concurrency", "1"))
        assert len(server.requests) == 1
    assert result.exit_code == 2
    assert "authentication failed" in result.stderr and "check OPENAI_API_KEY" in result.stderr


@pytest.mark.parametrize("rejected", ["seed answer", "evolve"])
def test_a_rejected_request_is_eliminated_with_the_servers_message(
    evol, tmp_path: Path, rejected: str
) -> None:
    seeds = write_seeds(tmp_path / "seeds.jsonl", SEEDS[:2])

    def refuse(body: dict) -> Fault | None:
        text = body["messages"][-1]["content"]
        first_seed = SEEDS[0]["instruction"]
        if (rejected == "seed answer" and text == first_seed) or (
            rejected == "evolve" and kind_of(body) == "evolve" and first_seed in text
        ):
            return Fault("status", 400, retry_after=None)
        return None

    with FakeServer(faults=refuse) as server:
        result = evol(*args(server, seeds, tmp_path / "run", "--generations", "1", "--json"))
        rejected_calls = server.faults_sent["400"]
    assert result.exit_code == 0, result.stderr  # a run with a refused step can complete
    summary = json.loads(result.stdout)
    assert summary["status"] == "complete" and summary["failed"] == []
    assert rejected_calls == 1  # not retried
    (eliminated,) = read_jsonl(tmp_path / "run" / "eliminated.jsonl")
    assert eliminated["reason"] == "rejected" and "injected 400" in eliminated["detail"]
    if rejected == "seed answer":
        # The seed's answer is not kept, but the seed still evolves.
        assert (eliminated["id"], eliminated["generation"]) == ("s1", 0)
        assert [r["id"] for r in read_jsonl(tmp_path / "run" / "gen_0.jsonl")] == ["s2"]
        assert {r["id"] for r in read_jsonl(tmp_path / "run" / "gen_1.jsonl")} == {"s1.1", "s2.1"}
        assert "s1" not in {r["id"] for r in read_jsonl(tmp_path / "run" / "dataset.jsonl")}
    else:
        assert (eliminated["id"], eliminated["parent_id"]) == ("s1.1", "s1")
    assert_valid_run(tmp_path / "run")


@pytest.mark.slow
def test_progress_bar_only_on_a_terminal(server: FakeServer, tmp_path: Path) -> None:
    import fcntl
    import pty
    import struct
    import termios

    seeds = write_seeds(tmp_path / "seeds.jsonl", SEEDS)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EVOL_", "OPENAI_"))}

    def stderr_of(out: str, *extra: str, tty: bool) -> str:
        command = [
            sys.executable,
            "-m",
            "evol",
            *map(str, args(server, seeds, tmp_path / out, "--generations", "1")),
        ]
        command.remove("--quiet")
        command += extra
        if not tty:
            return subprocess.run(command, env=env, capture_output=True, text=True).stderr
        leader, follower = pty.openpty()
        fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=follower)
        os.close(follower)
        chunks = []
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        process.wait(600)  # a hang guard: its stderr closed, it is exiting
        os.close(leader)
        return b"".join(chunks).decode(errors="replace")

    assert "10/10" in stderr_of("tty", tty=True)
    piped = stderr_of("pipe", tty=False)
    # Without a terminal, no bar: lines (one at the end here), each whole (see test_run_messages.py).
    assert "evol: complete" in piped and "\r" not in piped
    assert "evol: progress: 10/10 steps (100%), " in piped
    assert stderr_of("quiet", "--quiet", tty=True) == ""


def test_the_sdk_backend_reads_servers_the_same_way(evol, tmp_path: Path) -> None:
    seeds = write_seeds(tmp_path / "seeds.jsonl", SEEDS[:3])
    faults = scripted(
        Fault("status", 429, retry_after=0.01),
        Fault("status", 500),
        Fault("malformed"),
        Fault("drop"),
    )
    with FakeServer(faults=faults) as server:
        result = evol(
            *args(
                server,
                seeds,
                tmp_path / "run",
                "--generations",
                "1",
                "--backend",
                "openai-sdk",
                "--json",
            )
        )
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["backend"] == "openai-sdk" and summary["retries"] == 4
    assert summary["kept_per_generation"] == {"0": 3, "1": 3}
    with FakeServer(api_key="sk-right") as server:
        denied = evol(
            *args(
                server,
                seeds,
                tmp_path / "denied",
                "--backend",
                "openai-sdk",
                "--api-key",
                "sk-wrong",
            )
        )
        unknown = evol(
            *args(
                server,
                seeds,
                tmp_path / "unknown",
                "--backend",
                "openai-sdk",
                "--api-key",
                "sk-right",
                "--model",
                "nope",
            )
        )
    assert (
        denied.exit_code == 2
        and "authentication failed" in denied.stderr
        and "sk-wrong" not in denied.output
    )
    assert unknown.exit_code == 2 and "no model 'nope'" in unknown.stderr


def test_a_finished_run_is_recognised_without_reading_it_again(
    evol, server, tmp_path: Path
) -> None:
    seeds, out = write_seeds(tmp_path / "seeds.jsonl", SEEDS), tmp_path / "run"
    assert evol(*args(server, seeds, out, "--generations", "2")).exit_code == 0
    calls = len(server.requests)
    quick = evol(*[a for a in args(server, seeds, out, "--generations", "2") if a != "--quiet"])
    assert quick.exit_code == 0
    assert f"{out} is complete: nothing to do" in quick.stderr
    # A file changed since run.json was written: the run is read and repaired, not trusted.
    (out / "dataset.jsonl").unlink()
    gen_1 = (out / "gen_1.jsonl").read_bytes()
    (out / "gen_1.jsonl").write_bytes(gen_1 + b'{"torn": ')
    repaired = evol(*[a for a in args(server, seeds, out, "--generations", "2") if a != "--quiet"])
    assert repaired.exit_code == 0
    assert "nothing to do" not in repaired.stderr
    assert (out / "gen_1.jsonl").read_bytes() == gen_1
    assert len(server.requests) == calls
    assert_valid_run(out)
    assert (
        "nothing to do"
        in evol(
            *[a for a in args(server, seeds, out, "--generations", "2") if a != "--quiet"]
        ).stderr
    )


def test_every_generation_has_its_file_empty_when_nothing_was_kept(
    evol, server, tmp_path: Path
) -> None:
    seeds = write_seeds(tmp_path / "seeds.jsonl", [{"instruction": "Name a river [same]"}])
    out = tmp_path / "run"
    assert evol(*args(server, seeds, out, "--generations", "3")).exit_code == 0
    sizes = {g: (out / f"gen_{g}.jsonl").stat().st_size for g in range(4)}
    assert sizes[0] > 0 and sizes[1] == sizes[2] == sizes[3] == 0
    assert not (out / "gen_4.jsonl").exists()
    assert len(read_jsonl(out / "eliminated.jsonl")) == 3  # unchanged, each round


def test_a_finished_run_run_again_reports_every_step_done_and_nothing_to_repeat(
    server, tmp_path: Path
) -> None:
    seeds = write_seeds(
        tmp_path / "seeds.jsonl",
        [{"instruction": text} for text in ("Name a bird", "Name a tree", "Name a river")],
    )
    config = evol.RunConfig(
        seeds=seeds, out=tmp_path / "run", generations=2, base_urls=[server.base_url]
    )
    progress: list[tuple[int, int]] = []
    first = evol.run(config, on_progress=lambda p: progress.append((p.done, p.total)))
    assert first.status == "complete" and not first.resumed
    assert progress[-1] == (9, 9)  # three seeds: an answer and two rounds each
    calls = len(server.requests)
    rerun_fields = {"resumed", "steps", "steps_done_at_start", "calls_to_repeat", "calls_cut_off"}
    for _case in ("fresh", "once resumed"):
        said: list[str] = []
        again = evol.run(config, on_info=said.append)
        assert said == [f"{config.out} is complete: nothing to do"]
        assert len(server.requests) == calls
        assert again.resumed and again.steps == again.steps_done_at_start == 9
        assert (again.calls_to_repeat, again.calls_cut_off) == (0, 0)
        assert again.model_dump(exclude=rerun_fields) == first.model_dump(exclude=rerun_fields)
        # As a run resumed after a kill leaves it: its own resume repeated four calls.
        manifest = json.loads((config.out / "run.json").read_text())
        manifest["summary"] |= {"resumed": True, "steps_done_at_start": 5, "calls_to_repeat": 4}
        (config.out / "run.json").write_text(json.dumps(manifest))


MEGABYTE = 1_000_000


ROUNDS_SEEDS = [
    # A rewrite that is its parent with a megabyte of blank lines inside (eliminated as
    # unchanged), one that is its parent behind '#' and a megabyte of spaces (the same), a
    # judge reply and an answer each with a megabyte of padding, and normal seeds around them.
    {"id": "blank-lines", "instruction": "Explain how tides work [blank-lines]"},
    {"id": "label", "instruction": "# Explain how magnets work [label]"},
    {"id": "judge", "instruction": "Explain how rainbows form [huge-judge]"},
    {"id": "answer", "instruction": "Explain how bees dance [huge-answer]"},
    *({"id": f"s{i}", "instruction": f"Explain topic number {i} to a student"} for i in range(8)),
]


class HugeReplies(Responder):
    """The default script, with a megabyte reply where a seed's marker asks for one."""

    def evolve(self, instruction: str, prompt: str) -> str | tuple[str, str]:
        if "[blank-lines]" in instruction:
            head, _, tail = instruction.partition(" ")
            return f"{head}\n{chr(10) * MEGABYTE}{tail}"
        if "[label]" in instruction:
            return "#" + " " * MEGABYTE + instruction.removeprefix("#")
        return super().evolve(instruction, prompt)

    def judge(self, second: str, *, asked_again: bool = False, structured: bool = False) -> str:
        if "[huge-judge]" in second:
            return "Not equal." + "\n" * MEGABYTE + "[1" + " " * MEGABYTE + "]"
        return super().judge(second, asked_again=asked_again, structured=structured)

    def answer(self, instruction: str) -> str | tuple[str, str]:
        if "[huge-answer]" in instruction:
            thought = "\n" * MEGABYTE
            return f"<think>{thought}</think>Bees dance to show where the flowers are."
        return super().answer(instruction)


@pytest.mark.slow
def test_megabyte_replies_send_no_request_twice(tmp_path: Path) -> None:
    """Megabyte replies are read without holding up the replies to the other requests: with a
    short --timeout, the server sees every request exactly once and nothing is retried."""
    seeds = write_seeds(tmp_path / "seeds.jsonl", ROUNDS_SEEDS)
    out = tmp_path / "run"
    with FakeServer(responder=HugeReplies()) as server:
        command = [sys.executable, "-m", "evol", "run", str(seeds), "--out", str(out)]
        command += ["--base-url", server.base_url, "--model", "fake-model", "--quiet"]
        command += ["--generations", "1", "--timeout", "3", "--json"]
        # The limit only ends a hang (the backtracking patterns never finished).
        result = subprocess.run(command, capture_output=True, text=True, timeout=600)
        requests = list(server.requests)
    assert result.returncode == 0, result.stderr
    sent = Counter(json.dumps(body["messages"]) for body in requests)
    assert max(sent.values()) == 1
    summary = json.loads(result.stdout)
    assert summary["retries"] == 0 and summary["failed"] == []
    kinds = Counter(kind_of(body) for body in requests)
    # 12 seed answers, 12 rewrites; the two unchanged ones get no judge and no answer.
    assert kinds == {"answer": 22, "evolve": 12, "judge": 10}
    eliminated = {r["id"]: r for r in map(json.loads, (out / "eliminated.jsonl").open())}
    assert eliminated["blank-lines.1"]["reason"] == eliminated["label.1"]["reason"] == "unchanged"
    kept = {r["id"]: r for r in map(json.loads, (out / "dataset.jsonl").open())}
    assert kept["judge.1"]["judge"] == "different"
    assert kept["answer.1"]["output"] == "Bees dance to show where the flowers are."


def test_the_command_line_beats_the_environment_which_beats_the_config_file(
    evol, server, tmp_path: Path
) -> None:
    seeds = write_seeds(tmp_path / "seeds.jsonl", [{"instruction": "Name a bird"}])
    config = tmp_path / "evol.toml"
    config.write_text('generations = 3\nseed = 11\noperations = "deepen"\n')
    env = {"EVOL_GENERATIONS": "2", "EVOL_SEED": "12"}
    result = evol(
        *run_args(server, seeds, tmp_path / "run", "--config", config, "--seed", "13"), env=env
    )
    assert result.exit_code == 0, result.output
    settings = json.loads((tmp_path / "run" / "run.json").read_text())["config"]
    assert (settings["generations"], settings["seed"], settings["operations"]) == (
        2,  # the environment over the file
        13,  # the command line over both
        {"deepen": 1.0},  # the file, where nothing else says otherwise
    )
