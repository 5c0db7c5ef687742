"""Hostile cases against `evol optimize` (issue #27): each test fails where evol misbehaves."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from evol.method.prompts import PromptSet
from evol.optimize.candidates import parse_method, refusal, reply_problem
from evol.optimize.paired import paired_interval
from tests.support.fake_server import (
    GOOD_PHRASE,
    FakeServer,
    MethodResponder,
    first_user_turn,
    kind_of,
)
from tests.support.runs import write_seeds

OPS = ("--operations", "deepen")


def seed_rows(count: int) -> list[dict]:
    return [{"instruction": f"Explain topic number {i} in plain words."} for i in range(count)]


def options(server: FakeServer, out: Path, *extra: object) -> list[object]:
    return ["--out", out, "--base-url", server.base_url, "--quiet", *extra]


def history(out: Path) -> dict:
    return json.loads((out / "history.json").read_text(encoding="utf-8"))


@dataclass
class ScriptedOptimizer(MethodResponder):
    """MethodResponder whose proposal k is `replies[k - 1]`, verbatim."""

    replies: tuple[str, ...] = ()

    def __call__(self, body: dict[str, Any]) -> str | tuple[str, str]:
        content = first_user_turn(body)
        if "<analysis>" in content:
            import re

            number = int(re.search(r"This is proposal (\d+) of", content)[1])  # type: ignore[index]
            return self.replies[(number - 1) % len(self.replies)]
        return super().__call__(body)


def deepen_with(extra: str) -> str:
    text = PromptSet.load()["deepen"].text.rstrip("\n")
    return f"{text}\n{extra}"


# --- 1. accepted within the noise -------------------------------------------------------------


def test_two_pairs_with_no_spread_are_not_proof_of_improvement() -> None:
    """Two seeds, both failing before and both passing after: the sign test's p is 0.25, far
    from the Bonferroni level 0.05/3. A zero sample variance is not a zero noise."""
    interval = paired_interval({"a": 1.0, "b": 1.0}, {"a": 0.0, "b": 0.0}, confidence=0.95, tests=3)
    assert interval is None or not interval.lower_for_sure, interval


def test_a_two_seed_dev_set_never_accepts_a_candidate(tmp_path: Path, evol) -> None:
    """End to end: with --dev-size 2, no candidate can be shown better at 95%."""
    seeds = write_seeds(tmp_path / "seeds.jsonl", seed_rows(2))
    out = tmp_path / "opt"
    responder = MethodResponder(base_rate=1.0, good_rate=0.0, proposals=("good",))
    with FakeServer(responder=responder) as server:
        result = evol(
            "optimize", seeds, *options(server, out, "--candidates", "1", "--steps", "1", *OPS)
        )
    assert result.exit_code == 0, result.output
    step = history(out)["steps"][0]
    assert step["chosen"] is None, step["candidates"][0]


def test_five_discordant_pairs_are_not_significant_after_bonferroni() -> None:
    """20 paired binary outcomes, 5 seeds improve and none worsens: the exact (sign/McNemar)
    one-sided p is 1/32 = 0.031 > 0.05/3, so the improvement is within the noise at the
    corrected level; the t interval's upper end is below 0."""
    current = {f"s{i}": (1.0 if i < 5 else 0.0) for i in range(20)}
    candidate = {f"s{i}": 0.0 for i in range(20)}
    interval = paired_interval(current, candidate, confidence=0.95, tests=3)
    assert interval is not None
    assert not interval.lower_for_sure, interval


# --- 2. hostile optimizer replies ---------------------------------------------------------------


def test_a_template_that_mentions_the_closing_tag_is_not_cut_short() -> None:
    """A template whose text holds `</template>` is read back cut at that point: the method
    evaluated is not the one proposed (its last rule is silently dropped)."""
    text = deepen_with("Never write a </template> tag.\nEnd every rewrite with a question.")
    reply = f'<template name="deepen">\n{text}\n</template>'
    parsed = parse_method(reply)
    current = PromptSet.load()
    why = refusal(parsed, current, ["deepen"])
    assert why is not None or parsed["deepen"].strip() == text.strip(), parsed["deepen"][-200:]


