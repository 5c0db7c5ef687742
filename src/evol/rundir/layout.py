"""The run directory's layout: the names evol gives its files there, and the guards on where
anything is written (no file but its own, no link, no run's file taken for another command's
output)."""

from __future__ import annotations

import errno
import re
from pathlib import Path

from evol.errors import RunDirError, UsageError
from evol.jsonl import LOCK_FILE, refuse_symlinks

MANIFEST = "run.json"
ELIMINATED = "eliminated.jsonl"
DATASET = "dataset.jsonl"
JOURNAL = "calls.jsonl"
# What `evol score` adds beside the run's records.
SCORES = "scores.jsonl"
SCORE_JOURNAL = "score_calls.jsonl"  # the scoring calls' replies not yet in scores.jsonl
METRICS = "metrics.json"
CONTAMINATION = "contamination.json"
BATCH_DIR = "batch"  # `evol run --batch`: the batches made and the rows they returned
SCORE_BATCH_DIR = "batch-score"  # `evol score --batch`: the same, for the scoring calls
# Every file evol may write in a run directory; nothing else there is ever touched.
OWN_FILE_NAME = re.compile(
    r"(gen_\d+\.jsonl|eliminated\.jsonl|dataset\.jsonl|calls\.jsonl|run\.json"
    r"|scores\.jsonl|score_calls\.jsonl|metrics\.json|contamination\.json)(\.tmp)?"
)


def generation_file(generation: int) -> str:
    """The name of the record file of `generation`."""
    return f"gen_{generation}.jsonl"


def generation_files(run_dir: Path) -> list[Path]:
    """The gen_<k>.jsonl files of a run directory in generation order; a missing one is skipped
    (gen_0 is absent when every seed answer failed, yet gen_1 may exist)."""
    found = [p for p in run_dir.glob("gen_*.jsonl") if p.stem[4:].isdigit()]
    return sorted(found, key=lambda p: int(p.stem[4:]))


def output_files(run_dir: Path) -> list[Path]:
    """The files that hold records, gen_0 first."""
    eliminated = run_dir / ELIMINATED
    return generation_files(run_dir) + ([eliminated] if eliminated.exists() else [])


def output_sizes(run_dir: Path) -> dict[str, int]:
    """Bytes of each file holding records, dataset.jsonl included (recorded in run.json)."""
    paths = output_files(run_dir) + [run_dir / DATASET, run_dir / JOURNAL]
    return {path.name: path.stat().st_size for path in paths if path.exists()}


def is_own_name(name: str) -> bool:
    """Whether `name` is one evol gives a file (or a batch folder) in a run directory."""
    return bool(OWN_FILE_NAME.fullmatch(name)) or name in (LOCK_FILE, BATCH_DIR, SCORE_BATCH_DIR)


def refuse_run_state(target: Path, option: str) -> None:
    """Refuse to write `target` (a file or a folder a command is given) when it is, or lies
    inside, one of the files evol keeps in a run directory (records, run.json, the journal,
    the lock, the scores, batch/), links and `..` resolved first. Every command that writes
    where the user says calls this."""
    try:
        resolved = target.resolve()
    except (RuntimeError, OSError) as error:  # a loop: RuntimeError up to Python 3.12
        if isinstance(error, OSError) and error.errno != errno.ELOOP:
            raise
        raise UsageError(
            f"{target}: a loop of symbolic links; give {option} another path"
        ) from None
    for entry, folder in zip((resolved, *resolved.parents), resolved.parents, strict=False):
        if is_own_name(entry.name) and _holds_a_run(folder):
            raise UsageError(
                f"{target}: is {'' if entry == resolved else 'inside '}{entry.name} of the run "
                f"in {folder}; give {option} a path outside the run's own files"
            )


def refuse_links(run_dir: Path) -> None:
    """Refuse a run directory where a name evol writes is a symbolic link."""
    refuse_symlinks(
        (entry for entry in run_dir.iterdir() if is_own_name(entry.name)),
        "evol writes only regular files in its run directory: remove the link or choose "
        "another --out",
    )


def _holds_a_run(folder: Path) -> bool:
    return (folder / MANIFEST).is_file() or (folder / LOCK_FILE).exists()


def refuse_foreign(out_dir: Path) -> None:
    """Refuse a directory that holds things but no evol run, and any link among evol's files.

    evol writes run.json before its first record, so a run directory without one holds
    nothing of evol's but a lock or a leftover temporary file.
    """
    if not out_dir.is_dir():
        return
    refuse_links(out_dir)
    manifest = out_dir / MANIFEST
    if manifest.is_file():
        return
    others = [
        entry.name
        for entry in out_dir.iterdir()
        if entry.name != LOCK_FILE and not entry.name.endswith(".tmp")
    ]
    if others:
        shown = ", ".join(sorted(others)[:3]) + (", ..." if len(others) > 3 else "")
        raise RunDirError(
            f"{out_dir}: not empty ({shown}) and holds no evol run (no run.json): choose a new "
            "or empty directory for --out"
        )
