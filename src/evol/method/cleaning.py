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

from evol.method.closing_words import (
    CLOSING_MAX_CHARS,
    LETTER,
    SENTENCE_START,
    before_blanks,
    closing_words_start,
    is_talk_about_the_rewrite,
)

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
    r"|evolved\s++|modified\s++)?(?:version|instruction|prompt|rewrite|revision)\b"
    r"|the\s++(?:new|rewritten|revised|updated|evolved|modified)\s++(?:version|instruction|prompt)\b"
    # A note that speaks of the rewrite; "Note: the answer must be in French" is the task's.
    r"|note\s*+:\s*+(?:\*\*|__)?\s*+(?:i\b|i've\b|this\b|these\s++changes\b|my\b|the\s++(?:new|rewritten"
    r"|revised|original)\b)|explanation\s*+:|changes?(?:\s++made)?\s*+:)",
    re.IGNORECASE,
)
_FENCE = re.compile(
    r"^\s*+```[\w+-]*+[ \t]*+\n(?P<body>[^\n]*+(?:\n(?!```\s*+$)[^\n]*+)*+)\n```\s*+$"
)
# At most this many layers come off one reply (the loop stops sooner when nothing changes).
MAX_LAYERS = 8
# A copy of the input shorter than this may be a coincidence ("x = 1"): it is left in.
MIN_INPUT_COPY = 20
_QUOTES = {
    '"': '"',
    "'": "'",
    "*": "*",
    "\u201c": "\u201d",
    "\u2018": "\u2019",
    "`": "`",
    "\u00ab": "\u00bb",
}


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
    """A rewritten instruction without think block, preamble, label, quotes, fence, closing
    words to the user, or a copy of the input or a placeholder for it at its end (the input is
    carried separately, unchanged)."""
    text, stripped = _without_thinking(reply)
    text = text.strip()
    for _ in range(MAX_LAYERS):  # layers can nest: a label inside quotes inside a fence
        before = text
        text = _peel(text, stripped, input_text)
        if text == before:
            break
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


def _peel(text: str, stripped: list[str], input_text: str = "") -> str:
    """Take off the outermost wrapper layer it recognises, if any."""
    for pattern, name in _OPENINGS:
        if (match := pattern.match(text)) and match.end() < len(text):
            stripped.append(f"{name} {match.group().strip()!r}")
            return text[match.end() :].strip()
    if (start := _intro_end(text)) is not None or (start := _last_label_line_end(text)):
        stripped.append(f"preamble {text[:start].strip()[:60]!r}")
        return text[start:].strip()
    if start := _afterword_start(text):
        stripped.append(f"an afterword {text[start:].strip()[:60]!r}")
        return text[:start].strip()
    if start := closing_words_start(text):
        stripped.append(f"an afterword {text[start:].strip()[:60]!r}")
        return text[:start].strip()
    if (start := echoed_input_start(text, input_text)) is not None:
        echoed = text[start:].strip()
        copy = _unfenced(echoed) == input_text.strip()
        stripped.append("a copy of the input" if copy else f"an echoed input {echoed[:40]!r}")
        return text[:start].strip()
    if match := _FENCE.match(text):
        stripped.append("a code fence around the whole reply")
        return match["body"].strip()
    if match := _RULES_AROUND.fullmatch(text):
        stripped.append("rules around the whole reply")
        return match["body"].strip()
    if len(text) >= 2 and (close := _QUOTES.get(text[0])) and text.endswith(close):
        inner = text[1:-1]
        if _quoted_once(inner, text[0], close):
            stripped.append("quotes around the whole reply")
            return inner.strip()
    return text


def _last_label_line_end(text: str) -> int | None:
    """Where the rewrite starts after the last line that only labels it ("Final rewritten
    prompt:", "### Rewritten Prompt", "[Rewritten Prompt]"), with steps or notes above it."""
    end = None
    for match in _LABEL_LINE.finditer(text):
        end = match.end()
    return end if end is not None and text[end:].strip() else None