@pytest.mark.parametrize(
    "reply",
    [
        '<template name="judge">\n<first>$first</first><second>$second</second> Equal?\n</template>',
        '<template name="score_quality">\n$task $answer\n</template>',
        '<template name="optimize_propose">\n$method $analysis\n</template>',
        '<template name="deepen">\n{instruction} {0} {__class__}\n</template>',
        '<template name="deepen">\n$$instruction\n</template>',
        '<template name="deepen">\n${instruction\n</template>',
        "no template block at all " * 2000,
        "",
    ],
)
def test_a_hostile_reply_is_refused_before_evaluation(reply: str) -> None:
    assert refusal(parse_method(reply), PromptSet.load(), ["deepen"]) is not None


@pytest.mark.slow
def test_a_reply_with_a_lone_surrogate_does_not_crash(tmp_path: Path, evol) -> None:
    """The server's JSON may carry "\\ud800"; the candidate is refused or evaluated, not a
    traceback (UnicodeEncodeError writing its prompts or history)."""
    seeds = write_seeds(tmp_path / "seeds.jsonl", seed_rows(6))
    out = tmp_path / "opt"
    lone = chr(0xD800)
    reply = f'<template name="deepen">\n{deepen_with(GOOD_PHRASE + " " + lone)}\n</template>'
    responder = ScriptedOptimizer(replies=(reply,))
    with FakeServer(responder=responder) as server:
        result = evol("optimize", seeds, *options(server, out, "--candidates", "1", *OPS))
    assert result.exit_code in (0, 1, 2), result.output
    assert "Traceback" not in result.output


def test_a_reply_naming_a_template_twice_evaluates_what_is_recorded(tmp_path: Path, evol) -> None:
    """Two blocks for deepen: the later wins; the file written must be that one."""
    seeds = write_seeds(tmp_path / "seeds.jsonl", seed_rows(6))
    out = tmp_path / "opt"
    first = deepen_with("First version.")
    second = deepen_with(GOOD_PHRASE)
    reply = f'<template name="deepen">\n{first}\n</template>\n<template name="deepen">\n{second}\n</template>'
    with FakeServer(responder=ScriptedOptimizer(replies=(reply,))) as server:
        result = evol(
            "optimize", seeds, *options(server, out, "--candidates", "1", "--steps", "1", *OPS)
        )
    assert result.exit_code == 0, result.output
    written = (out / "steps" / "1" / "candidate_1" / "prompts" / "deepen.txt").read_text()
    assert GOOD_PHRASE in written and "First version." not in written


# --- 3. history.json hostile or damaged ---------------------------------------------------------


def finished(tmp_path: Path, evol, server: FakeServer) -> tuple[Path, Path]:
    seeds = write_seeds(tmp_path / "seeds.jsonl", seed_rows(8))
    out = tmp_path / "opt"
    result = evol(
        "optimize", seeds, *options(server, out, "--candidates", "1", "--steps", "1", *OPS)
    )
    assert result.exit_code == 0, result.output
    return seeds, out


def test_a_history_that_is_a_directory_is_a_one_line_error(tmp_path: Path, evol) -> None:
    with FakeServer(responder=MethodResponder(proposals=("good",))) as server:
        seeds, out = finished(tmp_path, evol, server)
        (out / "history.json").unlink()
        (out / "history.json").mkdir()
        result = evol("optimize", seeds, *options(server, out, "--candidates", "1", *OPS))
    assert result.exit_code == 2 or result.exit_code == 1, result.output
    assert "history.json" in result.output


