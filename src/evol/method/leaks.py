"""The evolving prompts' own words, which have no business in an instruction: the paper's
markers and the phrases and 6-grams of the templates a run loads, found in a rewrite that its
parent did not hold."""

from __future__ import annotations

import re
from collections.abc import Iterable

from evol.method.textstats import normalize, tokens

# Word n-grams of the templates that a rewrite may not copy (shorter lines count whole).
LEAK_NGRAM = 6


# The paper's markers and the labels models echo back, whatever the templates say.
PAPER_MARKERS = (
    "#given prompt#",
    "#rewritten prompt#",
    "#created prompt#",
    "given prompt",
    "rewritten prompt",
    "created prompt",
    "rewritten instruction",
    "original instruction",
    "new instruction:",
    "input: (none)",
    # Pieces of our own prompts that small models echo in a shape no 6-gram matches.
    "rewritten version",
    "rewrite the instruction",
    "no heading",
    # The paper's own prompts (WizardLM's depth and breadth templates, Auto Evol-Instruct's
    # steps), which models trained on Evol-Instruct data echo whatever our templates say.
    "prompt rewriter",
    "prompt creator",
    "the original prompt",
    "the original question",
    "understood and responded",
    "responded to by humans",
    "answered by humans",
    "must not be verbose",
    "10 to 20 words",
    "non-text parts",
    "constraints/requirements",
    "replace general concepts",
    "more specific concepts",
    "multiple-step reasoning",
    "identify the methods",
    "list all the possible methods",
    "finally rewritten",
    "this new prompt",
)


class LeakDetector:
    """The evolving prompts' own words, which have no business in an instruction.

    Built from the templates a run loads (`--prompts` overrides included): every tag, every
    template line of 3 to 5 words whole, and every word 6-gram of a longer line, plus the
    paper's markers. A rewrite leaks when it holds one that its parent did not.
    """

    def __init__(self, phrases: Iterable[str], ngrams: Iterable[tuple[str, ...]] = ()):
        self.phrases = tuple(dict.fromkeys(normalize(p) for p in phrases if p.strip()))
        self.ngrams = frozenset(ngrams)
        # Phrases of words only match whole words ("given prompt"); the others (tags,
        # "#...#", "input: (none)") match the normalised text as it is.
        self._in_words = tuple(p for p in self.phrases if p == " ".join(tokens(p)))
        self._in_text = tuple(p for p in self.phrases if p not in self._in_words)

    @classmethod
    def from_templates(cls, texts: Iterable[str]) -> LeakDetector:
        phrases, ngrams = list(PAPER_MARKERS), set()
        for text in texts:
            phrases += re.findall(r"</?[A-Za-z_]+>", text)
            for line in text.splitlines():
                line = re.sub(r"\$\w+|\$\{\w+\}", " ", line)  # placeholders are not words
                line_tokens = tokens(line)
                if 3 <= len(line_tokens) < LEAK_NGRAM:
                    phrases.append(" ".join(line_tokens))
                ngrams.update(_ngrams(line_tokens, LEAK_NGRAM))
        return cls(phrases, ngrams)

    def find(self, parent: str, child: str) -> str | None:
        """The first phrase of the prompts that `child` holds and `parent` did not."""
        child_text, child_tokens = normalize(child), tokens(child)
        child_words = f" {' '.join(child_tokens)} "
        found = [p for p in self._in_text if p in child_text]
        found += [p for p in self._in_words if f" {p} " in child_words]
        copied = _ngrams(child_tokens, LEAK_NGRAM) & self.ngrams
        if not found and not copied:
            return None  # the usual case: the parent need not be read at all
        parent_text, parent_tokens = normalize(parent), tokens(parent)
        parent_words = f" {' '.join(parent_tokens)} "
        for phrase in found:
            if phrase in self._in_words:
                if f" {phrase} " not in parent_words:  # whole words: "forgiven prompts" holds none
                    return phrase
            elif phrase not in parent_text:
                return phrase
        copied -= _ngrams(parent_tokens, LEAK_NGRAM)
        return " ".join(min(copied)) if copied else None


def _ngrams(sequence: list[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(sequence[i : i + n]) for i in range(len(sequence) - n + 1)}
