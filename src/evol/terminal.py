"""Text from outside (a server, a seed file, a run directory) made inert before it is printed.

A terminal obeys what it is sent: CSI sequences move the cursor and recolour, OSC sequences set
the window title or, with OSC 52, write the clipboard, C1 controls start either of them in one
byte, and the bidirectional overrides reorder what is shown. `printable` shows each control
character as its escape (ESC as `\\x1b`, RLO as `\\u202e`), so a sequence is seen, not obeyed;
`json_printable` does the same inside JSON text, where the escape keeps the value.
"""

from __future__ import annotations

import re

# C0 and C1 controls (with DEL) but tab and newline, and the bidi embeddings, overrides and
# isolates.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
_CONTROL_OR_BREAK = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
# What JSON serialisers leave raw inside a string: DEL, C1, the bidi controls (C0 they escape).
_RAW_IN_JSON = re.compile("[\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def printable(text: str, *, lines: bool = True) -> str:
    """`text` with every control character shown as its escape; tab and newline kept with
    `lines`, escaped too without (for what must stay one line, such as an error)."""
    return (_CONTROL if lines else _CONTROL_OR_BREAK).sub(_escaped, text)


def json_printable(text: str) -> str:
    """JSON text with the controls its serialiser left raw written as `\\u` escapes: the same
    JSON value, nothing a terminal acts on."""
    return _RAW_IN_JSON.sub(lambda match: f"\\u{ord(match.group()):04x}", text)


def _escaped(match: re.Match[str]) -> str:
    return repr(match.group())[1:-1]