@pytest.mark.parametrize("absolute", [False, True])
def test_a_history_whose_chosen_climbs_out_of_out_is_refused(
    tmp_path: Path, evol, absolute: bool
) -> None:
    """history.json's `chosen` is joined to a path: `../..` (or an absolute path) must not make
    evol write prompts and pay for an evaluation run outside --out."""
    with FakeServer(responder=MethodResponder(proposals=("good",))) as server:
        seeds, out = finished(tmp_path, evol, server)
        saved = history(out)
        outside = tmp_path / "outside"
        (outside / "prompts").mkdir(parents=True)
        saved["steps"][0]["chosen"] = str(outside) if absolute else "../../../outside"
        (out / "history.json").write_text(json.dumps(saved), encoding="utf-8")
        result = evol(
            "optimize", seeds, *options(server, out, "--candidates", "1", "--steps", "2", *OPS)
        )
    assert not (outside / "run").exists(), "an evaluation run was made outside --out"
    assert result.exit_code != 0, result.output


def test_a_history_choosing_a_refused_candidate_is_refused(tmp_path: Path, evol) -> None:
    """A hand-edited history.json that names as chosen a candidate never evaluated."""
    with FakeServer(responder=MethodResponder(proposals=("good",))) as server:
        seeds, out = finished(tmp_path, evol, server)
        saved = history(out)
        saved["steps"][0]["chosen"] = "candidate_9"
        (out / "history.json").write_text(json.dumps(saved), encoding="utf-8")
        result = evol(
            "optimize", seeds, *options(server, out, "--candidates", "1", "--steps", "2", *OPS)
        )
    assert result.exit_code != 0
    assert "history.json" in result.output or "candidate_9" in result.output, result.output


@pytest.mark.parametrize(
    "damage",
    [
        b"",
        b"\xff\xfe",
        b"[]",
        b'{"format_version": 1}',
        b"{" * 100_000,
        b'{"format_version": 2, "settings": {}}',
    ],
)
def test_a_damaged_history_is_a_one_line_error(tmp_path: Path, evol, damage: bytes) -> None:
    with FakeServer(responder=MethodResponder(proposals=("good",))) as server:
        seeds, out = finished(tmp_path, evol, server)
        (out / "history.json").write_bytes(damage)
        result = evol("optimize", seeds, *options(server, out, "--candidates", "1", *OPS))
    assert result.exit_code != 0
    assert "history.json" in result.output, result.output


# --- 4. rerun with other settings ---------------------------------------------------------------


@pytest.mark.parametrize(
    "changed",
    [
        ("--model", "other-model"),
        ("--judge-model", "other-model"),
        ("--instruction-field", "text"),
    ],
)
def test_a_rerun_with_other_settings_is_not_accepted_silently(
    tmp_path: Path, evol, changed: tuple[str, str]
) -> None:
    rows = [
        {"instruction": r["instruction"], "text": r["instruction"] + " Briefly."}
        for r in seed_rows(8)
    ]
    seeds = write_seeds(tmp_path / "seeds.jsonl", rows)
    out = tmp_path / "opt"
    responder = MethodResponder(proposals=("good",))
    with FakeServer(models=("fake-model", "other-model"), responder=responder) as server:
        first = evol(
            "optimize",
            seeds,
            *options(
                server, out, "--candidates", "1", "--steps", "1", *OPS, "--model", "fake-model"
            ),
        )
        assert first.exit_code == 0, first.output
        before = (out / "history.json").read_text()
        served = server.served
        again = evol(
            "optimize",
            seeds,
            *options(
                server,
                out,
                "--candidates",
                "1",
                "--steps",
                "2",
                *OPS,
                "--model",
                "fake-model",
                *changed,
            ),
        )
        after_served = server.served
    # Refused, before any call, with advice `evol optimize` can follow: it has no --overwrite.
    assert again.exit_code != 0 and after_served == served, again.output
    assert "--overwrite" not in again.output, again.output
    assert before == (out / "history.json").read_text()


# --- 5. dry run, dev sample, result dir, secrets --------------------------------------------------


def test_dry_run_calls_nothing_and_writes_nothing(tmp_path: Path, evol) -> None:
    seeds = write_seeds(tmp_path / "seeds.jsonl", seed_rows(8))
    out = tmp_path / "opt"
    with FakeServer(responder=MethodResponder()) as server:
        result = evol("optimize", seeds, *options(server, out, "--dry-run", "--json"))
        assert server.served == 0 and not server.requests
    assert result.exit_code == 0, result.output
    assert not out.exists()
    plan = json.loads(result.stdout)
    assert plan["evaluation_runs"] == 1 + 10 * 3


