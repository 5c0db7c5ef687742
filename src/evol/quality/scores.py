"""scores.jsonl, the scores of a run: its lines, the digests that tell a score of the text
as it is now from a stale one, what each scorer and model has scored, and the file opened
for appending."""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, BinaryIO, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field

from evol.errors import (
    RunDirError,
)
from evol.jsonl import (
    append_line,
    open_for_append,
    open_to_read,
    repair_torn_tail,
    scan,
)
from evol.rundir.layout import SCORES
from evol.rundir.record_files import iter_records
from evol.rundir.records import compose

ScorerName = Literal["difficulty", "complexity", "quality"]
SCORERS: tuple[ScorerName, ...] = ("difficulty", "complexity", "quality")
REPLY_KEPT = 300  # characters of each reply kept in scores.jsonl, to see what a model said


# -- the sidecar: scores.jsonl ---------------------------------------------------------------


FiniteScore = Annotated[float, Field(ge=0, allow_inf_nan=False)]


class ScoreLine(BaseModel):
    """One line of scores.jsonl: a record's score (a lineage's scores for complexity)."""

    model_config = ConfigDict(extra="ignore")

    scorer: ScorerName
    model: str
    id: str = Field(description="the record's id; the lineage's root id for complexity")
    digest: str = Field(description="of the text scored: a score of other text is not reused")
    score: FiniteScore | None = None
    scores: dict[str, FiniteScore | None] | None = Field(None, description="complexity: per record")
    source: str | None = Field(None, description="logprobs, text or mixed; None when missing")
    asked: int = Field(1, description="2 when the first reply gave no score")
    reply: str = ""
    error: str | None = None
    usage: dict[str, int] = Field(default_factory=dict)
    batch: bool = Field(False, description="asked through the Batch API (billed at its rate)")

    @property
    def missing(self) -> bool:
        if self.scores is not None:
            return not self.scores or None in self.scores.values()
        return self.score is None

    @property
    def record_scores(self) -> list[float | None]:
        """A score per record the line covers (a lineage's versions for complexity)."""
        return list(self.scores.values()) if self.scores is not None else [self.score]


def read_score_lines(run_dir: Path) -> list[ScoreLine]:
    """Every whole line of scores.jsonl, oldest first; a torn last line is left out (and so
    is a last line that is not a score, its newline written and nothing after it)."""
    path = run_dir / SCORES
    if not path.is_file():
        return []

    def damaged(number: int, _error: ValueError) -> RunDirError:
        return RunDirError(
            f"{path}:{number}: not a score line; delete that line (its record is scored "
            "again) or the file"
        )

    with open_to_read(path) as fp:
        return [line for *_place, line in scan(fp, _score_line, damaged, torn_last=True)]


def _score_line(line: bytes) -> ScoreLine:
    return ScoreLine.model_validate(orjson.loads(line))


def text_digest(*parts: str) -> str:
    """A short fingerprint of the text a score was given for."""
    return hashlib.sha256("\x1f".join(parts).encode("utf-8", "surrogatepass")).hexdigest()[:16]


def lineages(records: Iterable[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Each lineage's kept chain, seed (or oldest kept record) first, in seed-file order."""
    chains: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        chains[record["root_id"]].append(record)
    for chain in chains.values():
        chain.sort(key=lambda record: record["generation"])
    return dict(chains)


def record_digest(scorer: str, record: dict[str, Any]) -> str:
    task = compose(record["instruction"], record.get("input") or "")
    if scorer == "quality":
        return text_digest(task, record.get("output") or "")
    return text_digest(task)


def chain_digest(chain: list[dict[str, Any]]) -> str:
    return text_digest(
        *(f"{r['id']}\x1e{compose(r['instruction'], r.get('input') or '')}" for r in chain)
    )


@dataclass
class ScoreBook:
    """The current scores of a run's kept records, one model per scorer.

    `scores[scorer][record id]` is the score, or None when it was recorded as missing. Only
    scores of the text the record holds now count (a rerun with --overwrite changes it), and
    of several models, the one that gave the most records a score (the latest on a tie).
    """

    models: dict[str, str] = field(default_factory=dict)
    scores: dict[str, dict[str, float | None]] = field(default_factory=dict)

    def of(self, scorer: str) -> dict[str, float | None]:
        return self.scores.get(scorer, {})


def read_scores(
    run_dir: Path, records: list[dict[str, Any]] | None = None, *, model: str | None = None
) -> ScoreBook:
    """The scores in scores.jsonl that still fit the run's records (`model`: only its)."""
    lines = read_score_lines(run_dir)
    if not lines:
        return ScoreBook()
    records = list(iter_records(run_dir)) if records is None else records
    current = _current_digests(records)
    chains = lineages(records)
    by_model: dict[tuple[str, str], dict[str, ScoreLine]] = defaultdict(dict)
    latest: dict[str, list[str]] = defaultdict(list)
    for line in lines:
        if model is not None and line.model != model:
            continue
        if current.get((line.scorer, line.id)) != line.digest:
            continue
        by_model[line.scorer, line.model][line.id] = line
        latest[line.scorer].append(line.model)
    book = ScoreBook()
    for scorer, models in latest.items():
        order = {name: place for place, name in enumerate(models)}
        per_model = {name: _per_record(scorer, by_model[scorer, name], chains) for name in order}
        # A score recorded as missing is none: a model that gave none does not win on lines.
        given = {name: sum(v is not None for v in per_model[name].values()) for name in order}
        chosen = max(order, key=lambda name: (given[name], order[name]))
        book.models[scorer] = chosen
        book.scores[scorer] = per_model[chosen]
    return book


def _current_digests(records: list[dict[str, Any]]) -> dict[tuple[str, str], str]:
    current = {}
    for record in records:
        for scorer in ("difficulty", "quality"):
            current[scorer, record["id"]] = record_digest(scorer, record)
    for root, chain in lineages(records).items():
        current["complexity", root] = chain_digest(chain)
    return current


def _per_record(
    scorer: str, lines: dict[str, ScoreLine], chains: dict[str, list[dict[str, Any]]]
) -> dict[str, float | None]:
    if scorer != "complexity":
        return {key: line.score for key, line in lines.items()}
    scores: dict[str, float | None] = {}
    for root, line in lines.items():
        for record in chains.get(root, []):
            scores[record["id"]] = (line.scores or {}).get(record["id"])
    return scores


class Sidecar:
    """scores.jsonl opened for appending (never through a link): each line handed to the OS
    whole, or taken back (`evol.jsonl.append_line`)."""

    def __init__(self, run_dir: Path):
        self.path = run_dir / SCORES
        if self.path.exists():
            repair_torn_tail(self.path)
        self._file: BinaryIO = open_for_append(self.path)

    def append(self, line: ScoreLine) -> None:
        data = line.model_dump(exclude_none=True)
        if line.scores is None:
            data["score"] = line.score  # null when missing: said, not left out
        append_line(self._file, data)

    def close(self) -> None:
        self._file.close()
