"""run.json's format: the typed model of what evol writes in a run directory, and the reading
of every format it knows.

Format 2 (this one) carries `format_version: 2` and keys the fingerprint by field names
(evol.rundir.fingerprint). Format 1, a run.json without `format_version`, keyed the fingerprint by CLI
flag spellings; it is read by upgrading it in memory, and the next write stores format 2. A
newer format, or a `format_version` that is no format at all, is refused in one line that says
what to do. A change of the shape of a part evol reads back means a new format_version.

Every part may be missing (a run.json made by hand, or by an evol that did not write it yet is
read as far as it goes); what is there has its type, checked strictly: a damaged run.json is one
clear error, never a traceback further on.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, ValidationError

from evol.config import RunConfig
from evol.errors import RunDirError
from evol.rundir.fingerprint import Fingerprint, from_v1, v1_key

FORMAT_VERSION = 2
"""The format this evol writes; it reads every one from 1 to this."""


class RunSummary(BaseModel):
    """What a run did, printed by `--json` and kept in run.json."""

    out: str
    status: str = Field(
        description="complete; failed (some steps failed, or `error` stopped the run); "
        "interrupted; pending (--batch-no-wait: steps wait in batches, run again)"
    )
    error: str | None = Field(None, description="what stopped the run, when something did")
    backend: str
    models: dict[str, str]
    seeds: int
    skipped_seeds: int
    generations: int
    kept: int
    kept_per_generation: dict[str, int]
    eliminated: int
    eliminated_per_reason: dict[str, int]
    failed: list[dict[str, Any]] = Field(description="steps that failed after all retries")
    waiting: int = Field(0, description="steps whose request waits in a batch (status pending)")
    requests: dict[str, int] = Field(description="requests sent by this process, per role")
    retries: int
    usage: dict[str, dict[str, int]] = Field(description="tokens of all records on disk, per role")
    dataset: str | None
    dataset_records: int | None
    elapsed_s: float
    resumed: bool = Field(False, description="this run went on from a run already in --out")
    steps: int = Field(0, description="steps in all: each seed's answer, each evolution round")
    steps_done_at_start: int = Field(0, description="steps already on disk when this run began")
    calls_to_repeat: int | None = Field(
        0,
        description="requests the run before had in flight when it stopped, sent again by this "
        "one (their replies were lost); null when it was killed without recording them",
    )
    calls_cut_off: int | None = Field(
        None, description="requests in flight when this run stopped: the next run sends them again"
    )


class _Part(BaseModel):
    """A part of run.json: typed and checked strictly; a key this evol does not know is
    ignored (and not written again)."""

    model_config = ConfigDict(strict=True, extra="ignore")


class RecordedConfig(BaseModel):
    """`config`: the RunConfig the run was given, as JSON, with no secret. The fields a resume,
    `stats` and `export` read are typed; the rest are kept as recorded, for `run_config`."""

    model_config = ConfigDict(strict=True, extra="allow")

    generations: int | None = None
    limit: int | None = None
    prompts_dir: str | None = None
    batch: bool = False
    system_prompt: str | None = None

    def run_config(self) -> RunConfig:
        """The whole RunConfig again (`evol merge` goes on with a shard's options); a
        ValueError where this evol's RunConfig cannot read it."""
        return RunConfig.model_validate(self.model_dump(exclude_unset=True))


class BackendPart(_Part):
    """The backend the run used, its endpoints (no credential) and each role's model."""

    name: str
    base_urls: list[str] = Field(default_factory=list)
    models: dict[str, str] = Field(default_factory=dict)
    model_path: str | None = None


class SkippedSeed(_Part):
    """A seed row left out (--skip-invalid): its line and why."""

    line: int
    why: str


class SeedsPart(_Part):
    """The seed file as the run read it."""

    path: str
    format: str | None = None
    count: int
    skipped: list[SkippedSeed] = Field(default_factory=list)


class CountsPart(_Part):
    """evol.rundir.counts.RunCounts as recorded."""

    kept_per_generation: dict[str, int] = Field(default_factory=dict)
    kept: int
    eliminated_per_reason: dict[str, int] = Field(default_factory=dict)
    eliminated: int
    operations: dict[str, dict[str, int]] = Field(default_factory=dict)
    usage: dict[str, dict[str, int]] = Field(default_factory=dict)


class JudgingPart(_Part):
    """How the judge model's replies were read (per role: form -> replies), over every run of
    the directory; and whether answers were checked."""

    answer_check: bool = False
    replies_read_as: dict[str, dict[str, int]] = Field(default_factory=dict)


class DedupPart(_Part):
    """With --dedup: the method the run compared instructions by."""

    method: str


class TimingsPart(_Part):
    """Seconds this run took, and all the runs of the directory together."""

    this_run_elapsed_s: float = 0.0
    total_elapsed_s: float = 0.0


class CrossShardDuplicate(BaseModel):
    """A kept evolution that repeats an instruction of another shard (with --dedup)."""

    id: str
    duplicate_of: str


class ShardRun(_Part):
    """One shard of a merged run, as `evol merge` found it."""

    path: str
    shard: str
    seeds: int
    kept: int
    eliminated: int


class ShardsPart(_Part):
    """What `evol merge` joined: written only in a merged run."""

    runs: list[ShardRun] = Field(default_factory=list)
    missing: list[str] = Field(default_factory=list)
    cross_shard_duplicates: list[CrossShardDuplicate] = Field(default_factory=list)


class Manifest(_Part):
    """run.json, format 2."""

    format_version: Literal[2] = FORMAT_VERSION
    status: str = "unknown"
    created_at: str | None = None
    updated_at: str | None = None
    config: RecordedConfig = Field(default_factory=RecordedConfig)
    fingerprint: Fingerprint | None = Field(
        None, description="None: the run stopped before asking its backend; nothing to match"
    )
    backend: BackendPart | None = None
    seeds: SeedsPart | None = None
    counts: CountsPart | None = None
    outputs: dict[str, int] = Field(default_factory=dict, description="bytes of each file")
    retries: dict[str, int] = Field(default_factory=dict)
    judging: JudgingPart | None = None
    endpoints: list[dict[str, JsonValue]] = Field(default_factory=list)
    dedup: DedupPart | None = None
    concurrency: dict[str, int] = Field(default_factory=dict)
    batches: list[dict[str, JsonValue]] | None = None
    summary: RunSummary | None = None
    timings: TimingsPart = Field(default_factory=TimingsPart)
    versions: dict[str, str | None] = Field(default_factory=dict)
    shards: ShardsPart | None = None


_DAMAGED = "the run directory is damaged: restore it, or start again with --overwrite"


def parse(data: object, where: str) -> Manifest:
    """run.json's JSON value (read from `where`) as a Manifest, of whatever format it was
    written in; a RunDirError in one line where it is none this evol can read."""
    if not isinstance(data, dict):
        raise RunDirError(f"{where}: not an evol manifest (not an object): {_DAMAGED}")
    version = format_version(data, where)
    if version == 1:
        data = upgrade_v1(data)
    try:
        return Manifest.model_validate(data, strict=True)
    except ValidationError as error:
        raise RunDirError(f"{where}: {_first_problem(error, version)}: {_DAMAGED}") from None


def format_version(data: dict[str, Any], where: str) -> int:
    """The format run.json says it is in (1 where it does not say), refused where this evol
    cannot read it."""
    version = data.get("format_version", 1)
    if type(version) is not int or version < 1:
        raise RunDirError(
            f"{where}: `format_version` is {version!r}, not a format of run.json (a whole "
            f"number from 1): {_DAMAGED}"
        )
    if version > FORMAT_VERSION:
        raise RunDirError(
            f"{where}: written by a newer evol (run.json format {version}; this evol reads "
            f"formats 1 to {FORMAT_VERSION}): upgrade evol to use this run directory"
        )
    return version


def upgrade_v1(data: dict[str, Any]) -> dict[str, Any]:
    """A format-1 run.json as format 2: the fingerprint in field names, and the judge's counts
    as format 1's reader took them (a count that is no positive whole number, or a role or a
    table that is no object, counted as nothing)."""
    return data | {
        "format_version": 2,
        "fingerprint": from_v1(data.get("fingerprint", {})),
        "judging": _judging_v1(data.get("judging")),
    }


def _judging_v1(recorded: object) -> dict[str, Any] | None:
    if not isinstance(recorded, dict):
        return None
    read_as: dict[str, dict[str, int]] = {}
    forms = recorded.get("replies_read_as")
    for role, counts in forms.items() if isinstance(forms, dict) else ():
        if isinstance(counts, dict):
            kept = {form: n for form, n in counts.items() if type(n) is int and n > 0}
            if kept:
                read_as[role] = kept
    answer_check = recorded.get("answer_check")
    return {"answer_check": answer_check is True, "replies_read_as": read_as}


_TYPE_NAMES = {
    "model_type": "an object",
    "model_attributes_type": "an object",
    "dict_type": "an object",
    "list_type": "a list",
    "string_type": "a string",
    "int_type": "an integer",
    "float_type": "a number",
    "bool_type": "true or false",
}


def _first_problem(error: ValidationError, version: int) -> str:
    """The first thing wrong in run.json, in words: "`config` is not an object"; a part of
    a format-1 fingerprint is named by its format-1 key."""
    problem = error.errors()[0]
    loc = [str(part) for part in problem["loc"]]
    if version == 1 and len(loc) > 1 and loc[0] == "fingerprint":
        loc[1] = v1_key(loc[1])
    where = ".".join(loc)
    kind = problem["type"]
    if kind == "missing":
        return f"`{where}` is missing"
    if kind in _TYPE_NAMES:
        return f"`{where}` is not {_TYPE_NAMES[kind]}"
    return f"`{where}`: {problem['msg']}"
