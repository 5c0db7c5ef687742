"""The lineages a report shows: the deepest ones, seed first, each step with its word diff
against its parent; each as an HTML list item."""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evol.dataset.show import DiffOp, word_diff
from evol.rundir.record_files import iter_records


@dataclass
class Step:
    """One record of a lineage as the report shows it."""

    generation: int
    operation: str | None
    instruction: str
    diff: list[tuple[DiffOp, str]] = field(default_factory=list)  # against its parent

    @property
    def added(self) -> str:
        """The words the rewrite added to its parent (the instruction itself for a seed)."""
        if not self.diff:
            return self.instruction
        return " ... ".join(text for op, text in self.diff if op == "insert") or "(words removed)"


def sample_lineages(run_dir: Path, count: int) -> list[list[Step]]:
    """The deepest lineages (seed first), up to `count`, following kept records from the seed."""
    records = list(iter_records(run_dir))
    present = {record["id"] for record in records}
    children: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        children.setdefault(record["parent_id"], []).append(record)
    # A lineage starts at its seed, or at its oldest record on disk when the seed's is missing.
    starts = [record for record in records if record["parent_id"] not in present]

    def chain(record: dict[str, Any]) -> list[Step]:
        steps = [Step(record["generation"], record["operation"], record["instruction"])]
        while kids := children.get(record["id"]):
            parent, record = record, max(kids, key=lambda kid: kid["round"])
            diff = word_diff(parent["instruction"], record["instruction"])
            steps.append(
                Step(record["generation"], record["operation"], record["instruction"], diff)
            )
        return steps

    chains = [chain(start) for start in starts]
    chains.sort(key=len, reverse=True)  # stable: file order among equals
    return chains[:count]


def lineage_item(chain: list[Step]) -> str:
    """The lineage as an item of the page's list, its text escaped, its diffs marked."""

    def step_text(step: Step) -> str:
        if not step.diff:
            return html.escape(f"[gen {step.generation}] {step.instruction}")
        marks = {"equal": "{}", "insert": "<ins>{}</ins>", "delete": "<del>{}</del>"}
        words = " ".join(marks[op].format(html.escape(text)) for op, text in step.diff)
        return f"[gen {step.generation}] {words}"

    parts = [step_text(chain[0])]
    for step in chain[1:]:
        parts.append(
            f'<span class="op">&rarr; {html.escape(step.operation or "")}</span> {step_text(step)}'
        )
    return "<li>" + " ".join(parts) + "</li>"
