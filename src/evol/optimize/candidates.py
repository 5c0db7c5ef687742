"""A method as `evol optimize` tunes it: the operation templates of a run, shown to the
optimizer model, read back from its reply, checked, and saved as a prompts directory.

A candidate is refused before any call is paid for it when one of its templates is empty,
is not valid `string.Template` text, names a placeholder its operation does not know, drops
one its operation requires (`$instruction`, and `$input` where the current template has it),
or when it changes nothing. It is refused too when its wording would leak into rewrites by
construction: a template that takes the instruction out of the tags that fence it in the
current one (the model can no longer tell the instruction from the method's words), or that
brings in one of the paper's labels ("#Rewritten Prompt#", "given prompt"...), which models
copy into their rewrites. Leaks the wording does not make certain are measured, not guessed:
the evaluation run eliminates each rewrite that copies the candidate's words, and counts it
as a failure. A refused candidate is recorded with its reason, never run.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from string import Template

from evol.jsonl import atomic_write, read_back
from evol.method.leaks import PAPER_MARKERS
from evol.method.prompts import PROMPT_NAMES, PromptSet, template_slots
from evol.method.textstats import normalize
from evol.optimize.config import OUT_REMEDY

# How the method travels in the optimizer's prompts and replies: one block per template.
OPEN = '<template name="'
CLOSE = "</template>"


def method_text(prompts: PromptSet, operations: Iterable[str]) -> str:
    """The templates of `operations` as the optimizer model reads (and writes) them."""
    return "\n\n".join(
        f'{OPEN}{name}">\n{prompts[name].text.strip()}\n{CLOSE}' for name in operations
    )


def parse_method(reply: str) -> dict[str, str]:
    """The templates a reply writes, by name: each `<template name="NAME">...</template>`
    block, read to the last `</template>` before the next block opens (a later block of the
    same name wins; a block with no close is left out). Plain `find`, so any reply reads in
    linear time; text outside the blocks is ignored. `reply_problem` says when this reading
    is not the only one."""
    return {name: text.strip("\n") + "\n" for name, text, closes in _blocks(reply) if closes}


def reply_problem(reply: str) -> str | None:
    """Why the templates of `reply` cannot be read back for sure, or None: a block that holds
    `</template>` more than once (where does the template end?) or never (cut short?). Such a
    candidate is refused: the method evaluated must be the one proposed."""
    for name, _text, closes in _blocks(reply):
        if closes > 1:
            return f"{name}: {CLOSE} appears {closes} times in its block, so where it ends is ambiguous"
        if closes == 0:
            return f"{name}: its block has no {CLOSE} (the reply may be cut short)"
    return None


def _blocks(reply: str) -> list[tuple[str, str, int]]:
    """Each block's name, its text up to the last close before the next block opens, and the
    count of closes in that stretch (1 for a plain block)."""
    found = []
    start = reply.find(OPEN)
    while start != -1:
        name_end = reply.find('">', start + len(OPEN))
        if name_end == -1:
            break
        following = reply.find(OPEN, name_end)
        stretch = reply[name_end + 2 : len(reply) if following == -1 else following]
        end = stretch.rfind(CLOSE)
        name = reply[start + len(OPEN) : name_end].strip()
        found.append((name, stretch if end == -1 else stretch[:end], stretch.count(CLOSE)))
        start = following
    return found


def refusal(rewritten: dict[str, str], current: PromptSet, operations: Iterable[str]) -> str | None:
    """Why the candidate that rewrites `rewritten` must not be evaluated, or None."""
    allowed = tuple(operations)
    if not rewritten:
        return "the reply holds no template"
    for name, text in rewritten.items():
        if name not in allowed:
            return f"{name!r} is not an operation of this run ({', '.join(allowed)})"
        if problem := template_problem(name, text, current[name].text):
            return f"{name}: {problem}"
    if all(text.strip() == current[name].text.strip() for name, text in rewritten.items()):
        return "identical to the current method"
    return None


def template_problem(name: str, text: str, original: str) -> str | None:
    """What is wrong with `text` as template `name` replacing `original`, or None."""
    if not text.strip():
        return "empty"
    template = Template(text)
    if not template.is_valid():
        return "invalid placeholder (a literal dollar sign is written $$)"
    required, allowed = template_slots(name)
    found = set(template.get_identifiers())
    if unknown := found - allowed:
        return f"unknown placeholder ${sorted(unknown)[0]}"
    kept = Template(original).get_identifiers() if Template(original).is_valid() else []
    if missing := (required | set(kept)) - found:
        return f"drops the placeholder ${sorted(missing)[0]}"
    return _leak_by_construction(text, original)


def _leak_by_construction(text: str, original: str) -> str | None:
    for fence in _fences(original):
        if fence not in _fences(text):
            return f"takes $instruction out of its {fence[0]} tags, so rewrites copy the method's words"
    was, now = normalize(original), normalize(text)
    for marker in PAPER_MARKERS:
        if marker in now and marker not in was:
            return f"brings in the label {marker!r}, which rewrites copy"
    return None


_FENCE = re.compile(r"(<[A-Za-z_]+>)\s*\$\{?instruction\}?\s*(</[A-Za-z_]+>)")


def _fences(template: str) -> set[tuple[str, str]]:
    """The tag pairs that enclose the instruction's placeholder, and nothing else, in `template`."""
    return {(m[1], m[2]) for m in _FENCE.finditer(template)}


def write_prompts(prompts: PromptSet, rewritten: dict[str, str], folder: Path) -> None:
    """Write every template of `prompts`, with `rewritten` in place of its own, into `folder`:
    a directory `evol run --prompts` takes as it is. Each file is replaced atomically, so a
    kill leaves a whole template behind, and writing the same method again changes nothing."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in PROMPT_NAMES:
        text = rewritten.get(name, prompts[name].text)
        path = folder / f"{name}.txt"
        if read_back(path, remedy=OUT_REMEDY) != text.encode("utf-8"):
            atomic_write(path, text)
