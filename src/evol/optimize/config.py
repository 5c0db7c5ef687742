"""What `evol optimize` is given (`OptimizeConfig`) and what it writes down (`History`,
history.json) and prints (`OptimizeSummary`).

history.json is the loop's memory: each finished step with its candidates, their failure
rates and intervals, the refused ones with their reason, the chosen one and the optimizer's
analysis. A rerun with the same settings goes on after its last step; other settings are
refused, since the runs under --out were made with these (`load_history`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field

from evol.config import Connection, RoleModels, RunConfig, SeedFields
from evol.errors import RunDirError, UsageError
from evol.jsonl import OWN_LINK_REMEDY, atomic_write, refuse_symlinks
from evol.method.elimination import EliminationRules
from evol.method.operations import parse_weights
from evol.optimize.paired import Interval
from evol.rundir.records import MAX_GENERATIONS

HISTORY_FORMAT = 2  # 2: exact intervals (improved, worsened, bound), optimizer_prompts setting

HISTORY = "history.json"
# What a file of --out that evol optimize reads back, found not a regular file, asks for.
OUT_REMEDY = "evol optimize keeps a file here: move it away, or choose another --out"
CANDIDATE_NAME = re.compile(r"candidate_[1-9][0-9]{0,5}")

# Each setting history.json records, as the options that set it (for the refusal of a rerun).
SETTING_FLAGS = {
    "seeds_digest": "the seed file's content",
    "method_digest": "--prompts (the method's templates)",
    "optimizer_prompts": "--prompts (optimize_analysis, optimize_propose)",
    "dev_size": "--dev-size",
    "seed": "--seed",
    "rounds": "--rounds",
    "candidates": "--candidates",
    "analysis_batch": "--analysis-batch",
    "confidence": "--confidence",
    "operations": "--operations",
    "optimizer_model": "--optimizer-model",
    "backend": "--backend",
    "model": "--model",
    "evolve_model": "--evolve-model",
    "answer_model": "--answer-model",
    "judge_model": "--judge-model",
    "seed_format": "--format",
    "instruction_field": "--instruction-field",
    "input_field": "--input-field",
    "output_field": "--output-field",
    "skip_invalid": "--skip-invalid",
    "rules": "elimination rules",
}


class OptimizeConfig(SeedFields, RoleModels, Connection):
    """Everything `evol optimize` needs: the seeds, the loop's sizes, the models."""

    seeds: Path
    out: Path
    dev_size: int = Field(100, ge=1, description="seeds drawn (reproducibly) for the dev set")
    seed: int = 0
    rounds: int = Field(1, ge=1, le=MAX_GENERATIONS, description="generations of each run")
    steps: int = Field(10, ge=1)
    candidates: int = Field(3, ge=1, description="methods proposed per step (m)")
    analysis_batch: int = Field(10, ge=1, description="failed trajectories per analysis call")
    confidence: float = Field(0.95, gt=0, lt=1)
    operations: dict[str, float] = Field(default_factory=lambda: parse_weights(None))
    prompts_dir: Path | None = Field(None, description="the method to start from")
    optimizer_model: str | None = Field(None, description="None: --model, else the server's")
    rules: EliminationRules = EliminationRules()

    def run_config(self, seeds: Path, out: Path, prompts_dir: Path) -> RunConfig:
        """The evaluation run of one method: the dev seeds, --rounds generations, the same
        --seed for every method (so each seed draws the same operations), no seed answers
        (they say nothing about the method)."""
        connection = {name: getattr(self, name) for name in Connection.model_fields}
        return RunConfig(
            **connection,
            seeds=seeds,
            out=out,
            generations=self.rounds,
            seed=self.seed,
            operations=self.operations,
            prompts_dir=prompts_dir,
            answer_seeds=False,
            rules=self.rules,
            **self.role_models,
        )

    def settings(
        self, seeds_digest: str, method_digest: str, optimizer_prompts: str
    ) -> dict[str, Any]:
        """What a rerun must keep for the runs under --out to stay comparable: everything that
        goes into an evaluation run's own fingerprint (so that optimize refuses a change in its
        own words, before any run does), and what the optimizer's journalled replies answer."""
        return {
            "seeds_digest": seeds_digest,
            "method_digest": method_digest,
            "optimizer_prompts": optimizer_prompts,
            "dev_size": self.dev_size,
            "seed": self.seed,
            "rounds": self.rounds,
            "candidates": self.candidates,
            "analysis_batch": self.analysis_batch,
            "confidence": self.confidence,
            "operations": self.operations,
            "optimizer_model": self.optimizer_model,
            "backend": self.backend,
            "model": self.model,
            "evolve_model": self.evolve_model,
            "answer_model": self.answer_model,
            "judge_model": self.judge_model,
            "seed_format": self.seed_format,
            "instruction_field": self.instruction_field,
            "input_field": self.input_field,
            "output_field": self.output_field,
            "skip_invalid": self.skip_invalid,
            "rules": self.rules.model_dump(mode="json"),
        }


class CandidateResult(BaseModel):
    """One proposed method: refused before evaluation (`refused`), or evaluated."""

    name: str
    templates: list[str] = Field(description="the templates it rewrites")
    refused: str | None = None
    failure_rate: float | None = None
    evolutions: int = 0
    eliminated: int = 0
    difference: Interval | None = Field(
        None, description="candidate minus current failure rate, paired per dev seed"
    )
    accepted: bool = False


