"""What a method did on the development set, read back from its evaluation run's files.

Every evolution the run attempted is one trajectory: the parent instruction, the rewrite, the
answer, and the elimination reason (or "kept"). A seed's own answer is not an evolution and is
left out. The failure rate of a method is its eliminated evolutions over those attempted, and
it is counted per seed so that two methods run on the same seeds can be compared seed by seed.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from evol.rundir.record_files import iter_records

KEPT = "kept"


@dataclass(frozen=True)
class Trajectory:
    """One evolution attempt: what the evolver was given, what it wrote, and how it ended."""

    id: str
    root_id: str
    operation: str
    parent: str
    rewrite: str
    answer: str
    outcome: str  # an elimination reason, or "kept"

    @property
    def failed(self) -> bool:
        return self.outcome != KEPT


@dataclass(frozen=True)
class Outcomes:
    """Evolutions attempted and eliminated, in all and per seed (root id)."""

    attempted: Counter[str]
    eliminated: Counter[str]

    @property
    def failure_rate(self) -> float | None:
        """Eliminated over attempted; None when the run attempted nothing."""
        total = sum(self.attempted.values())
        return sum(self.eliminated.values()) / total if total else None

    def per_seed(self) -> dict[str, float]:
        """Each seed's own failure rate (seeds with no attempt are left out)."""
        return {
            root: self.eliminated[root] / attempts
            for root, attempts in self.attempted.items()
            if attempts
        }


def read_trajectories(run_dir: Path) -> list[Trajectory]:
    """Every evolution attempt of a run, kept ones first, each file in its own order."""
    kept = list(iter_records(run_dir))
    eliminated = list(iter_records(run_dir, eliminated=True))
    instructions = {record["id"]: record["instruction"] for record in [*kept, *eliminated]}
    found = []
    for record, outcome in [
        *((record, KEPT) for record in kept),
        *((record, record["reason"]) for record in eliminated),
    ]:
        if record["operation"] is None:  # a seed (or its failed answer), not an evolution
            continue
        found.append(
            Trajectory(
                id=record["id"],
                root_id=record["root_id"],
                operation=record["operation"],
                parent=instructions.get(record["parent_id"], ""),
                rewrite=record["instruction"],
                answer=record["output"] or "",
                outcome=outcome,
            )
        )
    return found


def outcomes(trajectories: list[Trajectory]) -> Outcomes:
    """The attempts and eliminations of `trajectories`, per seed."""
    attempted, eliminated = Counter[str](), Counter[str]()
    for trajectory in trajectories:
        attempted[trajectory.root_id] += 1
        if trajectory.failed:
            eliminated[trajectory.root_id] += 1
    return Outcomes(attempted, eliminated)