def test_the_dev_sample_depends_on_the_seed_only(tmp_path: Path) -> None:
    from evol.optimize.config import OptimizeConfig
    from evol.optimize.dev_seeds import write_dev_seeds

    seeds = write_seeds(tmp_path / "seeds.jsonl", seed_rows(50))

    def sample(seed: int) -> bytes:
        path = tmp_path / f"dev{seed}.jsonl"
        write_dev_seeds(
            OptimizeConfig(seeds=seeds, out=tmp_path / "o", dev_size=10, seed=seed), path
        )
        return path.read_bytes()

    assert sample(1) == sample(1) and sample(1) != sample(2)


def test_the_result_feeds_run_and_prompts_show_and_holds_no_key(tmp_path: Path, evol) -> None:
    seeds = write_seeds(tmp_path / "seeds.jsonl", seed_rows(30))
    out = tmp_path / "opt"
    key = "sk-attack27-SECRET-0123456789"
    with FakeServer(responder=MethodResponder(proposals=("good",)), api_key=key) as server:
        result = evol(
            "optimize",
            seeds,
            *options(server, out, "--candidates", "1", "--steps", "2", *OPS, "--json"),
            env={"EVOL_API_KEY": key},
        )
        assert result.exit_code == 0, result.output
        summary = json.loads(result.stdout)
        assert summary["status"] == "complete" and summary["chosen"][0] == "candidate_1"
        shown = evol("prompts", "show", "deepen", "--prompts", out / "prompts")
        assert shown.exit_code == 0 and GOOD_PHRASE in shown.output
        ran = evol(
            "run",
            seeds,
            "--out",
            tmp_path / "r",
            "--base-url",
            server.base_url,
            "--quiet",
            "--prompts",
            out / "prompts",
            "--generations",
            "1",
            "--api-key",
            key,
            *OPS,
        )
        assert ran.exit_code == 0, ran.output
    leaked = [p for p in out.rglob("*") if p.is_file() and key.encode() in p.read_bytes()]
    assert not leaked


def test_optimizer_calls_are_journalled_and_a_rerun_pays_none(tmp_path: Path, evol) -> None:
    """A rerun of a finished optimization pays nothing; a rerun after the optimizer's replies
    were journalled but before history.json recorded the step pays no optimizer call twice."""
    seeds = write_seeds(tmp_path / "seeds.jsonl", seed_rows(8))
    out = tmp_path / "opt"
    with FakeServer(responder=MethodResponder(proposals=("good",))) as server:
        args = options(server, out, "--candidates", "1", "--steps", "2", *OPS)
        assert evol("optimize", seeds, *args).exit_code == 0
        count = server.served
        assert evol("optimize", seeds, *args).exit_code == 0
        assert server.served == count
        kinds = [kind_of(body) for body in server.requests]
    assert kinds.count("proposal") == len(history(out)["steps"]) - (
        1 if history(out)["steps"][-1]["analysis"][0].startswith("no evolution") else 0
    )


# --- 6. the optimizer's own prompts, and kill -9 ----------------------------------------------

ANALYSIS_MARK = "ATTACK27 NEW ANALYSIS PROMPT"


