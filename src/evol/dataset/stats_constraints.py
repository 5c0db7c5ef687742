"""The figures of verifiable constraints (#26) in `evol stats`: what the kept records carry, per
generation, and how often the answers drawn met each constraint id."""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from typing import Any

from pydantic import BaseModel, Field

from evol.method.elimination import Reason


class ConstraintGeneration(BaseModel):
    """The kept records of one generation that carry verifiable constraints."""

    records: int
    constraints_mean: float
    constraints_max: int
    attempts_mean: float = Field(description="answers drawn per record, the kept one included")


class ConstraintRate(BaseModel):
    """How often the answers checked against one constraint id met it."""

    answers: int = Field(description="answers checked against it")
    met: int
    rate: float


class ConstraintStats(BaseModel):
    """Verifiable constraints: what the records carry, and how often answers met them.

    The pass rates count every answer drawn for a record that finished its sampling (kept, or
    eliminated as constraint_unmet): the ones thrown away as well as the one kept."""

    per_generation: dict[str, ConstraintGeneration]
    pass_rate: dict[str, ConstraintRate]
    kept: int = Field(description="kept records with constraints")
    attempts_mean: float | None = Field(description="answers drawn per kept record")
    attempts: dict[str, int] = Field(description="kept records by the answers they took")
    lost: int = Field(description="rewrites eliminated as constraint_lost")
    unmet: int = Field(description="records eliminated as constraint_unmet")


class ConstraintTally:
    """The constraint figures of `ConstraintStats`, fed one record at a time."""

    def __init__(self) -> None:
        self.carried: dict[int, list[int]] = defaultdict(list)  # generation -> constraints each
        self.tried: dict[int, list[int]] = defaultdict(list)  # generation -> attempts each
        self.answers: Counter[str] = Counter()  # constraint id -> answers checked against it
        self.failed: Counter[str] = Counter()
        self.lost = self.unmet = 0
        self.seen = False

    def add(self, record: dict[str, Any], reason: str | None) -> None:
        constraints = record.get("constraints")
        if not isinstance(constraints, list) or not constraints:
            return
        self.seen = True
        self.lost += reason == Reason.CONSTRAINT_LOST
        self.unmet += reason == Reason.CONSTRAINT_UNMET
        attempts = record.get("attempts")
        # Every answer checked by code counts, whatever ended the record afterwards (the
        # answer check, say): its file says how many there were and which ids they failed.
        if not isinstance(attempts, int) or isinstance(attempts, bool):
            return
        ids = [c.get("id") for c in constraints if isinstance(c, dict)]
        unmet = record.get("unmet") if isinstance(record.get("unmet"), dict) else {}
        for cid in ids:
            self.answers[str(cid)] += attempts
            failed = unmet.get(cid, 0)
            self.failed[str(cid)] += failed if isinstance(failed, int) else 0
        if reason is None:
            self.carried[record["generation"]].append(len(constraints))
            self.tried[record["generation"]].append(attempts)

    def stats(self) -> ConstraintStats | None:
        if not self.seen:
            return None
        tries = [count for counts in self.tried.values() for count in counts]
        return ConstraintStats(
            per_generation={
                str(g): ConstraintGeneration(
                    records=len(carried),
                    constraints_mean=round(statistics.mean(carried), 4),
                    constraints_max=max(carried),
                    attempts_mean=round(statistics.mean(self.tried[g]), 4),
                )
                for g, carried in sorted(self.carried.items())
            },
            pass_rate={
                cid: ConstraintRate(
                    answers=answers,
                    met=answers - self.failed[cid],
                    rate=round((answers - self.failed[cid]) / answers, 4) if answers else 0.0,
                )
                for cid, answers in sorted(self.answers.items())
            },
            kept=len(tries),
            attempts_mean=round(statistics.mean(tries), 4) if tries else None,
            attempts={str(n): c for n, c in sorted(Counter(tries).items())},
            lost=self.lost,
            unmet=self.unmet,
        )
