"""`evol show`: one lineage of a run as a tree, for the terminal or as one JSON object.

`lineage(run_dir, record_id)` finds the record (kept or eliminated) and gathers every record of
its seed (its `root_id`): the rewrites that were kept, each under its parent, and the attempts
that were eliminated, with their reason and detail, under the record they tried to rewrite.
Every step carries `word_diff(parent, child)`: the words a rewrite kept, added and removed
(difflib on word lists), which the report reuses for its lineage view. `format_lineage` draws
the tree, wraps the texts to a width (an `input` only where it appears or changes), and shows
control characters as escapes: the texts come from a model, and a terminal must not act on
what a model wrote. The files are read as export reads them: a torn last line is skipped.
"""

from __future__ import annotations

import difflib
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from evol.errors import UsageError
from evol.jsonl import open_to_read
from evol.rundir.layout import ELIMINATED, generation_files
from evol.rundir.manifest import load_manifest
from evol.rundir.record_files import read_records
from evol.terminal import printable

DiffOp = Literal["equal", "insert", "delete"]
# Words kept on each side of a change when format_lineage shortens an unchanged stretch.
DIFF_CONTEXT = 4
_MIN_ELIDED = 3  # fewer unchanged words than this are shown, not shortened
_MIN_TEXT_WIDTH = 24
# The tree shows this many characters of a text, then a marker; `evol show --full` shows all.
SHOWN_CHARS = 2_000
# difflib's time can grow with the product of the two word counts: past this many words a diff
# is the words both texts start and end with, and what lies between as a replacement.
_MAX_DIFF_WORDS = 2_000
_GLUE = "\u00a0"  # a space that textwrap does not break at


class LineageStep(BaseModel):
    """One record of a lineage: a seed, a kept rewrite or an eliminated attempt."""

    id: str
    parent_id: str | None
    generation: int
    round: int
    operation: str | None
    judge: str | None = None
    instruction: str
    input: str = ""
    output: str | None = None
    kept: bool = Field(description="False for an attempt that was eliminated")
    reason: str | None = Field(None, description="why it was eliminated")
    detail: str | None = None
    duplicate_of: str | None = None
    diff: list[tuple[DiffOp, str]] | None = Field(
        None, description="word_diff of the parent's instruction and this one; None for a root"
    )
    children: list[LineageStep] = Field(
        default_factory=list, description="later records made from this one, by round"
    )


class Lineage(BaseModel):
    """Every record of one seed, as a tree."""

    run: str
    root_id: str
    asked: str = Field(description="the id that was asked for")
    kept: int
    eliminated: int
    roots: list[LineageStep] = Field(
        description="the seed; or, when its record is not on disk, the oldest records that are"
    )