def optimizer_prompts(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    shipped = PromptSet.load()["optimize_analysis"].text
    (folder / "optimize_analysis.txt").write_text(f"{ANALYSIS_MARK}\n{shipped}", encoding="utf-8")
    return folder


def test_a_rerun_with_other_optimizer_prompts_is_not_accepted_silently(
    tmp_path: Path, evol
) -> None:
    """--prompts may override optimize_analysis/optimize_propose, but they are not in the
    settings a rerun must keep (method_digest covers the run's templates only): a rerun with
    other optimizer prompts goes on as if nothing changed, and history.json does not say."""
    seeds = write_seeds(tmp_path / "seeds.jsonl", seed_rows(30))
    out = tmp_path / "opt"
    with FakeServer(responder=MethodResponder(proposals=("good",))) as server:
        first = evol(
            "optimize", seeds, *options(server, out, "--candidates", "1", "--steps", "1", *OPS)
        )
        assert first.exit_code == 0, first.output
        assert history(out)["steps"][0]["chosen"] == "candidate_1"  # step 2 has work to do
        again = evol(
            "optimize",
            seeds,
            *options(
                server,
                out,
                "--candidates",
                "1",
                "--steps",
                "2",
                *OPS,
                "--prompts",
                optimizer_prompts(tmp_path / "mine"),
            ),
        )
        new_prompt_used = any(ANALYSIS_MARK in json.dumps(b) for b in server.requests)
    assert again.exit_code != 0 and "settings" in again.output, (again.output, new_prompt_used)


@pytest.mark.slow
def test_kill_during_proposals_then_a_rerun_with_other_analysis_prompt_replays_nothing_stale(
    tmp_path: Path,
) -> None:
    """The optimizer's journal is keyed by (step, call) only: after a kill -9 with the analyses
    journalled, a rerun whose optimize_analysis prompt differs replays the old analyses as if
    they answered the new prompt. Expected: refused, or the new prompt asked."""
    import os
    import signal
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith(("EVOL_", "OPENAI_"))}
    seeds = write_seeds(tmp_path / "seeds.jsonl", seed_rows(12))
    out = tmp_path / "killed"

    def hold(body: dict) -> bool:
        return kind_of(body) == "proposal"

    with FakeServer(responder=MethodResponder(proposals=("good",)), hold=hold) as server:
        base = ["--candidates", "1", "--steps", "1", *OPS]
        command = [
            sys.executable,
            "-m",
            "evol",
            "optimize",
            str(seeds),
            *map(str, options(server, out, *base)),
        ]
        process = subprocess.Popen(command, env=env)
        try:
            server.wait_until(lambda: server.held == 1 or process.poll() is not None)
        finally:
            process.send_signal(signal.SIGKILL)
            process.wait()
        assert server.held == 1
        server.release()
        analyses_before = sum(kind_of(b) == "analysis" for b in server.requests)
        assert analyses_before >= 1
        mine = optimizer_prompts(tmp_path / "mine")
        rerun = subprocess.run(
            [*command, "--prompts", str(mine)], env=env, capture_output=True, text=True
        )
        asked_new = any(ANALYSIS_MARK in json.dumps(b) for b in server.requests)
    refused = rerun.returncode != 0
    assert refused or asked_new, (rerun.returncode, rerun.stderr[-500:])


def test_a_refused_candidate_leaves_what_the_docs_say(tmp_path: Path, evol) -> None:
    """docs/optimize.md and optimize.py's docstring said `steps/<k>/candidate_<j>/ ... (a refused
    one: prompts/ only)`, but nothing was written. fix27 chose to keep writing nothing (a
    refused template may be no template at all) and to say so: the test now checks that."""
    seeds = write_seeds(tmp_path / "seeds.jsonl", seed_rows(8))
    out = tmp_path / "opt"
    with FakeServer(responder=MethodResponder(proposals=("drop",))) as server:
        result = evol(
            "optimize", seeds, *options(server, out, "--candidates", "1", "--steps", "1", *OPS)
        )
    assert result.exit_code == 0, result.output
    assert history(out)["steps"][0]["candidates"][0]["refused"]
    assert not (out / "steps" / "1" / "candidate_1").exists()
    root = Path(__file__).resolve().parents[2]
    for doc in ("docs/optimize.md", "src/evol/optimize/loop.py"):
        text = (root / doc).read_text(encoding="utf-8")
        assert "prompts/ only" not in text and "its reason is in history.json" in " ".join(
            text.split()
        )


def test_an_empty_seed_file_is_named_in_the_error(tmp_path: Path, evol) -> None:
    """The error should name the user's seed file, not the dev_seeds.jsonl evol wrote from it."""
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text("", encoding="utf-8")
    with FakeServer(responder=MethodResponder()) as server:
        result = evol("optimize", seeds, *options(server, tmp_path / "opt", *OPS))
    assert result.exit_code == 2
    assert "dev_seeds.jsonl" not in result.output and str(seeds) in result.output, result.output


