"""Prompt templates: one text file per operation plus the equality judge.

Templates are data, filled with `string.Template` so that seed text is only ever a value:
braces, `#`, `$` or anything that looks like a placeholder in a seed is copied verbatim.
A template names its slots as `$instruction` and `$input` (operations) or `$first` and
`$second` (judge); a literal dollar sign is written `$$`. Placeholders are checked on load.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from string import Template

from evol.errors import PromptError

OPERATION_PROMPTS = (
    "add_constraints",
    "deepen",
    "concretize",
    "increase_reasoning",
    "complicate_input",
    "breadth",
)
JUDGE_PROMPT = "judge"
PROMPT_NAMES = (*OPERATION_PROMPTS, JUDGE_PROMPT)

_SLOTS = {name: ({"instruction"}, {"instruction", "input"}) for name in OPERATION_PROMPTS}
_SLOTS[JUDGE_PROMPT] = ({"first", "second"}, {"first", "second"})
NO_INPUT = "(none)"


def default_prompt_dir() -> Path:
    """Where the shipped templates live: inside the wheel, or `prompts/` of a source checkout."""
    packaged = Path(__file__).parent / "prompts"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2] / "prompts"


@dataclass(frozen=True)
class PromptTemplate:
    """One loaded, checked template and the file it came from."""

    name: str
    source: Path
    text: str

    @cached_property
    def _template(self) -> Template:
        return Template(self.text)

    def render(self, **values: str) -> str:
        """Fill the template; values are inserted as they are, never parsed."""
        return self._template.substitute(values)


class PromptSet:
    """The seven templates of a run: the shipped ones, with any of them overridden from a dir."""

    def __init__(self, templates: dict[str, PromptTemplate]):
        self.templates = templates

    @classmethod
    def load(cls, override_dir: Path | None = None) -> PromptSet:
        """Load the shipped templates, then replace those that `override_dir` provides."""
        templates = {
            name: _load(name, default_prompt_dir() / f"{name}.txt") for name in PROMPT_NAMES
        }
        if override_dir is None:
            return cls(templates)
        if not override_dir.is_dir():
            raise PromptError(f"{override_dir}: --prompts must be a directory of .txt templates")
        for path in sorted(override_dir.glob("*.txt")):
            if path.stem not in PROMPT_NAMES:
                known = ", ".join(PROMPT_NAMES)
                raise PromptError(f"{path}: unknown template name {path.stem!r}; known: {known}")
            templates[path.stem] = _load(path.stem, path)
        return cls(templates)

    def __getitem__(self, name: str) -> PromptTemplate:
        return self.templates[name]

    def digest(self) -> str:
        """A hash of every template's text: a resumed run must use the same prompts."""
        digest = hashlib.sha256()
        for name in PROMPT_NAMES:
            digest.update(f"{name}\0{self.templates[name].text}\0".encode())
        return digest.hexdigest()[:16]

    def evolve_prompt(self, operation: str, instruction: str, input_text: str) -> str:
        """The message that asks the evolver to apply `operation` to an instruction."""
        return self[operation].render(instruction=instruction, input=input_text or NO_INPUT)

    def judge_prompt(self, first: str, second: str) -> str:
        """The message that asks the judge whether `second` adds anything to `first`."""
        return self[JUDGE_PROMPT].render(first=first, second=second)


def _load(name: str, path: Path) -> PromptTemplate:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise PromptError(f"{path}: cannot read template: {error}") from None
    template = Template(text)
    if not template.is_valid():
        raise PromptError(f"{path}: invalid placeholder; write a literal dollar sign as $$")
    required, allowed = _SLOTS[name]
    found = set(template.get_identifiers())
    if unknown := found - allowed:
        raise PromptError(
            f"{path}: unknown placeholder ${sorted(unknown)[0]}; "
            f"{name} may use {', '.join('$' + s for s in sorted(allowed))}"
        )
    if missing := required - found:
        raise PromptError(f"{path}: missing placeholder ${sorted(missing)[0]}")
    return PromptTemplate(name=name, source=path, text=text)
