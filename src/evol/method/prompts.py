"""Prompt templates: one text file per operation, the judge's two calls, and two small parts.

Templates are data, filled with `string.Template` so that seed text is only ever a value:
braces, `#`, `$` or anything that looks like a placeholder in a seed is copied verbatim.
An operation names its slots `$instruction` and `$input`; `$input` receives the `input`
template filled with the instruction's input, or nothing when there is none (so an empty input
is never shown, and the evolver is told that the input goes along unchanged rather than asked
to copy it). `add_verifiable_constraint` also has `$constraint`, IFEval's wording of the
constraint to add. The judge's slots are `$first` and `$second` (and `$requirements` in
`judge_constraint`, asked of a rewrite whose constraints no rule can read); `judge_again` is the
follow-up turn when a verdict cannot be read. The answer check's slots are `$task` and `$reply`. `evol
score`'s prompts are here too (`score_*`, see `evol.quality.scoring`), and `evol optimize`'s
(`optimize_*`, see `evol.optimize.loop`); they are not part of a run's prompt digest. A literal
dollar sign is written `$$`. Placeholders are checked on load.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from string import Template

from evol.errors import PromptError, UsageError
from evol.method.leaks import LeakDetector
from evol.method.operations import OPERATIONS, VERIFIABLE

JUDGE_PROMPT = "judge"
JUDGE_AGAIN_PROMPT = "judge_again"
ANSWER_CHECK_PROMPT = "answer_check"
INPUT_PROMPT = "input"
JUDGE_CONSTRAINT_PROMPT = "judge_constraint"
# The verifiable operation's templates count in a run's digest and leak rule only when the run
# uses it: a run that does not resumes, and eliminates, exactly as before they existed.
VERIFIABLE_PROMPT_NAMES = (VERIFIABLE, JUDGE_CONSTRAINT_PROMPT)
# The prompts of `evol run`: a resumed run must use the same ones (`PromptSet.digest`).
RUN_PROMPT_NAMES = (
    *OPERATIONS,
    JUDGE_PROMPT,
    JUDGE_AGAIN_PROMPT,
    ANSWER_CHECK_PROMPT,
    INPUT_PROMPT,
    *VERIFIABLE_PROMPT_NAMES,
)
SCORE_DIFFICULTY = "score_difficulty"
SCORE_QUALITY = "score_quality"
SCORE_COMPLEXITY = "score_complexity"
SCORE_SINGLE_AGAIN = "score_single_again"
SCORE_RANKING_AGAIN = "score_ranking_again"
SCORE_PROMPT_NAMES = (
    SCORE_DIFFICULTY,
    SCORE_QUALITY,
    SCORE_COMPLEXITY,
    SCORE_SINGLE_AGAIN,
    SCORE_RANKING_AGAIN,
)
# `evol optimize`'s own: the optimizer model's analysis of failures, and its proposals.
OPTIMIZE_ANALYSIS = "optimize_analysis"
OPTIMIZE_PROPOSE = "optimize_propose"
OPTIMIZE_PROMPT_NAMES = (OPTIMIZE_ANALYSIS, OPTIMIZE_PROPOSE)
PROMPT_NAMES = (*RUN_PROMPT_NAMES, *SCORE_PROMPT_NAMES, *OPTIMIZE_PROMPT_NAMES)

_SLOTS = {name: ({"instruction"}, {"instruction", "input"}) for name in OPERATIONS}
_SLOTS[VERIFIABLE] = ({"instruction", "constraint"}, {"instruction", "input", "constraint"})
_SLOTS[JUDGE_PROMPT] = ({"first", "second"}, {"first", "second"})
_SLOTS[JUDGE_CONSTRAINT_PROMPT] = ({"first", "second", "requirements"},) * 2
_SLOTS[JUDGE_AGAIN_PROMPT] = (set(), set())
_SLOTS[ANSWER_CHECK_PROMPT] = ({"task", "reply"}, {"task", "reply"})
_SLOTS[INPUT_PROMPT] = ({"input"}, {"input"})
_SLOTS[SCORE_DIFFICULTY] = ({"task"}, {"task"})
_SLOTS[SCORE_QUALITY] = ({"task", "answer"}, {"task", "answer"})
_SLOTS[SCORE_COMPLEXITY] = ({"count", "versions"}, {"count", "versions"})
_SLOTS[SCORE_SINGLE_AGAIN] = (set(), {"maximum"})
_SLOTS[SCORE_RANKING_AGAIN] = (set(), {"count"})
_SLOTS[OPTIMIZE_ANALYSIS] = ({"method", "trajectories"},) * 2
_SLOTS[OPTIMIZE_PROPOSE] = ({"method", "analysis"}, {"method", "analysis", "number", "count"})


def run_prompt_names(operations: Iterable[str] | None = None) -> tuple[str, ...]:
    """The templates a run with `operations` may use; None: every run template."""
    if operations is None or VERIFIABLE in operations:
        return RUN_PROMPT_NAMES
    return tuple(name for name in RUN_PROMPT_NAMES if name not in VERIFIABLE_PROMPT_NAMES)


def template_slots(name: str) -> tuple[set[str], set[str]]:
    """The placeholders template `name` must hold, and those it may hold (`_load` checks both)."""
    required, allowed = _SLOTS[name]
    return set(required), set(allowed)


def default_prompt_dir() -> Path:
    """Where the shipped templates live: inside the wheel, or `prompts/` of a source checkout."""
    packaged = Path(__file__).parents[1] / "prompts"  # evol/prompts in the wheel
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[3] / "prompts"


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
    """The templates of a run: the shipped ones, with any of them overridden from a dir."""

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

    def digest(self, operations: Iterable[str] | None = None) -> str:
        """A hash of the text of every template a run with `operations` may use (None: all):
        a resumed run must use the same prompts."""
        return self.digest_of(run_prompt_names(operations))

    def digest_of(self, names: Iterable[str]) -> str:
        """A hash of the named templates' text: what a journalled reply answered."""
        digest = hashlib.sha256()
        for name in names:
            digest.update(f"{name}\0{self.templates[name].text}\0".encode())
        return digest.hexdigest()[:16]

    def evolve_prompt(
        self, operation: str, instruction: str, input_text: str, constraint: str = ""
    ) -> str:
        """The message that asks the evolver to apply `operation` to an instruction (and, for
        add_verifiable_constraint, to ask for `constraint`)."""
        shown = self[INPUT_PROMPT].render(input=input_text) if input_text.strip() else ""
        return self[operation].render(instruction=instruction, input=shown, constraint=constraint)

    def judge_prompt(self, first: str, second: str) -> str:
        """The message that asks the judge whether two instructions are equal."""
        return self[JUDGE_PROMPT].render(first=first, second=second)

    def judge_constraint_prompt(self, first: str, second: str, requirements: list[str]) -> str:
        """The judge's message for a rewrite with constraints no rule can read: the equality
        question, and whether it still states each of `requirements`."""
        listed = "\n".join(f"- {requirement}" for requirement in requirements)
        return self[JUDGE_CONSTRAINT_PROMPT].render(first=first, second=second, requirements=listed)

    def judge_again(self) -> str:
        """The follow-up turn when the judge's first reply held no verdict."""
        return self[JUDGE_AGAIN_PROMPT].render()

    def answer_check_prompt(self, task: str, reply: str) -> str:
        """The message that asks the judge model whether an answer does its task."""
        return self[ANSWER_CHECK_PROMPT].render(task=task, reply=reply)

    def leak_detector(self, operations: Iterable[str] | None = None) -> LeakDetector:
        """The prompt-leak rule for the templates a run with `operations` may use (None: all;
        overrides included)."""
        names = run_prompt_names(operations)
        return LeakDetector.from_templates(self[name].text for name in names)


def format_sources(prompts: PromptSet) -> str:
    """What `evol prompts list` prints: each template's name and the file it comes from."""
    return "\n".join(f"{name:<20} {prompts[name].source}" for name in PROMPT_NAMES)


def template_text(name: str, override_dir: Path | None = None) -> str:
    """What `evol prompts show` prints: one template as a run would use it. A name that is
    none of PROMPT_NAMES is refused before the templates are read."""
    if name not in PROMPT_NAMES:
        raise UsageError(f"unknown template {name!r}; known: {', '.join(PROMPT_NAMES)}")
    return PromptSet.load(override_dir)[name].text


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