def test_a_refused_rerun_leaves_the_dev_sample_as_it_was(tmp_path: Path, evol) -> None:
    """A rerun with another --instruction-field is refused, but only after dev_seeds.jsonl was
    rewritten from the new options: the directory no longer holds the sample its runs used."""
    rows = [
        {"instruction": r["instruction"], "text": r["instruction"] + " Briefly."}
        for r in seed_rows(8)
    ]
    seeds = write_seeds(tmp_path / "seeds.jsonl", rows)
    out = tmp_path / "opt"
    with FakeServer(responder=MethodResponder(proposals=("good",))) as server:
        args = options(server, out, "--candidates", "1", "--steps", "1", *OPS)
        assert evol("optimize", seeds, *args).exit_code == 0
        before = (out / "dev_seeds.jsonl").read_bytes()
        again = evol("optimize", seeds, *args, "--instruction-field", "text")
    assert again.exit_code != 0
    assert (out / "dev_seeds.jsonl").read_bytes() == before


# --- fix27: what the fixes promise, beyond the findings' tests --------------------------------


@pytest.mark.parametrize(
    ("changed", "flag"),
    [
        (("--model", "other-model"), "--model"),
        (("--judge-model", "other-model"), "--judge-model"),
        (("--evolve-model", "other-model"), "--evolve-model"),
        (("--instruction-field", "text"), "--instruction-field"),
        (("--dev-size", "5"), "--dev-size"),
    ],
)
def test_a_rerun_with_other_settings_names_the_option_in_optimize_s_words(
    tmp_path: Path, evol, changed: tuple[str, str], flag: str
) -> None:
    rows = [
        {"instruction": r["instruction"], "text": r["instruction"] + " Briefly."}
        for r in seed_rows(8)
    ]
    seeds = write_seeds(tmp_path / "seeds.jsonl", rows)
    out = tmp_path / "opt"
    with FakeServer(models=("fake-model", "other-model"), responder=MethodResponder()) as server:
        args = options(
            server, out, "--candidates", "1", "--steps", "1", *OPS, "--model", "fake-model"
        )
        first = evol("optimize", seeds, *args)
        assert first.exit_code == 0, first.output
        again = evol("optimize", seeds, *args, *changed)
    assert again.exit_code == 2
    assert f"was optimized with other settings ({flag}; recorded in history.json)" in again.output
    assert "use the same ones to resume, or another --out" in again.output


def test_a_history_of_an_earlier_format_is_refused_by_its_format(tmp_path: Path, evol) -> None:
    with FakeServer(responder=MethodResponder()) as server:
        seeds, out = finished(tmp_path, evol, server)
        saved = history(out) | {"format_version": 1}
        (out / "history.json").write_text(json.dumps(saved), encoding="utf-8")
        result = evol("optimize", seeds, *options(server, out, "--candidates", "1", *OPS))
    assert result.exit_code == 2
    assert "history.json: format 1 is not this evol's (2): choose another --out" in result.output


@pytest.mark.parametrize("chosen", ["current", "candidate_1/../../x", "candidate_01", "prompts"])
def test_a_history_whose_chosen_is_no_evaluated_candidate_is_refused(
    tmp_path: Path, evol, chosen: str
) -> None:
    with FakeServer(responder=MethodResponder()) as server:
        seeds, out = finished(tmp_path, evol, server)
        saved = history(out)
        saved["steps"][0]["chosen"] = chosen
        (out / "history.json").write_text(json.dumps(saved), encoding="utf-8")
        served = server.served
        result = evol("optimize", seeds, *options(server, out, "--candidates", "1", *OPS))
        assert server.served == served
    assert result.exit_code == 2
    assert f"history.json: step 1 chose {chosen!r}, not one of its evaluated candidates" in (
        result.output
    )


