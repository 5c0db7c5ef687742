"""Verifiable runs against the fake answerer: the constraints it meets or fails on purpose
(POOL), seeds to evolve, a record's constraints, the ones an answer fails, and how many answers
the run draws by the answerer's own rule."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from evol.method.constraints import Constraint, check
from tests.support.fake_server import meets

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
