"""Closing words to the user at the end of a rewrite, never the task's own words: an offer, a
wish, a check or a note on what was changed, found a sentence at a time from the end.

Every pattern here reads model text and runs in time linear in it (see `evol.method.cleaning`).
"""

from __future__ import annotations

import re

# A closing sentence that speaks to the user or about the rewrite, never the task's own words:
# an offer ("Let me know if ...", "I can also translate it if needed."), a wish ("Hope this
# helps!"), a check ("Does this work for you?") or a note on what was changed ("I added the
# night conditions to make it more complex."). Each reads one short sentence from its start.
_OFFER = re.compile(
    r"(?:just\s++|please\s++|also,?\s++|and\s++)?(?:let\s++me\s++know\b|feel\s++free\s++to\s++"
    r"(?:tweak|adjust|modify|edit|change|customi[sz]e|reach\s++out|ask|let\s++me|add\s++more"
    r"\s++(?:constraints|requirements|details))|(?:would|do)\s++you\s++(?:like|want)\s++(?:me|a"
    r"|an|another|more|it|this|any)\b|want\s++(?:me|a|an|another|more)\b[^.!?]{0,60}\?"
    r"|shall\s++i\b|is\s++there\s++anything\s++else|anything\s++else\b[^.!]{0,60}\?"
    r"|(?:does|do|will|would)\s++(?:this|that|it)\s++(?:work|look|sound|fit|suit|meet)[^.!?]{0,40}"
    r"\b(?:you|your)\b|is\s++(?:this|that|it)\s++what\s++you|how\s++does\s++(?:this|that)\s++"
    r"(?:look|sound)|what\s++do\s++you\s++think|(?:i\s++)?hope\s++(?:this|that|it|you)\b"
    r"|good\s++luck\b|best\s++of\s++luck|have\s++fun\b|enjoy\b|happy\s++\w+ing\b|cheers\b"
    r"|thanks\b|thank\s++you\b|(?:sorry|apologies)\s++(?:if|for)\b"
    r"|if\s++(?:you(?:'d)?\s++(?:like|want|need|prefer|wish)|needed|necessary|that's|this\s++is"
    r"|it's|that\s++is|it\s++is)\b[^.!?]{0,80}\b(?:i\s++can|i\s++could|i'll|i\s++will|i'd|let\s++me\s++know"
    r"|just\s++ask|feel\s++free)\b"
    r"|i\s++(?:can|could)\s++also\b|i(?:\s++can|\s++could|'d\s++be\s++happy\s++to|\s++would\s++be"
    r"\s++happy\s++to|'m\s++happy\s++to|\s++am\s++happy\s++to)\b[^.!?]{0,80}\b(?:if\s++you|if"
    r"\s++needed|if\s++necessary|depending\s++on|for\s++you|your\s++needs|as\s++needed|on"
    r"\s++request)\b)",
    re.IGNORECASE,
)
_CHANGE_NOTE = re.compile(
    r"(?:note\s*+:\s*+)?(?:i(?:'ve|\s++have)?\s++(?:added|made|tried|rewrote|rewritten|changed"
    r"|included|kept|focused|expanded|increased|introduced|revised|incorporated|modified|adjusted"
    r"|chose|narrowed|deepened|turned|asked)\b[^.!?]{0,160}\b(?:prompt|instruction|question|task"
    r"|version|original|complex|complicated|challenging|difficult|specific|harder|deeper|depth"
    r"|concise|constraints?|requirements?|asked\s++for|angles?)\b"
    r"|(?:this|that)\s++(?:should|will|now|makes|adds|is\s++now)\b[^.!?]{0,80}\b(?:original"
    r"|than\s++before|the\s++(?:first|previous)\s++(?:one|version))\b|(?:this|my)\s++(?:new\s++|rewritten\s++|revised\s++|updated\s++)?"
    r"(?:version|revision|rewrite)\b)",
    re.IGNORECASE,
)
# Where a closing sentence may start: after a sentence's end mark (and a closing quote or
# bracket) and blanks, or at a line break.
SENTENCE_START = re.compile(r"(?:[.!?\u2026][\"'\u201d\u2019)\]]?+[ \t]++|\n[ \t]*+)(?=\S)")
CLOSING_MAX_CHARS = 300
LETTER = re.compile(r"[^\W\d_]")


def is_talk_about_the_rewrite(sentence: str) -> bool:
    """Whether one short sentence speaks to the user or about the rewrite (see `_OFFER`)."""
    sentence = sentence.strip().strip("()[]*_ \t\n")
    if len(sentence) > CLOSING_MAX_CHARS:
        return False
    return bool(_OFFER.match(sentence) or _CHANGE_NOTE.match(sentence))


def closing_words_start(text: str) -> int | None:
    """Where closing sentences to the user begin at the end of `text`, if any (only the last
    few hundred characters are read, so this costs the same on any length)."""
    tail_start = max(0, len(text) - 2 * CLOSING_MAX_CHARS)
    starts = [m.end() for m in SENTENCE_START.finditer(text, tail_start)]
    cut, end = None, len(text)
    for start in reversed(starts):  # the last sentence first, then the one before it
        if not LETTER.search(text, start, end):
            end = start
            continue  # an emoji after "Happy strumming!" goes with the sentence before it
        if not is_talk_about_the_rewrite(text[start : len(text) if cut is None else cut]):
            break
        cut = end = start
    if cut is None or not text[:cut].strip() or text[:cut].rstrip().endswith(":"):
        return None  # nothing before it, or a line that introduces it as the task's own
    return before_blanks(text, cut)


def before_blanks(text: str, at: int) -> int:
    """`at`, moved back over the blanks before it."""
    while at > 0 and text[at - 1].isspace():
        at -= 1
    return at