class StepResult(BaseModel):
    """One finished step of the loop."""

    step: int
    current: str = Field(description="the method it started from (a prompts dir under --out)")
    current_failure_rate: float | None
    analysis: list[str] = Field(description="the optimizer's analysis, one text per batch")
    candidates: list[CandidateResult]
    chosen: str | None = Field(description="the accepted candidate with the lowest rate")


class History(BaseModel):
    """history.json."""

    model_config = ConfigDict(extra="forbid")

    format_version: int = HISTORY_FORMAT
    settings: dict[str, Any]
    start_failure_rate: float | None = None
    steps: list[StepResult] = []
    stopped: str | None = Field(None, description="why the loop ended before --steps")


class OptimizeSummary(BaseModel):
    """What `evol optimize` prints (`--json`: this object)."""

    out: str
    status: str = Field(description="complete; pending (batches wait: run again); failed")
    error: str | None = None
    prompts: str | None = Field(description="the best method: evol run --prompts takes it")
    history: str
    steps_done: int
    start_failure_rate: float | None
    best_failure_rate: float | None
    chosen: list[str | None] = Field(description="each step's chosen candidate, or None")
    differences: list[Interval | None] = Field(
        default_factory=list, description="each step's chosen candidate's interval, or None"
    )
    stopped: str | None = None


def format_optimize_summary(summary: OptimizeSummary) -> str:
    """The summary as a few plain lines."""
    start, best = summary.start_failure_rate, summary.best_failure_rate
    rates = f"failure rate {_rate(start)} at start, {_rate(best)} now"
    lines = [
        f"optimize {summary.status}: {summary.steps_done} steps, {rates}",
        *(
            f"  step {number}: {name or 'no candidate accepted'}{_difference(difference)}"
            for number, (name, difference) in enumerate(
                zip(summary.chosen, summary.differences, strict=False), start=1
            )
        ),
    ]
    if summary.stopped:
        lines.append(f"stopped: {summary.stopped}")
    if summary.error:
        lines.append(f"error: {summary.error}")
    if summary.prompts:
        lines.append(f"best method: {summary.prompts} (evol run --prompts {summary.prompts})")
    lines.append(f"history: {summary.history}")
    return "\n".join(lines)


def _difference(interval: Interval | None) -> str:
    if interval is None:
        return ""
    return (
        f", failure rate {interval.mean:+.3f}, interval [{interval.low:+.3f}, "
        f"{interval.high:+.3f}] at {interval.level:.1%} ({interval.improved} seeds better, "
        f"{interval.worsened} worse)"
    )


def _rate(rate: float | None) -> str:
    return "unknown" if rate is None else f"{rate:.3f}"


def load_history(out: Path, settings: dict) -> History:
    """history.json as a rerun may go on from: readable, of this format, made with these
    settings, and naming only what it wrote (every path it gives is checked)."""
    path = out / HISTORY
    if not path.exists() and not path.is_symlink():
        return History(settings=settings)
    refuse_symlinks([path], OWN_LINK_REMEDY)  # as _refuse_foreign did: never a file elsewhere
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise RunDirError(
            f"{path}: cannot read it ({error.strerror or error}): move it away, "
            "or choose another --out"
        ) from None
    history = _parse_history(path, raw)
    saved = orjson.loads(orjson.dumps(settings))
    if changed := [key for key in saved if history.settings.get(key) != saved[key]]:
        flags = ", ".join(dict.fromkeys(SETTING_FLAGS.get(key, key) for key in changed))
        raise UsageError(
            f"{out} was optimized with other settings ({flags}; recorded in {HISTORY}): use "
            "the same ones to resume, or another --out"
        )
    _check_steps(path, history)
    return history


def _parse_history(path: Path, raw: bytes) -> History:
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise RunDirError(
            f"{path}: damaged (not JSON): move it away, or choose another --out"
        ) from None
    version = data.get("format_version") if isinstance(data, dict) else None
    if isinstance(data, dict) and version != HISTORY_FORMAT:
        raise RunDirError(
            f"{path}: format {version!r} is not this evol's ({HISTORY_FORMAT}): choose another --out"
        )
    try:
        return History.model_validate(data)
    except ValueError as error:
        raise RunDirError(f"{path}: damaged ({error.__class__.__name__})") from None


def _check_steps(path: Path, history: History) -> None:
    """Each step is numbered in turn, and its `chosen` names one of its own evaluated
    candidates: `chosen` becomes a path under --out, so nothing else may pass."""
    for number, step in enumerate(history.steps, start=1):
        if step.step != number:
            raise RunDirError(f"{path}: step {number} is recorded as step {step.step}: damaged")
        if step.chosen is None:
            continue
        evaluated = {
            c.name for c in step.candidates if c.refused is None and c.failure_rate is not None
        }
        if not CANDIDATE_NAME.fullmatch(step.chosen) or step.chosen not in evaluated:
            raise RunDirError(
                f"{path}: step {number} chose {step.chosen!r}, not one of its evaluated "
                "candidates: damaged or edited by hand; choose another --out"
            )


def save_history(out: Path, history: History) -> None:
    """Write history.json whole (atomically: a kill leaves the old one or the new one)."""
    atomic_write(out / HISTORY, history.model_dump_json(indent=2) + "\n")
