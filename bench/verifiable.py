"""Verifiable evolution, measured (`make bench`): rejection sampling against a fake answerer.

The same seeds go through `evol run --verifiable` against the tests' fake server
(tests/support/fake_server.py's VerifiableResponder): its evolver writes each added constraint into
the rewrite in IFEval's own words, and each answer it gives meets every constraint of its
instruction with probability p (a hash of the instruction and the answer's number, so the
figures are the same every time), else fails each of them. Answers are about ANSWER_WORDS
words either way, as a real model's are. One generation: each evolution carries one constraint.

Reported for each p, with --answer-attempts K:

- the share of kept answers that meet their constraints, checked again here by the registry
  (must be 1.0: the run keeps no other);
- attempts per kept record, against the expected figure: drawing until the first success, at
  most K + 1 times, a kept record took sum(k p (1-p)^(k-1), k = 1..K+1) / (1 - (1-p)^(K+1))
  answers, close to min(1/p, K + 1) for a small K p; and the share eliminated as
  constraint_unmet against (1-p)^(K+1);
- tokens per kept evolution (prompt and completion, every role, the eliminated evolutions'
  included; the seeds' answers, the same either way, left out) against a plain run of the same
  seeds with --operations add_constraints, whose answers are as long: the price of the
  sampling and of the longer templates;
- the same run with --answer-n ("answer_n"): the further answers in one request with n = K.
  Its records must be the sequential run's (their usage aside); reported are its answer
  requests and the answer role's tokens per kept evolution against drawing one at a time. The
  seeds' prompts are short beside their 150-word answers, where one request costs more
  tokens; "answer_n_long_input" repeats the pair at p = 0.5 with a LONG_INPUT_WORDS-word input
  in each seed, where it costs fewer (docs/verifiable.md, "When it pays").

Then the checkers' CPU on hostile answers ("checker_cpu"): the CPU seconds one check() takes on
answers shaped to be slow (a long run of one character under IFEval's postscript, placeholder and
title regexes, which are quadratic in it; a 1 MB answer of prose under a word-tokenizing check),
each in a child process capped at CHECK_CPU_CAP seconds, against the target of CHECK_CPU_TARGET
seconds per answer. These are open findings of attack26 (a hostile server can make a verifiable
run spend seconds of CPU per answer); they are figures here rather than unit tests because how
long a checker takes depends on the machine.

Figures go to bench/results.json under "verifiable". The process exits non-zero when a kept
answer fails its constraints or a run's counts disagree with the files.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the package tests

from evol.method.constraints import Constraint, check  # noqa: E402
from tests.support.fake_server import FakeServer, VerifiableResponder  # noqa: E402

RESULTS = Path(__file__).with_name("results.json")
ENV = {k: v for k, v in os.environ.items() if not k.startswith(("EVOL_", "OPENAI_"))}
# The constraints the fake answerer can meet or fail on purpose (two of them unworded, so the
# judge's longer prompt is paid for too).
POOL = (
    "punctuation:no_comma,change_case:english_lowercase,startend:end_checker,"
    "detectable_content:postscript,keywords:existence"
)
PASS_RATES = (0.2, 0.5, 0.8, 1.0)
ANSWER_WORDS = 150
TOPICS = ("tides", "bread", "bridges", "bees", "glaciers", "chess", "radio", "maps", "ink", "wind")


LONG_INPUT_WORDS = 600


def write_seeds(path: Path, count: int, input_words: int = 0) -> Path:
    text = " ".join(f"line{w}" for w in range(input_words))
    lines = [
        json.dumps(
            {"instruction": f"Explain {TOPICS[i % len(TOPICS)]} to a pupil, case {i}."}
            | ({"input": text} if input_words else {})
        )
        for i in range(count)
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def run(
    seeds: Path, out: Path, pass_rate: float, attempts: int | None, *options: str
) -> dict[str, Any]:
    """One run against a fresh fake server, --verifiable with `attempts` (None: a plain run
    with --operations add_constraints) and `options`; its summary, checked against its files."""
    responder = VerifiableResponder(pass_rate=pass_rate, length=ANSWER_WORDS)
    method = (
        ["--operations", "add_constraints"]
        if attempts is None
        else ["--verifiable", "--constraint-ids", POOL, "--answer-attempts", str(attempts)]
    )
    with FakeServer(responder=responder, record=False) as server:
        command = [
            sys.executable, "-m", "evol", "run", str(seeds), "--out", str(out), "--quiet",
            "--base-url", server.base_url, "--generations", "1", "--concurrency", "32", *method,
            *options,
        ]  # fmt: skip
        subprocess.run(command, env=ENV, check=True)
    summary = json.loads((out / "run.json").read_text())["summary"]
    kept = len(records(out / "dataset.jsonl"))
    if summary["kept"] != kept:
        raise SystemExit(f"{out}: run.json says {summary['kept']} kept, the dataset {kept}")
    return summary


def evolution_tokens(summary: dict[str, Any], out: Path) -> int:
    """Tokens of every role in all, less those of the seeds' answers (gen_0)."""
    seeds = sum(
        sum(role.values()) for r in records(out / "gen_0.jsonl") for role in r["usage"].values()
    )
    return sum(sum(role.values()) for role in summary["usage"].values()) - seeds