def _quoted_once(inner: str, opening: str, close: str) -> bool:
    """No quote inside closes the outer pair: inner quotes open and close in turn, and an
    apostrophe between letters ("Rutherford's") is no quote."""
    if opening != close or opening == "*":  # emphasis marks inside: not one pair
        return opening not in inner and close not in inner
    is_open = False
    for at in _find_all(inner, opening):
        if opening == "'" and 0 < at < len(inner) - 1 and inner[at - 1].isalnum():
            continue  # an apostrophe, or the close of a word in single quotes
        before = inner[at - 1] if at else " "
        if not is_open and not (before.isspace() or before in "([{"):
            return False  # a quote that closes before one was opened
        is_open = not is_open
    return not is_open


def _find_all(text: str, char: str) -> list[int]:
    found, at = [], text.find(char)
    while at >= 0:
        found.append(at)
        at = text.find(char, at + 1)
    return found


# "Rewritten: ..." (the noun left out), and a whole line that is a label and nothing else.
_BARE_LABEL = re.compile(
    r"^\s*+(?:\*\*|__)?(?:rewritten|revised|evolved|rephrased)(?:\*\*|__)?\s*+[:\uff1a]\s*+"
    r"(?:\*\*|__)?\s*+",
    re.IGNORECASE,
)
_LABEL_LINE = re.compile(
    r"^[ \t]*+(?:#++[ \t]*+|\*\*|__|\[)?[ \t]*+(?:(?:the|my)[ \t]++)?(?:final(?:ly)?[ \t]++)?"
    r"(?:rewritten|revised|evolved|new|updated|improved)[ \t]++(?:prompt|instruction)[ \t]*+"
    r"#?(?:\]|\*\*|__)?[ \t]*+[:\uff1a]?[ \t]*+(?:\*\*|__)?[ \t]*+$",
    re.IGNORECASE | re.MULTILINE,
)
_OPENINGS = (
    (_PREAMBLE, "preamble"),
    (_INTERJECTION, "preamble"),
    (_LABEL, "label"),
    (_BARE_LABEL, "label"),
)


# Horizontal rules above and below the rewrite: "---\n\nExplain ...\n\n---".
_RULES_AROUND = re.compile(
    r"(?P<rule>-{3,}+|\*{3,}+|_{3,}+)[ \t]*+\n(?P<body>[^\n]*+(?:\n(?![ \t]*+(?P=rule)[ \t]*+$)"
    r"[^\n]*+)*+)\n[ \t]*+(?P=rule)[ \t]*+"
)
# The first line says what follows is the rewrite ("As requested, here is a harder version
# of the instruction:", "[Rewritten Prompt]", "I've rewritten the prompt to ...").
_INTRO_SUBJECT = re.compile(
    r"\b(?:(?:rewritten|revised|evolved|rephrased|new|updated|improved|modified|harder|final"
    r"|complex|complicated|challenging|difficult|advanced|deeper|detailed|specific|my)\s++"
    r"(?:version|prompt|instruction|question|task|attempt|take)|version\s++of\s++the\s++"
    r"(?:given\s++|original\s++)?(?:prompt|instruction|question|task))\b",
    re.IGNORECASE,
)
_INTRO_SPEECH = re.compile(
    r"\b(?:here(?:'s|\s++is|\s++are)|below|as\s++requested|i've|i\s++have)\b"
    r"|^[\W_]*+(?:final\s++)?(?:rewritten|revised|evolved)\b",
    re.IGNORECASE,
)
INTRO_MAX_CHARS = 300


def _intro_end(text: str) -> int | None:
    """Where the rewrite starts after a first line or paragraph that only introduces it."""
    for end in (text.find("\n"), text.find("\n\n")):
        if not 0 < end <= INTRO_MAX_CHARS or not text[end:].strip():
            continue
        intro = text[:end].strip()
        introduces = intro.endswith((":", ":**", "]")) or intro.lower().endswith("below.")
        if introduces and _INTRO_SUBJECT.search(intro) and _INTRO_SPEECH.search(intro):
            return end
        if "\n" not in intro and is_talk_about_the_rewrite(intro):
            return end
    return None


