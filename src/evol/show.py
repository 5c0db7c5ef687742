"""`evol show RUN ID`: one lineage, seed to newest evolution, as a tree.

Each kept step shows its operation, the judge's verdict and what the rewrite did to its parent
as a word diff (`[+added+]`, `[-removed-]`); the attempts eliminated along the way hang under
the instruction they tried to evolve, with their reason and detail. `word_diff` is also what
the report's lineage view shows.
"""

from __future__ import annotations

import difflib
import shutil
import textwrap
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from evol.errors import UsageError
from evol.manifest import read_manifest
from evol.store import iter_records

DiffOp = Literal["equal", "added", "removed"]


class Attempt(BaseModel):
    """An evolution of a step that was eliminated."""

    id: str
    round: int
    operation: str | None
    reason: str
    detail: str | None
    instruction: str


class Step(BaseModel):
    """A kept record of the lineage, with what grew from it."""

    id: str
    generation: int
    round: int
    operation: str | None
    judge: str | None
    instruction: str
    input: str
    output: str | None
    kept: bool
    diff: list[tuple[DiffOp, str]]
    attempts: list[Attempt]
    children: list[Step]


class Lineage(BaseModel):
    run: str
    root_id: str
    tree: Step


def word_diff(parent: str, child: str) -> list[tuple[DiffOp, str]]:
    """What `child` changed in `parent`, word by word: runs of equal, added, removed words."""
    before, after = parent.split(), child.split()
    runs: list[tuple[DiffOp, str]] = []
    matcher = difflib.SequenceMatcher(a=before, b=after, autojunk=False)
    for op, a0, a1, b0, b1 in matcher.get_opcodes():
        if op == "equal":
            runs.append(("equal", " ".join(after[b0:b1])))
            continue
        if op in ("delete", "replace"):
            runs.append(("removed", " ".join(before[a0:a1])))
        if op in ("insert", "replace"):
            runs.append(("added", " ".join(after[b0:b1])))
    return runs


def render_diff(runs: list[tuple[DiffOp, str]]) -> str:
    marks = {"equal": "{}", "added": "[+{}+]", "removed": "[-{}-]"}
    return " ".join(marks[op].format(text) for op, text in runs)


def lineage(run_dir: Path, record_id: str) -> Lineage:
    """The lineage of the seed that `record_id` (any record of it) descends from."""
    read_manifest(run_dir)
    kept = list(iter_records(run_dir))
    eliminated = list(iter_records(run_dir, eliminated=True))
    root_id = next((r["root_id"] for r in kept + eliminated if r["id"] == record_id), None)
    if root_id is None:
        raise UsageError(f"{run_dir} has no record {record_id!r}")
    mine = [r for r in kept if r["root_id"] == root_id]
    failed = [r for r in eliminated if r["root_id"] == root_id]
    seed = next((r for r in mine + failed if r["generation"] == 0), None)
    if seed is None:
        raise UsageError(f"{run_dir}: the seed {root_id!r} of {record_id!r} has no record")
    return Lineage(run=str(run_dir), root_id=root_id, tree=_step(seed, "", mine, failed))


def _step(
    record: dict[str, Any], parent: str, kept: list[dict[str, Any]], failed: list[dict[str, Any]]
) -> Step:
    children = sorted((r for r in kept if r["parent_id"] == record["id"]), key=lambda r: r["round"])
    attempts = sorted(
        (r for r in failed if r["parent_id"] == record["id"]), key=lambda r: r["round"]
    )
    is_seed_answer_failure = record.get("reason") is not None
    return Step(
        id=record["id"],
        generation=record["generation"],
        round=record["round"],
        operation=record.get("operation"),
        judge=record.get("judge"),
        instruction=record["instruction"],
        input=record.get("input") or "",
        output=record.get("output"),
        kept=not is_seed_answer_failure,
        diff=word_diff(parent, record["instruction"]) if parent else [],
        attempts=[
            Attempt(
                id=r["id"],
                round=r["round"],
                operation=r.get("operation"),
                reason=r["reason"],
                detail=r.get("detail"),
                instruction=r["instruction"],
            )
            for r in attempts
        ],
        children=[_step(child, record["instruction"], kept, failed) for child in children],
    )


def format_lineage(found: Lineage, width: int | None = None) -> str:
    """The lineage as an indented tree, wrapped to the terminal's width."""
    width = width or shutil.get_terminal_size((100, 24)).columns
    lines: list[str] = []
    _format(found.tree, "", True, lines, width)
    return "\n".join(lines)


def _format(step: Step, indent: str, last: bool, lines: list[str], width: int) -> None:
    branch = "" if not indent and not lines else ("└─ " if last else "├─ ")
    head = [step.id, f"gen {step.generation}"]
    if step.operation:
        head += [f"round {step.round}", step.operation, f"judge: {step.judge or '-'}"]
    else:
        head.append("seed" if step.kept else "seed (its answer was eliminated)")
    lines.append(f"{indent}{branch}{'  '.join(head)}")
    inner = indent + ("" if not branch else ("   " if last else "│  "))
    text = render_diff(step.diff) if step.diff else step.instruction
    _wrapped(text, inner + "   ", lines, width)
    if step.input:
        _wrapped(f"input: {step.input}", inner + "   ", lines, width)
    for attempt in step.attempts:
        lines.append(
            f"{inner}   ✗ {attempt.id}  round {attempt.round}  {attempt.operation or '-'}  "
            f"eliminated: {attempt.reason}"
        )
        if attempt.detail:
            _wrapped(attempt.detail, inner + "       ", lines, width)
    for number, child in enumerate(step.children):
        _format(child, inner, number == len(step.children) - 1, lines, width)


def _wrapped(text: str, indent: str, lines: list[str], width: int) -> None:
    room = max(20, width - len(indent))
    for paragraph in text.splitlines() or [""]:
        lines += [indent + piece for piece in textwrap.wrap(paragraph, room) or [""]]
