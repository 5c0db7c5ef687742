"""What a run holds, counted: records kept per generation, eliminated per reason (and per
generation), kept and eliminated per operation, tokens per role.

run.json and `evol stats` count with this same code: the store feeds it every record it reads
or writes, `evol stats` every record of a finished run.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any


@dataclass
class RunCounts:
    """Totals over every record seen, kept current as records are added."""

    kept: Counter[int] = field(default_factory=Counter)
    eliminated: Counter[str] = field(default_factory=Counter)
    eliminated_by_generation: dict[int, Counter[str]] = field(
        default_factory=lambda: defaultdict(Counter)
    )
    operations: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    usage: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))

    def add(self, record: dict[str, Any], reason: str | None) -> None:
        """Count one record; `reason` is set for an eliminated one."""
        if reason:
            self.eliminated[reason] += 1
            self.eliminated_by_generation[record["generation"]][reason] += 1
        else:
            self.kept[record["generation"]] += 1
        if record.get("operation"):
            self.operations[record["operation"]]["eliminated" if reason else "kept"] += 1
        for role, tokens in (record.get("usage") or {}).items():
            for name, value in tokens.items():
                if isinstance(value, int):
                    self.usage[role][name] += value

    def as_dict(self) -> dict[str, Any]:
        """The counts as run.json records them."""
        return {
            "kept_per_generation": {str(k): v for k, v in sorted(self.kept.items())},
            "kept": sum(self.kept.values()),
            "eliminated_per_reason": dict(sorted(self.eliminated.items())),
            "eliminated": sum(self.eliminated.values()),
            "operations": {op: dict(c) for op, c in sorted(self.operations.items())},
            "usage": {role: dict(c) for role, c in sorted(self.usage.items())},
        }