def test_a_history_whose_steps_are_renumbered_is_refused(tmp_path: Path, evol) -> None:
    with FakeServer(responder=MethodResponder()) as server:
        seeds, out = finished(tmp_path, evol, server)
        saved = history(out)
        saved["steps"][0]["step"] = 7
        (out / "history.json").write_text(json.dumps(saved), encoding="utf-8")
        result = evol("optimize", seeds, *options(server, out, "--candidates", "1", *OPS))
    assert result.exit_code == 2 and "step 1 is recorded as step 7" in result.output


def test_a_history_that_is_a_directory_names_the_remedy(tmp_path: Path, evol) -> None:
    with FakeServer(responder=MethodResponder()) as server:
        seeds, out = finished(tmp_path, evol, server)
        (out / "history.json").unlink()
        (out / "history.json").mkdir()
        result = evol("optimize", seeds, *options(server, out, "--candidates", "1", *OPS))
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1
    assert "history.json: cannot read it (" in result.output and "another --out" in result.output


def test_an_empty_seed_file_with_skipped_rows_says_so(tmp_path: Path, evol) -> None:
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text('{"text": "no instruction"}\n', encoding="utf-8")
    result = evol("optimize", seeds, "--out", tmp_path / "opt", "--skip-invalid", "--dry-run")
    assert result.exit_code == 2 and f"{seeds}: no valid seeds" in result.output, result.output


DEEPEN = "Make it deeper: <given>$instruction</given>"


@pytest.mark.parametrize(
    ("reply", "problem"),
    [
        (f'<template name="deepen">\n{DEEPEN}\n</template>', None),
        (f'Sure:\n<template name="deepen">\n{DEEPEN}\n</template>\nHope it helps.', None),
        (
            f'<template name="deepen">\n{DEEPEN}\n</template>\n'
            f'<template name="concretize">\n{DEEPEN}\n</template>',
            None,
        ),
        (
            f'<template name="deepen">\n{DEEPEN} Never write </template>.\nAsk a question.\n</template>',
            "deepen: </template> appears 2 times in its block, so where it ends is ambiguous",
        ),
        (
            f'<template name="deepen">\n{DEEPEN}\n</template> (I closed it with </template>)\n'
            f'<template name="concretize">\n{DEEPEN}\n</template>',
            "deepen: </template> appears 2 times",
        ),
        (
            f'<template name="deepen">\n{DEEPEN}\n<template name="concretize">\n{DEEPEN}\n</template>',
            "deepen: its block has no </template> (the reply may be cut short)",
        ),
        (
            f'<template name="deepen">\n{DEEPEN}\n</template>\n<template name="concretize">\n{DEEPEN}',
            "concretize: its block has no </template>",
        ),
    ],
)
def test_a_reply_whose_blocks_do_not_read_one_way_is_a_problem(
    reply: str, problem: str | None
) -> None:
    """fix27 (finding 2): the loop refuses such a reply (`reply_problem` before `refusal`)."""
    found = reply_problem(reply)
    assert found == problem if problem is None else found is not None and found.startswith(problem)
    if problem is None:  # a plain reply reads as written
        assert all(text == f"{DEEPEN}\n" for text in parse_method(reply).values())


def test_a_proposal_holding_the_closing_tag_is_refused_by_the_loop(tmp_path: Path, evol) -> None:
    seeds = write_seeds(tmp_path / "seeds.jsonl", seed_rows(6))
    out = tmp_path / "opt"
    text = deepen_with(f"{GOOD_PHRASE}\nNever write a </template> tag.\nEnd with a question.")
    reply = f'<template name="deepen">\n{text}\n</template>'
    with FakeServer(responder=ScriptedOptimizer(replies=(reply,))) as server:
        result = evol(
            "optimize", seeds, *options(server, out, "--candidates", "1", "--steps", "1", *OPS)
        )
    assert result.exit_code == 0, result.output
    candidate = history(out)["steps"][0]["candidates"][0]
    assert candidate["refused"].startswith("deepen: </template> appears 2 times in its block")
    assert not (out / "steps" / "1" / "candidate_1").exists()