def word_diff(parent: str, child: str) -> list[tuple[DiffOp, str]]:
    """What `child` keeps ("equal"), adds ("insert") and drops ("delete") of `parent`, by word.

    Words are split on whitespace and joined with single spaces; a replacement is a delete
    followed by an insert.
    """
    old, new = parent.split(), child.split()
    if max(len(old), len(new)) > _MAX_DIFF_WORDS:
        return _ends_diff(old, new)
    changes: list[tuple[DiffOp, str]] = []
    matcher = difflib.SequenceMatcher(None, old, new, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            changes.append(("equal", " ".join(old[i1:i2])))
            continue
        if i2 > i1:
            changes.append(("delete", " ".join(old[i1:i2])))
        if j2 > j1:
            changes.append(("insert", " ".join(new[j1:j2])))
    return changes


def _ends_diff(old: list[str], new: list[str]) -> list[tuple[DiffOp, str]]:
    """A word diff in linear time: the common start, the middle replaced, the common end."""
    shortest = min(len(old), len(new))
    start = 0
    while start < shortest and old[start] == new[start]:
        start += 1
    end = 0
    while end < shortest - start and old[-1 - end] == new[-1 - end]:
        end += 1
    pieces: list[tuple[DiffOp, list[str]]] = [
        ("equal", old[:start]),
        ("delete", old[start : len(old) - end]),
        ("insert", new[start : len(new) - end]),
        ("equal", old[len(old) - end :]),
    ]
    return [(op, " ".join(words)) for op, words in pieces if words]


def lineage(run_dir: Path, record_id: str) -> Lineage:
    """The lineage of `record_id` (any record of the run, kept or eliminated) from its seed."""
    load_manifest(run_dir)  # a run is there, and its run.json is one evol reads
    root_id = next(
        (data["root_id"] for data, _kept in _records(run_dir) if data.get("id") == record_id),
        None,
    )
    if not isinstance(root_id, str):
        raise UsageError(f"{run_dir}: no record has the id {record_id!r}")
    steps = [
        _step(data, kept) for data, kept in _records(run_dir) if data.get("root_id") == root_id
    ]
    steps.sort(key=lambda step: (step.round, step.id))
    parents = {step.id: step for step in steps if step.kept}
    roots = []
    for step in steps:
        parent = parents.get(step.parent_id) if step.parent_id is not None else None
        if parent is None:
            roots.append(step)
            continue
        step.diff = word_diff(parent.instruction, step.instruction)
        parent.children.append(step)
    return Lineage(
        run=str(run_dir),
        root_id=root_id,
        asked=record_id,
        kept=len(parents),
        eliminated=sum(not step.kept for step in steps),
        roots=roots,
    )


def _records(run_dir: Path) -> Iterator[tuple[dict[str, Any], bool]]:
    """(record, kept?) of every record of the run: gen_0 .. gen_N, then eliminated.jsonl."""
    eliminated = run_dir / ELIMINATED
    paths = generation_files(run_dir) + ([eliminated] if eliminated.exists() else [])
    for path in paths:
        with open_to_read(path) as fp:
            for _number, _offset, _length, data in read_records(fp, path):
                yield data, path != eliminated


def _step(data: dict[str, Any], kept: bool) -> LineageStep:
    fields = {name: data.get(name) for name in LineageStep.model_fields if name in data}
    fields.pop("children", None)
    fields.pop("diff", None)
    return LineageStep.model_validate({**fields, "kept": kept})


def format_lineage(found: Lineage, *, width: int = 100, full: bool = False) -> str:
    """The lineage as a tree of text at most `width` columns wide (where words allow); a text
    longer than SHOWN_CHARS is cut, with a marker saying how much is left, unless `full`."""
    if not full:
        found = found.model_copy(update={"roots": [_shortened(root) for root in found.roots]})
    lines = [
        printable(
            f"{found.run}: lineage of {found.root_id}: {found.kept} kept, "
            f"{found.eliminated} eliminated",
            lines=False,
        )
    ]
    for root in found.roots:
        _draw(root, found.asked, "", "", "", width, lines)
    return "\n".join(lines)


def _shortened(step: LineageStep) -> LineageStep:
    """`step` and the steps below it with every text cut to SHOWN_CHARS characters."""
    diff = [(op, _cut(text)) for op, text in step.diff] if step.diff is not None else None
    return step.model_copy(
        update={
            "instruction": _cut(step.instruction),
            "input": _cut(step.input),
            "detail": _cut(step.detail) if step.detail is not None else None,
            "diff": diff,
            "children": [_shortened(child) for child in step.children],
        }
    )


def _cut(text: str) -> str:
    if len(text) <= SHOWN_CHARS:
        return text
    return f"{text[:SHOWN_CHARS]}\n[… {len(text) - SHOWN_CHARS:,} more characters, use --full]"


def _draw(
    step: LineageStep,
    asked: str,
    head: str,
    branch: str,
    rest: str,
    width: int,
    out: list[str],
    parent_input: str | None = None,
) -> None:
    """Append `step` and its children; `head` starts its first line, `rest` the ones below."""
    below = rest + ("│ " if step.children else "  ")
    title = _title(step) + (f"{_GLUE}{_GLUE}◀" if step.id == asked else "")
    out.extend(_wrap(title, head + branch, width, indent=below + "  "))
    for text in _body(step, parent_input):
        out.extend(_wrap(text, below, width))
    for number, child in enumerate(step.children):
        last = number == len(step.children) - 1
        _draw(
            child,
            asked,
            rest,
            "└─ " if last else "├─ ",
            rest + ("   " if last else "│  "),
            width,
            out,
            step.input,
        )


def _title(step: LineageStep) -> str:
    parts = [f"gen {step.generation}"]
    if step.parent_id is None:
        parts.append("seed")
    else:
        parts += [f"round {step.round}", step.operation or "?"]
    if step.judge:
        parts.append(f"judge: {step.judge}")
    if not step.kept:
        parts.append(f"eliminated: {step.reason}")
    # Lines break after a " · " only: a no-break space inside each part, undone by _wrap.
    name = f"✗{_GLUE}{step.id}" if not step.kept else step.id
    return f"{name}  " + f"{_GLUE}· ".join(part.replace(" ", _GLUE) for part in parts)


def _body(step: LineageStep, parent_input: str | None) -> list[str]:
    texts = [step.instruction]
    if step.input.strip() and step.input != parent_input:  # shown where it appears or changes
        texts.append(f"input: {step.input}")
    if step.diff is not None:
        texts.append(f"diff: {_diff_text(step.diff)}")
    if step.detail:
        texts.append(f"why: {step.detail}")
    if step.duplicate_of:
        texts.append(f"duplicate of: {step.duplicate_of}")
    return texts


def _diff_text(changes: list[tuple[DiffOp, str]]) -> str:
    """[-removed-] [+added+], with long unchanged stretches shortened to their ends."""
    if all(op == "equal" for op, _text in changes):
        return "(no change)"
    pieces = []
    for number, (op, text) in enumerate(changes):
        if op != "equal":
            pieces.append(f"[+{text}+]" if op == "insert" else f"[-{text}-]")
            continue
        words = text.split()
        before = words[:DIFF_CONTEXT] if number > 0 else []
        after = words[-DIFF_CONTEXT:] if number < len(changes) - 1 else []
        if len(words) - len(before) - len(after) >= _MIN_ELIDED:
            pieces.append(" ".join([*before, "…", *after]))
        else:
            pieces.append(text)
    return " ".join(pieces)


def _wrap(text: str, prefix: str, width: int, indent: str | None = None) -> list[str]:
    """`text` wrapped to `width` after `prefix` (`indent` on its continuation lines), its own
    line breaks kept."""
    indent = prefix if indent is None else indent
    room = max(_MIN_TEXT_WIDTH, width - max(len(prefix), len(indent)))
    lines = []
    for paragraph in printable(text).splitlines() or [""]:
        for line in textwrap.wrap(paragraph, room) or [""]:
            lines.append((indent if lines else prefix) + line.replace(_GLUE, " "))
    return [line.rstrip() for line in lines]