def expected_attempts(p: float, extra: int) -> float:
    """Answers a kept record took, on average, drawing at most 1 + extra times."""
    draws = range(1, extra + 2)
    return sum(k * p * (1 - p) ** (k - 1) for k in draws) / (1 - (1 - p) ** (extra + 1))


def measure_rate(work: Path, seeds: Path, p: float, extra: int, plain: float) -> dict[str, Any]:
    out = work / f"p{p}"
    summary = run(seeds, out, p, extra)
    kept = [r for r in records(out / "gen_1.jsonl")]
    gone = records(out / "eliminated.jsonl") if (out / "eliminated.jsonl").exists() else []
    passing = sum(
        all(v.strict for v in check(r["output"], [Constraint(**c) for c in r["constraints"]]))
        for r in kept
    )
    unmet = sum(r["reason"] == "constraint_unmet" for r in gone)
    sampled = len(kept) + unmet  # the rewrites that stated their constraint
    per_kept = evolution_tokens(summary, out) / max(1, len(kept))
    return {
        "kept_evolutions": len(kept),
        "kept_answers_passing": round(passing / len(kept), 4) if kept else None,
        "attempts_per_kept_record": round(sum(r["attempts"] for r in kept) / len(kept), 3)
        if kept
        else None,
        "attempts_expected": round(expected_attempts(p, extra), 3),
        "min_1_over_p_and_k_plus_1": round(min(1 / p, extra + 1), 3),
        "constraint_unmet_share": round(unmet / sampled, 3) if sampled else None,
        "constraint_unmet_expected": round((1 - p) ** (extra + 1), 3),
        "eliminated": summary["eliminated_per_reason"],
        "answer_requests": summary["requests"].get("answer", 0),
        "tokens_per_kept_evolution": round(per_kept, 1),
        "extra_tokens_per_kept_evolution": round(per_kept - plain, 1),
        "extra_share": round(per_kept / plain - 1, 3),
        "answer_n": compare_answer_n(out, work / f"p{p}-n", seeds, p, extra, len(kept)),
    }


def answer_tokens(summary: dict[str, Any], out: Path) -> int:
    """The answer role's tokens, less those of the seeds' answers (gen_0)."""
    seeds = sum(sum(r["usage"].get("answer", {}).values()) for r in records(out / "gen_0.jsonl"))
    return sum(summary["usage"].get("answer", {}).values()) - seeds


def compare_answer_n(
    sequential: Path, out: Path, seeds: Path, p: float, extra: int, kept: int
) -> dict[str, Any]:
    """The run of `sequential` again with --answer-n: the same records (usage aside), its
    answer requests, and the answer role's tokens per kept evolution both ways."""
    summary = run(seeds, out, p, extra, "--answer-n")
    before = json.loads((sequential / "run.json").read_text())["summary"]
    for name in ("dataset.jsonl", "eliminated.jsonl"):
        one, other = (
            sorted(
                (
                    json.dumps({k: v for k, v in r.items() if k != "usage"})
                    for r in records(d / name)
                ),
            )
            if (d / name).exists()
            else []
            for d in (sequential, out)
        )
        if one != other:
            raise SystemExit(f"{out}/{name}: --answer-n kept other records than one at a time")
    return {
        "answer_requests": summary["requests"].get("answer", 0),
        "answer_requests_one_at_a_time": before["requests"].get("answer", 0),
        "answer_tokens_per_kept_evolution": round(answer_tokens(summary, out) / max(1, kept), 1),
        "answer_tokens_one_at_a_time": round(answer_tokens(before, sequential) / max(1, kept), 1),
    }


