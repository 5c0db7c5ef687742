"""Where each seed's lineage stands, from the records on disk: what a round means to a resume.

A lineage has settled its seed once generation 0's record exists (kept, or eliminated when
its answer failed a rule), and has done round k once any record of round k exists. Its tip is
its newest kept evolution: what its next round evolves. This is the engine's knowledge; the
store only reads and writes the files.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(slots=True)
class Tip:
    """The newest kept instruction of a lineage: what its next round evolves."""

    id: str
    instruction: str
    input: str
    generation: int
    constraints: list[dict[str, Any]] | None = None  # what its evolutions carry on (#26)


@dataclass(slots=True)
class LineageProgress:
    """Where one seed's lineage stands."""

    seed_done: bool = False
    rounds_done: int = 0
    tip: Tip | None = None  # None while the seed itself is the tip


class LineageIndex:
    """Every lineage's progress, fed the records one at a time (in any order)."""

    def __init__(self, generations: int):
        self.generations = generations
        self._progress: dict[str, LineageProgress] = {}

    def add(self, record: dict[str, Any], reason: str | None) -> None:
        """Take one record into account; `reason` is set for an eliminated one."""
        progress = self._progress.setdefault(record["root_id"], LineageProgress())
        round_ = record["round"]
        if round_ == 0:
            progress.seed_done = True
            return
        progress.rounds_done = max(progress.rounds_done, round_)
        if reason is None and (
            progress.tip is None or record["generation"] > progress.tip.generation
        ):
            progress.tip = Tip(
                record["id"],
                record["instruction"],
                record.get("input", ""),
                record["generation"],
                record.get("constraints"),
            )
        if progress.rounds_done >= self.generations and progress.tip is not None:
            # A finished lineage is never evolved again: keep its position, drop its text.
            progress.tip = Tip(progress.tip.id, "", "", progress.tip.generation)

    def progress(self, root_id: str) -> LineageProgress:
        """Where the lineage of seed `root_id` stands (fresh if never seen)."""
        return self._progress.get(root_id) or LineageProgress()

    def steps_done(self) -> int:
        """Seed answers plus evolution rounds already on disk (for progress after a resume)."""
        return sum(
            p.seed_done + min(p.rounds_done, self.generations) for p in self._progress.values()
        )
