"""Taking off what models wrap their replies in, before any rule reads them.

Real models rarely reply with the bare rewrite: a reasoning model puts its `<think>` block
first, chat models say "Sure! Here is the rewritten instruction:", label it "**New
instruction:**", quote it or fence it, and close with a paragraph about it ("This version
adds ..."). Left on, the wrapper is either kept as part of a
training instruction or wasted as a prompt leak. `clean_rewrite` takes off each layer it
recognises, in any order, and says what it took off; `clean_reply` only takes off the think
block (an answer that starts "Sure! Here is..." is a normal answer).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Every pattern here reads model text, which can be megabytes of newlines from a stuck model:
# each must run in time linear in its input. Whitespace runs next to other whitespace runs are
# possessive (`\s*+`), so a failed match never tries the ways of splitting one run between
# them (`#` then 2,000 spaces took a minute that way); the closing paragraph is found by a
# scan in Python, not by a pattern that ends in `(?:\n[^\n]*)*\s*$`. A block runs to its end
# tag as `[^<]*+(?:<(?!end)[^<]*+)*+`, not `.*?`, which tries the end tag at every character
# (a hundred times slower on a megabyte, in one call that holds the GIL); a fence likewise.
_THINK = re.compile(
    r"^\s*+<(?P<tag>think|thinking|reasoning)>"
    r"(?P<thought>[^<]*+(?:<(?!/(?P=tag)>)[^<]*+)*+)(?:</(?P=tag)>|\Z)",
    re.IGNORECASE,
)
# DeepSeek-R1's chat template opens the block in the prompt: the reply starts inside it.
_THINK_TAIL = re.compile(r"^(?P<thought>[^<]*+(?:<(?!/?think>)[^<]*+)*+)</think>", re.IGNORECASE)
_PREAMBLE = re.compile(
    r"^\s*+(?:(?:sure|certainly|of course|absolutely|okay|ok|great|alright|gladly)\b[!,.]*+\s*+)?"
    r"(?:here(?:'s|\s++is|\s++are)|below\s++is|the\s++following\s++is)\b"
    # ...and it speaks of the rewrite: "Here is a list of fruits:" begins an instruction.
    r"[^\n:]{0,60}\b(?:version|instruction|prompt|question|task|request|rewrite|rewritten"
    r"|revised|rephrased)\b[^\n:]{0,40}:\s*+",
    re.IGNORECASE,
)
_INTERJECTION = re.compile(
    r"^\s*+(?:sure|certainly|of course|absolutely|okay|ok|great|alright|gladly)[!.]*+\s*\n",
    re.IGNORECASE,
)
_LABEL = re.compile(
    r"^\s*+(?:#++\s*+)?(?:\*\*|__)?\s*+#?\s*+(?:(?:the|my|your)\s++)?"
    r"(?:(?:new|rewritten|revised|evolved|created|updated|improved|modified|final|harder|deeper"
    r"|more\s++complex|complicated|concretized)\s++)?"
    r"(?:version\s++of\s++the\s++)?(?:instruction|prompt|question|task|request)\s*+#?\s*+"
    r"(?:(?:is|reads|would\s++be)\s*+)?(?:\*\*|__)?\s*+[:：]\s*+(?:\*\*|__)?\s*+",
    re.IGNORECASE,
)
# A paragraph break: a newline, then blanks holding at least one more newline.
_PARAGRAPH_BREAK = re.compile(r"\n[^\S\n]*+\n\s*+")
# The opening of a closing paragraph about the rewrite: "This version adds ...", "Note: ...".
_AFTERWORD_OPENING = re.compile(
    r"(?:\*\*|__)?(?:(?:this|my)\s++(?:new\s++|rewritten\s++|revised\s++|updated\s++"
    r"|evolved\s++|modified\s++)?(?:version|instruction|prompt|rewrite)\b"
    r"|the\s++(?:new|rewritten|revised|updated|evolved|modified)\s++(?:version|instruction|prompt)\b"
    r"|note\s*+:|explanation\s*+:|changes?(?:\s++made)?\s*+:)",
    re.IGNORECASE,
)
_FENCE = re.compile(
    r"^\s*+```[\w+-]*+[ \t]*+\n(?P<body>[^\n]*+(?:\n(?!```\s*+$)[^\n]*+)*+)\n```\s*+$"
)
_QUOTES = {'"': '"', "'": "'", "\u201c": "\u201d", "\u2018": "\u2019", "`": "`", "\u00ab": "\u00bb"}


@dataclass(frozen=True)
class Cleaned:
    """A reply with its wrappers off, and what was taken off (empty when nothing was)."""

    text: str
    stripped: tuple[str, ...] = ()

    @property
    def detail(self) -> str | None:
        return "stripped " + "; ".join(self.stripped) if self.stripped else None


def clean_reply(reply: str) -> Cleaned:
    """An answer or a verdict without a leading think block."""
    text, stripped = _without_thinking(reply)
    return Cleaned(text.strip(), tuple(stripped))


def clean_rewrite(reply: str, input_text: str = "") -> Cleaned:
    """A rewritten instruction without think block, preamble, label, quotes, fence, or a copy
    of the input that goes along with it (the input is carried separately, unchanged)."""
    text, stripped = _without_thinking(reply)
    text = text.strip()
    for _ in range(4):  # layers can nest: a label inside quotes inside a fence
        before = text
        text = _peel(text, stripped)
        if text == before:
            break
    if input_text.strip() and len(input_text.strip()) >= 20 and input_text.strip() in text:
        text = text.replace(input_text.strip(), "").strip()
        stripped.append("a copy of the input")
    return Cleaned(text, tuple(stripped))


def _without_thinking(reply: str) -> tuple[str, list[str]]:
    if match := _THINK.match(reply):
        closed = match.end() < len(reply) or reply.rstrip().lower().endswith(
            f"</{match['tag'].lower()}>"
        )
        what = f"a <{match['tag'].lower()}> block" + ("" if closed else " (never closed)")
        return reply[match.end() :], [what]
    if match := _THINK_TAIL.match(reply):
        return reply[match.end() :], ["reasoning ending in </think>"]
    return reply, []


def _peel(text: str, stripped: list[str]) -> str:
    """Take off the outermost wrapper layer it recognises, if any."""
    for pattern, name in ((_PREAMBLE, "preamble"), (_INTERJECTION, "preamble"), (_LABEL, "label")):
        if (match := pattern.match(text)) and match.end() < len(text):
            stripped.append(f"{name} {match.group().strip()!r}")
            return text[match.end() :].strip()
    if start := _afterword_start(text):
        stripped.append(f"an afterword {text[start:].strip()[:60]!r}")
        return text[:start].strip()
    if match := _FENCE.match(text):
        stripped.append("a code fence around the whole reply")
        return match["body"].strip()
    if len(text) >= 2 and (close := _QUOTES.get(text[0])) and text.endswith(close):
        inner = text[1:-1]
        if text[0] not in inner and close not in inner:
            stripped.append("quotes around the whole reply")
            return inner.strip()
    return text


def _afterword_start(text: str) -> int | None:
    """Where the first paragraph break before a closing paragraph about the rewrite begins."""
    for paragraph_break in _PARAGRAPH_BREAK.finditer(text):
        if _AFTERWORD_OPENING.match(text, paragraph_break.end()):
            return paragraph_break.start()
    return None