def test_an_unreadable_proposal_is_a_refused_candidate_not_a_failure_forever(
    tmp_path: Path, evol
) -> None:
    """fix27 (finding 10): a reply the server sends with a lone surrogate is no chat completion
    every time it is asked; once the retries are spent the candidate is refused with the
    reason, the step ends, and a rerun asks nothing again."""
    seeds = write_seeds(tmp_path / "seeds.jsonl", seed_rows(6))
    out = tmp_path / "opt"
    reply = f'<template name="deepen">\n{deepen_with(GOOD_PHRASE + " " + chr(0xD800))}\n</template>'
    with FakeServer(responder=ScriptedOptimizer(replies=(reply,))) as server:
        args = options(server, out, "--candidates", "1", "--steps", "1", "--max-retries", "1", *OPS)
        result = evol("optimize", seeds, *args)
        assert result.exit_code == 0, result.output
        proposals = sum(kind_of(body) == "proposal" for body in server.requests)
        assert evol("optimize", seeds, *args).exit_code == 0
        assert sum(kind_of(body) == "proposal" for body in server.requests) == proposals == 2
    candidate = history(out)["steps"][0]["candidates"][0]
    assert candidate["refused"].startswith("the optimizer's reply could not be read (2 tries)")
    assert "not a chat completion" in candidate["refused"]


@pytest.mark.parametrize(
    "body",
    [b'{"choices": []}', b'{"choices": [{"message": {"content": "\\ud800"}}]}', b"<html>", b"[]"],
)
def test_a_body_that_is_no_chat_completion_is_a_garbled_reply_still_retried(body: bytes) -> None:
    from evol.errors import GarbledReply, TransientBackendError
    from evol.llm.openai_api import parse_reply
    from evol.secrets import Secrets

    with pytest.raises(GarbledReply, match="sent a reply that is not a chat completion") as raised:
        parse_reply(body, "http://x/v1", Secrets("sk-test"))
    assert isinstance(raised.value, TransientBackendError)


# --- links in place of optimize's own files ----------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "history.json",
        "dev_seeds.jsonl",
        "prompts/deepen.txt",
        "prompts",
        "steps",
        # below steps/: an evaluation's folder, its prompts and its run
        "steps/0",
        "steps/0/current",
        "steps/0/current/prompts",
        "steps/0/current/run",
        "steps/1/candidate_1",
    ],
)
def test_a_link_in_place_of_a_file_optimize_wrote_is_refused_and_its_target_untouched(
    tmp_path: Path, evol, name: str
) -> None:
    """A rerun reads its own files back before it rewrites them: a link in place of one (here
    to a copy of what was there, so that nothing else differs) is refused, never read
    through, as in a run directory."""
    with FakeServer(responder=MethodResponder(proposals=("good",))) as server:
        seeds, out = finished(tmp_path, evol, server)
        own, target = out / name, tmp_path / "elsewhere" / name
        target.parent.mkdir(parents=True)
        own.rename(target)
        own.symlink_to(target)
        held = {p: p.read_bytes() for p in [target, *target.rglob("*")] if p.is_file()}
        result = evol(
            "optimize", seeds, *options(server, out, "--candidates", "1", "--steps", "1", *OPS)
        )
    assert result.exit_code == 2, result.output
    assert result.stderr == f"evol: error: {own}: is a symbolic link; remove it (evol made none)\n"
    assert {p: p.read_bytes() for p in held} == held


@pytest.mark.parametrize("name", ["dev_seeds.jsonl", "prompts/deepen.txt"])
def test_a_folder_in_place_of_a_file_optimize_reads_back_names_optimize_s_remedy(
    tmp_path: Path, evol, name: str
) -> None:
    """Not the run directory's remedy (evol optimize has no --overwrite): its own."""
    with FakeServer(responder=MethodResponder(proposals=("good",))) as server:
        seeds, out = finished(tmp_path, evol, server)
        (out / name).unlink()
        (out / name).mkdir()
        result = evol(
            "optimize", seeds, *options(server, out, "--candidates", "1", "--steps", "1", *OPS)
        )
    assert result.exit_code == 2, result.output
    assert result.stderr == (
        f"evol: error: {out / name}: not a regular file: evol optimize keeps a file here: "
        "move it away, or choose another --out\n"
    )
