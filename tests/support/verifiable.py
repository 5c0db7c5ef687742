"""Verifiable runs against the fake answerer: the constraints it meets or fails on purpose
(POOL), seeds to evolve, a `--verifiable` run of them (verifiable_run), an answerer whose second
answer fails an answer rule (SecondAnswerBad), a record's constraints, the ones an answer fails,
and how many answers the run draws by the answerer's own rule."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evol.method.constraints import Constraint, check
from tests.support.fake_server import VerifiableResponder, constrained_answer, meets
from tests.support.runs import run_args, write_seeds

# The word-count constraint, the one whose statement a rewrite garbles most ways.
WORDS = "length_constraints:number_words"

# The constraints the fake answerer can meet (or fail) on purpose.
POOL = (
    "punctuation:no_comma,change_case:english_lowercase,startend:end_checker,"
    "detectable_content:postscript,keywords:existence,length_constraints:number_words"
)
SEEDS = [
    {"instruction": "Explain why the sky is blue."},
    {"instruction": "Describe a walk in the park.", "input": "It rained in the morning."},
    {"instruction": "Summarise the plot of a heist film."},
    {"instruction": "Compare two ways to brew coffee."},
    {"instruction": "Give advice to a new gardener."},
    {"instruction": "Write a short note to a neighbour."},
    {"instruction": "Explain how a lock and key work."},
    {"instruction": "Describe the life of a honeybee."},
]


def constraints_of(record: dict[str, Any]) -> list[Constraint]:
    """The constraints a written record carries (none for a plain rewrite)."""
    return [Constraint.model_validate(c) for c in record.get("constraints") or []]


def fails(answer: str, constraints: list[Constraint]) -> list[str]:
    """The ids of the constraints that `answer` does not strictly meet."""
    return [v.constraint.id for v in check(answer, constraints) if not v.strict]


def expected_attempts(text: str, pass_rate: float, extra: int) -> int | None:
    """The answers the run draws for an instruction, by the fake answerer's own rule; None when
    none of 1 + extra meets the constraints."""
    return next((k for k in range(1, extra + 2) if meets(text, k, pass_rate)), None)


def ifeval_input(ids: list[str], kwargs: list[Any], response: str) -> dict[str, Any]:
    return {
        "key": 1,
        "prompt": "p",
        "instruction_id_list": ids,
        "kwargs": kwargs,
        "response": response,
    }


def write_rows(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    return path


def verify_report(evol, path: Path) -> tuple[int, dict[str, Any]]:
    result = evol("verify", path, "--json")
    return result.exit_code, json.loads(result.stdout.strip().splitlines()[-1])


def verify_in_child(path: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "evol", "verify", str(path), "--json"],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )


def open_instruct_constraints(label: str) -> list[tuple[str, dict[str, Any]]]:
    """open-instruct's IFEvalVerifier reading a `ground_truth` label."""
    constraint_dict = ast.literal_eval(label)
    constraint_dict = constraint_dict[0]
    if isinstance(constraint_dict, str):
        constraint_dict = json.loads(constraint_dict)
    pairs = zip(constraint_dict["instruction_id"], constraint_dict["kwargs"], strict=True)
    return [(key, {k: v for k, v in (args or {}).items() if v is not None}) for key, args in pairs]


def verifiable_run(evol, server, tmp_path: Path, *extra: object, rows=SEEDS, name="run") -> Path:
    """`evol run --verifiable` of `rows` against `server` into tmp_path/<name>; it must succeed."""
    seeds, out = write_seeds(tmp_path / f"{name}.jsonl", rows), tmp_path / name
    result = evol(*run_args(server, seeds, out, "--verifiable", *extra))
    assert result.exit_code == 0, result.output
    return out


@dataclass
class SecondAnswerBad(VerifiableResponder):
    """Answer 1 fails the constraints, answer 2 is `bad`, answer 3 meets them."""

    bad: object = "Sorry, I cannot help with that."

    def answer(self, instruction: str):  # type: ignore[override]
        if "(v" not in instruction:
            return super().answer(instruction)
        with self.lock:
            self.answers[instruction] += 1
            attempt = self.answers[instruction]
        if attempt == 2:
            return self.bad
        return constrained_answer(instruction, meet=attempt >= 3)
