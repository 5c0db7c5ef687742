"""`evol optimize` (#27) against a real fake server whose evolver fails as often as the method's
wording says (`MethodResponder`), with a scripted optimizer: it finds the better method, never
takes a worse one, refuses a broken one before paying for it, stops when nothing improves,
survives kill -9 without paying twice, and prices itself without a call."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from evol.method.prompts import PromptSet, default_prompt_dir
from evol.optimize.candidates import method_text, parse_method, refusal, template_problem
from evol.optimize.config import OptimizeConfig
from evol.optimize.dev_seeds import write_dev_seeds
from evol.optimize.paired import (
    binomial_cdf,
    clopper_pearson,
    lower_bound,
    paired_interval,
    upper_bound,
)
from tests.support.fake_server import (
    BAD_PHRASE,
    GOOD_PHRASE,
    FakeServer,
    MethodResponder,
    kind_of,
    unit_hash,
)
from tests.support.runs import read_jsonl, write_seeds

OPERATIONS = ("add_constraints", "deepen", "concretize", "increase_reasoning", "breadth")


def seed_rows(count: int) -> list[dict]:
    rows = [
        {"instruction": f"Task {i}: explain topic number {i} to a student"} for i in range(count)
    ]
    rows[3]["input"] = "A table: 1, 2, 3"  # one seed with an input, for complicate_input & co
    return rows


def options(server: FakeServer, out: Path, *extra: object) -> list[object]:
    return ["--out", out, "--base-url", server.base_url, "--quiet", "--retry-max-wait", "0.05",
            "--dev-size", "24", "--seed", "5", *extra]  # fmt: skip


def history(out: Path) -> dict:
    return json.loads((out / "history.json").read_text(encoding="utf-8"))


def recounted_rate(run_dir: Path) -> float:
    """A run's failure rate counted from its files directly: eliminated evolutions (those with an
    operation) over every evolution kept or eliminated."""
    kept = [r for g in sorted(run_dir.glob("gen_*.jsonl")) for r in read_jsonl(g)]
    eliminated = read_jsonl(run_dir / "eliminated.jsonl")
    attempts = [r for r in kept + eliminated if r["operation"]]
    return sum(1 for r in eliminated if r["operation"]) / len(attempts)


def test_optimize_finds_the_better_method_refuses_the_broken_one_and_stops(
    tmp_path: Path, evol
) -> None:
    seeds = write_seeds(tmp_path / "seeds.jsonl", seed_rows(60))
    out = tmp_path / "opt"
    with FakeServer(responder=MethodResponder()) as server:
        result = evol("optimize", seeds, *options(server, out), "--json")
        assert result.exit_code == 0, result.output
        summary = json.loads(result.stdout)
        requests = list(server.requests)

    done = history(out)
    first, second = done["steps"]
    by_name = {c["name"]: c for c in first["candidates"]}
    good, bad, broken = by_name["candidate_1"], by_name["candidate_2"], by_name["candidate_3"]
    assert first["chosen"] == "candidate_1" and good["accepted"]
    assert good["difference"]["high"] < 0 and good["failure_rate"] < first["current_failure_rate"]
    # The worse method is measured, and its interval says so: never chosen. (The exact interval
    # at 1 - 0.05 / 3 is too wide on 60 seeds to put its lower end above 0, but most of it is.)
    assert not bad["accepted"] and bad["difference"]["mean"] > 0 and bad["difference"]["bound"] > 0
    assert bad["difference"]["worsened"] > bad["difference"]["improved"]
    assert broken["refused"].endswith("drops the placeholder $instruction")
    assert broken["failure_rate"] is None and not (out / "steps/1/candidate_3/run").exists()
    # No request was ever built from the broken method.
    assert not any(
        "<instruction>\nthe instruction\n</instruction>" in json.dumps(b) for b in requests
    )
    # Step 2 starts from the chosen method; its proposals do no better, so the loop stops.
    assert second["current"] == "steps/1/candidate_1/prompts" and second["chosen"] is None
    assert done["stopped"] == "step 2: no candidate improved"
    assert all(not c["accepted"] for c in second["candidates"])
    # The rates are those the run files hold, and those the fake evolver was told to give.
    assert done["start_failure_rate"] == recounted_rate(out / "steps/0/current/run")
    assert good["failure_rate"] == recounted_rate(out / "steps/1/candidate_1/run")
    dev = [r["instruction"] for r in read_jsonl(out / "dev_seeds.jsonl")]
    assert len(dev) == 24
    expected_start = sum(unit_hash(text) < 0.6 for text in dev) / len(dev)
    assert done["start_failure_rate"] == pytest.approx(expected_start)
    assert summary["best_failure_rate"] == good["failure_rate"]
    assert summary["chosen"] == ["candidate_1", None] and summary["status"] == "complete"
    # The best method is the chosen one, whole: every template a run loads.
    for name in OPERATIONS:
        assert GOOD_PHRASE in (out / "prompts" / f"{name}.txt").read_text(encoding="utf-8")
    assert (
        PromptSet.load(out / "prompts").digest()
        == PromptSet.load(out / "steps/1/candidate_1/prompts").digest()
    )
    # The optimizer: one analysis per 10 failures, one proposal per candidate, per step.
    kinds = Counter(kind_of(body) for body in requests)
    failures = round(expected_start * 24) + round(good["failure_rate"] * 24)
    assert kinds["analysis"] == math.ceil(round(expected_start * 24) / 10) + math.ceil(
        round(good["failure_rate"] * 24) / 10
    )
    assert failures and kinds["proposal"] == 6


def test_a_worse_or_unchanged_method_is_never_chosen(tmp_path: Path, evol) -> None:
    seeds = write_seeds(tmp_path / "seeds.jsonl", seed_rows(30))
    out = tmp_path / "opt"
    with FakeServer(responder=MethodResponder(proposals=("bad", "same", "none"))) as server:
        result = evol("optimize", seeds, *options(server, out))
        assert result.exit_code == 0, result.output
    (step,) = history(out)["steps"]
    assert step["chosen"] is None
    refused = {c["name"]: c["refused"] for c in step["candidates"]}
    assert refused == {
        "candidate_1": None,
        "candidate_2": "identical to the current method",
        "candidate_3": "the reply holds no template",
    }
    for name in OPERATIONS:
        shipped = (default_prompt_dir() / f"{name}.txt").read_text(encoding="utf-8")
        assert (out / "prompts" / f"{name}.txt").read_text(encoding="utf-8") == shipped
        assert BAD_PHRASE not in shipped


def test_the_result_is_a_prompts_directory_that_run_and_prompts_show_take(
    tmp_path: Path, evol
) -> None:
    seeds = write_seeds(tmp_path / "seeds.jsonl", seed_rows(30))
    out = tmp_path / "opt"
    with FakeServer(responder=MethodResponder()) as server:
        assert evol("optimize", seeds, *options(server, out, "--steps", "1")).exit_code == 0
        assert history(out)["stopped"] is None  # --steps 1: it ran out of steps
        shown = evol("prompts", "show", "deepen", "--prompts", out / "prompts")
        assert shown.exit_code == 0 and GOOD_PHRASE in shown.stdout
        server.requests.clear()
        ran = evol("run", seeds, "--out", tmp_path / "run", "--base-url", server.base_url,
                   "--quiet", "--generations", "1", "--prompts", out / "prompts")  # fmt: skip
        assert ran.exit_code == 0, ran.output
        evolves = server.requests_for("evolve")
    assert evolves and all(GOOD_PHRASE in json.dumps(body) for body in evolves)


def test_dry_run_prices_the_whole_loop_and_calls_nothing(tmp_path: Path, evol) -> None:
    seeds = write_seeds(tmp_path / "seeds.jsonl", seed_rows(30))
    out = tmp_path / "opt"
    with FakeServer(responder=MethodResponder()) as server:
        args = options(server, out, "--steps", "4", "--candidates", "2", "--rounds", "2")
        result = evol("optimize", seeds, *args, "--dry-run", "--json",
                      "--price-in", "1", "--price-out", "2")  # fmt: skip
        assert result.exit_code == 0, result.output
        assert server.served == 0
    assert not out.exists()
    plan = json.loads(result.stdout)
    assert plan["evaluation_runs"] == 1 + 4 * 2 and plan["dev_seeds"] == 24
    # One run: 24 seeds x 2 rounds of evolve, answer and judge (no seed answers).
    assert plan["run"]["calls"] == 24 * 2 * 3
    assert plan["evaluation_calls"] == plan["run"]["calls"] * 9
    assert plan["optimizer_calls"] == 4 * (math.ceil(24 * 2 / 10) + 2)
    assert plan["calls"] == plan["evaluation_calls"] + plan["optimizer_calls"]
    assert plan["cost_usd"] == pytest.approx(
        plan["evaluation_cost_usd"] + plan["optimizer_cost_usd"], abs=1e-6
    )
    # The optimizer's calls are live, at the prices given ($1 and $2 a million tokens).
    tokens = plan["optimizer_prompt_tokens"] + 2 * plan["optimizer_completion_tokens"]
    assert plan["optimizer_cost_usd"] == pytest.approx(tokens / 1e6, abs=1e-6)
    text = evol("optimize", seeds, *args, "--dry-run")
    assert "9 evaluation runs of 24 dev seeds" in text.stdout


@pytest.mark.slow
def test_rpm_and_tpm_pace_the_optimizer_and_every_evaluation_run(tmp_path: Path, evol) -> None:
    from evol.optimize.optimizer import Optimizer
    from evol.rundir.journal import CallJournal

    seeds = write_seeds(tmp_path / "seeds.jsonl", seed_rows(30))
    out = tmp_path / "opt"
    with FakeServer(responder=MethodResponder()) as server:
        budget = ("--rpm", "600000", "--tpm", "1000000000")
        assert evol("optimize", seeds, *options(server, out, *budget)).exit_code == 0
    runs = sorted(out.glob("steps/*/*/run/run.json"))
    assert len(runs) > 1
    for path in runs:
        config = json.loads(path.read_text(encoding="utf-8"))["config"]
        assert (config["rpm"], config["tpm"]) == (600000, 1000000000)
    config = OptimizeConfig(seeds=seeds, out=out, rpm=30, tpm=9000, batch=False)
    optimizer = Optimizer(config, backend=None, journal=CallJournal(tmp_path / "j.jsonl"))
    policy = optimizer.calls.policy
    assert (policy.rpm, policy.tpm, policy.in_flight) == (30, 9000, config.concurrency)


def test_a_rerun_resumes_and_other_settings_are_refused(tmp_path: Path, evol) -> None:
    seeds = write_seeds(tmp_path / "seeds.jsonl", seed_rows(30))
    out = tmp_path / "opt"
    with FakeServer(responder=MethodResponder()) as server:
        assert evol("optimize", seeds, *options(server, out)).exit_code == 0
        before = history(out)
        server.requests.clear()
        again = evol("optimize", seeds, *options(server, out), "--json")
        assert again.exit_code == 0 and json.loads(again.stdout)["steps_done"] == 2
        assert server.requests == []  # finished runs say "nothing to do", nothing is asked
        assert history(out) == before
        other = evol("optimize", seeds, *options(server, out, "--candidates", "4"))
    assert other.exit_code == 2
    assert "optimized with other settings (--candidates; recorded in history.json)" in other.stderr


def test_an_out_holding_other_files_is_refused(tmp_path: Path, evol) -> None:
    seeds = write_seeds(tmp_path / "seeds.jsonl", seed_rows(5))
    out = tmp_path / "opt"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with FakeServer(responder=MethodResponder()) as server:
        result = evol("optimize", seeds, *options(server, out))
        assert server.served == 0
    assert result.exit_code == 2 and "not evol optimize's (notes.txt)" in result.stderr


# The child runs without the developer's keys, endpoints or EVOL_* settings.
ENV = {k: v for k, v in os.environ.items() if not k.startswith(("EVOL_", "OPENAI_"))}


def optimize_process(server: FakeServer, seeds: Path, out: Path) -> list[str]:
    extra = options(server, out, "--concurrency", "4")
    return [sys.executable, "-m", "evol", "optimize", str(seeds), *map(str, extra)]


@pytest.mark.slow
def test_a_kill_mid_step_then_a_rerun_pays_no_call_twice(tmp_path: Path) -> None:
    seeds = write_seeds(tmp_path / "seeds.jsonl", seed_rows(40))
    with FakeServer(responder=MethodResponder()) as straight:
        command = optimize_process(straight, seeds, tmp_path / "straight")
        assert subprocess.run(command, env=ENV).returncode == 0
        expected = Counter(json.dumps(body, sort_keys=True) for body in straight.requests)
    assert max(expected.values()) == 1  # no request repeats in a straight optimization

    # Hold the evaluation of step 1's worse candidate: by then the start's run, the analyses,
    # every proposal and the better candidate's run are paid for.
    def hold(body: dict) -> bool:
        return kind_of(body) == "evolve" and BAD_PHRASE in json.dumps(body)

    out = tmp_path / "killed"
    with FakeServer(responder=MethodResponder(), hold=hold) as server:
        command = optimize_process(server, seeds, out)
        process = subprocess.Popen(command, env=ENV)
        try:
            server.wait_until(lambda: server.held == 4 or process.poll() is not None)
        finally:
            process.send_signal(signal.SIGKILL)
            process.wait()
        assert server.held == 4
        held = [json.dumps(b, sort_keys=True) for b in server.requests if hold(b)]
        server.release()
        assert (out / "optimizer_calls.jsonl").exists()
        assert subprocess.run(command, env=ENV).returncode == 0
        arrived = Counter(json.dumps(body, sort_keys=True) for body in server.requests)

    # Only the 4 requests in flight at the kill came twice; every other arrived once.
    assert {body for body, count in arrived.items() if count > 1} == set(held)
    assert all(arrived[body] == 2 for body in held)
    assert set(arrived) == set(expected)
    assert history(out)["steps"] == history(tmp_path / "straight")["steps"]


# -- the pure parts ---------------------------------------------------------------------------

SHIPPED = PromptSet.load()


@pytest.mark.parametrize(
    ("rewritten", "why"),
    [
        ({}, "the reply holds no template"),
        ({"deepen": "  \n"}, "deepen: empty"),
        ({"deepen": "Costs $5: $instruction $input"}, "deepen: invalid placeholder"),
        ({"deepen": "$instruction $input $answer"}, "deepen: unknown placeholder $answer"),
        ({"deepen": "Harder: $input"}, "deepen: drops the placeholder $instruction"),
        ({"deepen": "Harder: $instruction"}, "deepen: drops the placeholder $input"),
        ({"judge": "$first $second"}, "'judge' is not an operation of this run"),
        ({"breadth": "$instruction $input"}, "'breadth' is not an operation of this run"),
        ({"deepen": SHIPPED["deepen"].text + "\n\n"}, "identical to the current method"),
        ({"deepen": "Costs $$5. <instruction>$instruction</instruction> $input"}, None),
        (
            {"deepen": "Harder, please:\n<instruction>\n${instruction}\n</instruction>\n$input"},
            None,
        ),
        # Wording that leaks by construction: the instruction out of its fence, a paper label.
        (
            {"deepen": "Harder: $instruction\n$input"},
            "deepen: takes $instruction out of its <instruction> tags",
        ),
        (
            {"deepen": "Harder: <task>$instruction</task> $input"},
            "deepen: takes $instruction out of its <instruction> tags",
        ),
        (
            {
                "deepen": "<instruction>$instruction</instruction> $input\nStart with #Rewritten Prompt#:"
            },
            "deepen: brings in the label '#rewritten prompt#'",
        ),
        (
            {
                "deepen": "<instruction>$instruction</instruction> $input\nGiven prompt above, deepen it."
            },
            "deepen: brings in the label 'given prompt'",
        ),
    ],
)
def test_a_candidate_is_refused_for_each_broken_template(rewritten: dict, why: str | None) -> None:
    found = refusal(rewritten, SHIPPED, ["deepen", "concretize"])
    assert found == why if why is None else found is not None and found.startswith(why)


def test_a_template_without_input_in_its_original_may_leave_it_out() -> None:
    assert template_problem("deepen", "Harder: $instruction", "Go: $instruction") is None
    assert template_problem("add_verifiable_constraint", "$instruction", "$instruction $constraint")


def test_the_method_reads_back_as_it_is_written() -> None:
    shown = method_text(SHIPPED, OPERATIONS)
    assert parse_method(shown) == {name: SHIPPED[name].text.strip() + "\n" for name in OPERATIONS}
    reply = 'Sure.\n<template name="deepen">\nA $instruction\n</template>\n<template name="x">'
    assert parse_method(reply) == {"deepen": "A $instruction\n"}
    assert parse_method('<template name="deepen">no end') == {}


@pytest.mark.parametrize(
    ("successes", "trials", "alpha", "low", "high"),
    [(5, 10, 0.05, 0.187086, 0.812914), (0, 10, 0.05, 0.0, 0.308497), (10, 10, 0.05, 0.691503, 1.0),
     (1, 20, 0.05, 0.001265, 0.248732), (3, 7, 0.01, 0.055299, 0.882296), (0, 0, 0.05, 0.0, 1.0)],
)  # fmt: skip
def test_the_clopper_pearson_interval_is_the_beta_quantiles_one(
    successes: int, trials: int, alpha: float, low: float, high: float
) -> None:
    """The two-sided intervals scipy gives as beta.ppf(alpha / 2, s, n - s + 1) and
    beta.ppf(1 - alpha / 2, s + 1, n - s) (R's binom.test prints the same)."""
    assert clopper_pearson(successes, trials, alpha) == pytest.approx((low, high), abs=1e-6)


@pytest.mark.parametrize("trials", [1, 2, 3, 7, 40])
def test_the_one_sided_bounds_have_their_closed_forms(trials: int) -> None:
    """0 of n: the upper bound solves (1 - p)^n = alpha; n of n: the lower one solves p^n = alpha."""
    assert upper_bound(0, trials, 0.05) == pytest.approx(1 - 0.05 ** (1 / trials), abs=1e-12)
    assert lower_bound(trials, trials, 0.05) == pytest.approx(0.05 ** (1 / trials), abs=1e-12)
    assert upper_bound(trials, trials, 0.05) == 1.0 and lower_bound(0, trials, 0.05) == 0.0


def test_the_binomial_cdf_is_the_sum_of_its_terms() -> None:
    exact = sum(math.comb(12, k) * 0.3**k * 0.7 ** (12 - k) for k in range(5))
    assert binomial_cdf(4, 12, 0.3) == pytest.approx(exact, rel=1e-12)
    assert binomial_cdf(-1, 12, 0.3) == 0.0 and binomial_cdf(12, 12, 0.3) == 1.0
    assert binomial_cdf(3, 12, 0.0) == 1.0 and binomial_cdf(3, 12, 1.0) == 0.0


def test_the_paired_interval_is_exact_bonferroni_corrected_and_pairs_only_shared_seeds() -> None:
    current = {f"s{i}": 1.0 if i % 2 else 0.0 for i in range(20)}
    better = {seed: 0.0 for seed in current} | {"extra": 1.0}
    one = paired_interval(current, better, confidence=0.95, tests=1)
    three = paired_interval(current, better, confidence=0.95, tests=3)
    assert one is not None and three is not None
    assert one.pairs == 20 and one.mean == -0.5 and one.level == 0.95
    assert (one.improved, one.worsened) == (10, 0)
    # 10 discordant seeds, all improved: c = 0 of n_d = 10, difference = (10 / 20) * (2p - 1).
    assert one.bound == pytest.approx(0.5 * (2 * (1 - 0.05**0.1) - 1))
    assert one.high == pytest.approx(0.5 * (2 * (1 - 0.025**0.1) - 1)) and one.low == -0.5
    assert one.lower_for_sure and three.lower_for_sure
    assert three.level == pytest.approx(1 - 0.05 / 3) and three.bound > one.bound
    assert paired_interval(current, {"other": 0.0}, confidence=0.95, tests=1) is None
    same = paired_interval(current, current, confidence=0.95, tests=1)
    assert same is not None and same.high == 0 and same.bound == 0 and not same.lower_for_sure


@pytest.mark.parametrize(
    ("improved", "worsened", "accepted"),
    [(2, 0, False), (5, 0, False), (6, 0, True), (10, 2, False), (14, 2, True), (3, 3, False)],
)
def test_acceptance_is_the_exact_one_sided_test_at_alpha_over_m(
    improved: int, worsened: int, accepted: bool
) -> None:
    """McNemar's exact test by hand: accepted when P(c or fewer worsened | n_d, 1/2) < 0.05 / 3."""
    n_d = improved + worsened
    p_value = sum(math.comb(n_d, k) for k in range(worsened + 1)) / 2**n_d
    assert (p_value < 0.05 / 3) == accepted
    current = {f"s{i}": 1.0 if i < improved else 0.0 for i in range(40)}
    candidate = {f"s{i}": 1.0 if improved <= i < n_d else 0.0 for i in range(40)}
    interval = paired_interval(current, candidate, confidence=0.95, tests=3)
    assert interval is not None and interval.lower_for_sure == accepted
    assert interval.mean == pytest.approx((worsened - improved) / 40)
    assert interval.low <= interval.mean <= interval.high


def test_with_several_rounds_a_seed_counts_by_the_sign_of_its_difference() -> None:
    current = {f"s{i}": 0.5 for i in range(10)}
    candidate = {f"s{i}": 0.0 if i < 8 else 1.0 for i in range(10)}
    interval = paired_interval(current, candidate, confidence=0.95, tests=1)
    assert interval is not None and (interval.improved, interval.worsened) == (8, 2)
    assert interval.mean == pytest.approx((8 * -0.5 + 2 * 0.5) / 10)


def test_the_dev_sample_is_reproducible_from_the_seed(tmp_path: Path) -> None:
    seeds = write_seeds(tmp_path / "seeds.jsonl", seed_rows(50))

    def sample(seed: int, size: int) -> list[str]:
        config = OptimizeConfig(seeds=seeds, out=tmp_path, dev_size=size, seed=seed)
        path = write_dev_seeds(config, tmp_path / f"dev-{seed}-{size}.jsonl")
        return [row["id"] for row in read_jsonl(path)]

    assert sample(1, 10) == sample(1, 10) and len(set(sample(1, 10))) == 10
    assert sample(1, 10) != sample(2, 10)
    ids = [f"s{i}" for i in range(1, 51)]
    assert sample(1, 10) == sorted(sample(1, 10), key=ids.index)  # seed-file order
    assert sample(1, 80) == ids  # fewer seeds than --dev-size: all of them


@pytest.mark.slow
def test_batch_no_wait_exits_3_while_evaluation_batches_wait_and_ends_as_a_live_run(
    tmp_path: Path, evol
) -> None:
    from tests.support.batch_server import BatchServer

    seeds = write_seeds(tmp_path / "seeds.jsonl", seed_rows(30))
    with FakeServer(responder=MethodResponder()) as server:
        assert evol("optimize", seeds, *options(server, tmp_path / "live")).exit_code == 0
    out = tmp_path / "batch"
    fast = ("--batch-no-wait", "--batch-poll-interval", "0.05", "--model", "fake-model")
    with BatchServer(responder=MethodResponder(), hold=True, live_chat=True) as server:
        first = evol("optimize", seeds, *options(server, out), *fast, "--json")
        assert first.exit_code == 3, first.stderr
        assert json.loads(first.stdout)["status"] == "pending"
        assert not history(out)["steps"] and "POST /v1/chat/completions" not in server.requests
        server.release()
        codes = []  # each call collects what its runs' batches answered and submits the next
        while not codes or codes[-1] == 3:
            assert len(codes) < 40, "the optimization never finished"
            codes.append(evol("optimize", seeds, *options(server, out), *fast).exit_code)
        assert codes[-1] == 0
        assert server.requests.count("POST /v1/chat/completions") == len(
            [b for step in history(out)["steps"] for b in step["analysis"]]
        ) + 3 * len(history(out)["steps"])  # the optimizer's calls alone went live
    assert history(out)["steps"] == history(tmp_path / "live")["steps"]


def test_progress_says_the_step_the_candidates_evaluated_and_the_best_rate(
    tmp_path: Path, evol
) -> None:
    seeds = write_seeds(tmp_path / "seeds.jsonl", seed_rows(30))
    with FakeServer(responder=MethodResponder()) as server:
        args = [a for a in options(server, tmp_path / "opt", "--steps", "1") if a != "--quiet"]
        result = evol("optimize", seeds, *args)
    assert result.exit_code == 0, result.stderr
    rate = history(tmp_path / "opt")["steps"][0]["candidates"][0]["failure_rate"]
    assert f"step 1/1: 1 of 3 candidates evaluated, best failure rate so far {rate:.3f}" in (
        result.stderr
    )
    assert "step 1: candidate_3 refused before evaluation" in result.stderr
    assert "optimize complete: 1 steps" in result.stderr


def test_a_proposal_the_server_refuses_is_a_refused_candidate(tmp_path: Path, evol) -> None:
    from tests.support.fake_server import Fault, first_user_turn

    def refuse_second(body: dict) -> Fault | None:
        refused = "This is proposal 2 of" in first_user_turn(body)
        return Fault("status", 400, message="proposal too long") if refused else None

    seeds = write_seeds(tmp_path / "seeds.jsonl", seed_rows(30))
    with FakeServer(responder=MethodResponder(), faults=refuse_second) as server:
        result = evol("optimize", seeds, *options(server, tmp_path / "opt", "--steps", "1"))
    assert result.exit_code == 0, result.stderr
    (step,) = history(tmp_path / "opt")["steps"]
    second = step["candidates"][1]
    assert second["refused"].startswith("the optimizer's request was refused")
    assert "proposal too long" in second["refused"] and step["chosen"] == "candidate_1"


@given(st.text(alphabet="<>/$ {}\\ninstructonput#", max_size=200))
def test_any_template_text_gets_a_verdict(text: str) -> None:
    found = template_problem("deepen", text, SHIPPED["deepen"].text)
    assert found is None or isinstance(found, str)
    if found is None:  # what is accepted keeps the slots and the fence
        assert "$instruction" in text or "${instruction}" in text