def _afterword_start(text: str) -> int | None:
    """Where the first paragraph break before a closing paragraph about the rewrite begins."""
    for paragraph_break in _PARAGRAPH_BREAK.finditer(text):
        if _AFTERWORD_OPENING.match(text, paragraph_break.end()):
            return paragraph_break.start()
    return None


# -- an input echoed after the rewrite (closing words: evol.method.closing_words) ----------


# An input block or a placeholder for one, glued after the rewrite: "Input: (none)", "<noinput>",
# "### Input\n<the parent's input>", "Context: N/A", "[insert text here]".
_INPUT_LABEL = re.compile(
    r"[ \t]*+(?:#++[ \t]*+|\*\*|__)?[ \t]*+#?(?:input|inputs|context|text|data|passage|code"
    r"|sentence|paragraph|example\s++input|given\s++input)#?[ \t]*+(?:\*\*|__)?[ \t]*+[:\-]?"
    r"[ \t]*+(?:\*\*|__)?\s*+",
    re.IGNORECASE,
)
_PLACEHOLDER = re.compile(
    r"[(\[<{]?\s*+(?:none|n/?a|nan|null|nil|empty|blank|no\s++input(?:\s++(?:required|needed"
    r"|provided|given))?|noinput|not\s++applicable|no\s++context|input|\$input|insert[^\n\]>)]{0,40}"
    r"here|-+|\u2014|\.\.\.|\u2026)?\s*+[)\]>}]?(?:\s*+</input>)?[.!]?",
    re.IGNORECASE,
)


def echoed_input_start(text: str, input_text: str) -> int | None:
    """Where an input block or placeholder glued after the rewrite begins, if one is.

    The last paragraph, line or sentence is one when it is a bare placeholder, or an input
    label followed by a placeholder or by the parent's input; a block in a code fence, or any
    last lines, holding only the parent's input (20 characters or more) are one too."""
    body = text.rstrip()
    starts = [m.start() for m in re.finditer(r"\n", body[-4 * CLOSING_MAX_CHARS :])]
    offset = max(0, len(body) - 4 * CLOSING_MAX_CHARS)
    candidates = [offset + at for at in starts]
    if (last := _last_sentence_start(body)) is not None:
        candidates.append(last)
    block = _input_block_start(body, input_text)
    if block is not None and body[:block].strip():
        return before_blanks(body, block)
    content_from = len(body) - len(body.lstrip())
    for start in sorted(set(candidates)):
        if start > content_from and _is_echo(body[start:], input_text):
            return before_blanks(body, start)
    return None


def _last_sentence_start(body: str) -> int | None:
    found = None
    for match in SENTENCE_START.finditer(body, max(0, len(body) - CLOSING_MAX_CHARS)):
        found = match.end()
    return found


def _is_echo(tail: str, input_text: str) -> bool:
    tail = tail.strip()
    if _PLACEHOLDER.fullmatch(tail) and (tail[:1] in "([<{" or LETTER.search(tail)):
        return True  # "(none)", "<noinput>", "N/A", "No input required."
    if not (label := _INPUT_LABEL.match(tail)) or not label.group().strip():
        return False
    value = _unfenced(tail[label.end() :])
    if not value or _PLACEHOLDER.fullmatch(value):
        return True
    return bool(input_text.strip()) and " ".join(value.split()) == " ".join(input_text.split())


def _input_block_start(body: str, input_text: str) -> int | None:
    """Where the parent's input (or a fence holding only it) ends the rewrite."""
    copy = input_text.strip()
    if len(copy) < MIN_INPUT_COPY or (at := body.rfind(copy)) <= 0:
        return None
    before, after = body[:at].rstrip(" \t"), body[at + len(copy) :].strip()
    fence = before.rstrip("\n").rfind("\n") + 1
    if after == "```" and before.endswith("\n") and before[fence:].lstrip().startswith("```"):
        return fence
    return at if not after and before.endswith(("\n", ":")) else None


def _unfenced(value: str) -> str:
    value = value.strip()
    if match := _FENCE.match(value):
        return match["body"].strip()
    return value