def measure(work: Path, count: int, extra: int) -> dict[str, Any]:
    seeds = write_seeds(work / "seeds.jsonl", count)
    plain_summary = run(seeds, work / "plain", 1.0, None)
    plain_kept = len(records(work / "plain" / "gen_1.jsonl"))
    plain = evolution_tokens(plain_summary, work / "plain") / plain_kept
    figures: dict[str, Any] = {
        "seeds": count,
        "generations": 1,
        "answer_attempts": extra,
        "answer_words": ANSWER_WORDS,
        "constraint_pool": POOL.split(","),
        "plain_add_constraints": {
            "kept_evolutions": plain_kept,
            "tokens_per_kept_evolution": round(plain, 1),
            "answer_requests": plain_summary["requests"].get("answer", 0),
        },
    }
    for p in PASS_RATES:
        figures[f"p={p}"] = measure_rate(work, seeds, p, extra, plain)
    long_seeds = write_seeds(work / "long.jsonl", count, LONG_INPUT_WORDS)
    long_run = work / "long"
    run(long_seeds, long_run, 0.5, extra)
    kept = len(records(long_run / "gen_1.jsonl"))
    figures["answer_n_long_input"] = {
        "input_words": LONG_INPUT_WORDS,
        "p": 0.5,
        **compare_answer_n(long_run, work / "long-n", long_seeds, 0.5, extra, kept),
    }
    return figures


CHECK_CPU_TARGET = 1.0
CHECK_CPU_CAP = 30

SLOW_ANSWERS = {
    "postscript, 20k spaces": (
        "detectable_content:postscript",
        {"postscript_marker": "P.S."},
        "'x' + ' ' * 20_000 + 'x'",
    ),
    "placeholders, 20k '['": (
        "detectable_content:number_placeholders",
        {"num_placeholders": 1},
        "'[' * 20_000",
    ),
    "title, 10k '<<'": ("detectable_format:title", {}, "'<<' * 10_000"),
    "capital words, 1 MB of prose": (
        "change_case:capital_word_frequency",
        {"capital_frequency": 3, "capital_relation": "less than"},
        "'The quick brown fox jumps over the lazy dog. ' * 23_000",
    ),
}


def check_cpu_seconds(instruction_id: str, kwargs: dict[str, Any], answer: str) -> float | None:
    """CPU seconds one check() takes on `answer` (an expression), in a child capped at
    CHECK_CPU_CAP seconds; None where the cap was reached."""
    code = (
        "import resource\n"
        "from evol.errors import ConstraintError\n"
        "from evol.method.constraints import Constraint, check\n"
        "check('Warm up. Twice.', [Constraint(id='change_case:capital_word_frequency',"
        " kwargs={'capital_frequency': 1, 'capital_relation': 'at least'})])\n"
        f"answer = {answer}\n"
        f"c = Constraint(id={instruction_id!r}, kwargs={kwargs!r})\n"
        "def cpu():\n"
        "    used = resource.getrusage(resource.RUSAGE_SELF)\n"
        "    return used.ru_utime + used.ru_stime\n"
        "start = cpu()\n"
        f"resource.setrlimit(resource.RLIMIT_CPU, (int(start) + {CHECK_CPU_CAP}, -1))\n"
        "try:\n    check(answer, [c])\nexcept ConstraintError:\n    pass\n"
        "print(cpu() - start)\n"
    )
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    return round(float(child.stdout), 2) if child.returncode == 0 else None


def checker_cpu() -> dict[str, Any]:
    seconds = {name: check_cpu_seconds(*case) for name, case in SLOW_ANSWERS.items()}
    return {
        "target_s": CHECK_CPU_TARGET,
        "cap_s": CHECK_CPU_CAP,
        "seconds": seconds,
        "over_target": [n for n, s in seconds.items() if s is None or s > CHECK_CPU_TARGET],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=400)
    parser.add_argument("--answer-attempts", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="evol-bench-verifiable-"))
    figures = measure(work, args.seeds, args.answer_attempts)
    figures["checker_cpu"] = checker_cpu()
    for name, value in figures.items():
        print(f"{name:>24}: {value}")
    failing = [
        name
        for name, value in figures.items()
        if isinstance(value, dict) and value.get("kept_answers_passing") not in (None, 1.0)
    ]
    if failing:
        raise SystemExit(f"kept answers that fail their constraints at {', '.join(failing)}")
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results["verifiable"] = figures
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
