"""Keeping API keys and passwords out of every text evol prints or stores.

A key is checked once at start (a CR from a CRLF `.env` file would otherwise become an
injected header line). A backend holds its `Secrets` (the API key, the password in
`--base-url`) and every text that comes from a server or an HTTP library passes through them
before it is shown or written: a 500 that echoes the request headers, an SDK error that quotes
the Authorization header, a redirect's Location, a model id. Not only the whole secret goes:
every piece of 8 characters of it, so that a key a server echoes split by a newline or a NUL,
or cut short, leaves nothing readable. A server's own words go through `Secrets.cut`: cut
first, a key that straddles the cut would no longer be recognised.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from evol.errors import UsageError

REDACTED = "***"
# Header values that carry credentials, however a server or a library prints them:
# `Authorization: Bearer sk-...`, `"api-key": "..."`, `'x-api-key': b'...'`.
_CREDENTIAL_HEADER = re.compile(
    r"""(?P<name>authorization|proxy-authorization|x-api-key|api-key|api_key)"""
    r"""(?P<sep>['"]?\s*[:=]\s*(?:b?['"])?)"""
    # A value redacted already (display_url's `?api-key=***: ...`, `?api-key=***&api-version=1`)
    # keeps the text after it.
    r"""(?P<value>(?:bearer|basic)\s+[^\s'",}]+|\*\*\*(?=[&:\s'",}]|$)|[^\s'",}]+)""",
    re.IGNORECASE,
)
_BEARER = re.compile(r"\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}", re.IGNORECASE)
# The login in any URL a server quotes, `//user:password@host` (or `//token@host`). It starts
# at a literal `//`, and neither part can hold what ends it: one pass, no backtracking.
_URL_LOGIN = re.compile(r"//(?:(?P<user>[^\s/?#@:]*+):)?+[^\s/?#@]*+@")
# The shortest piece of a secret that is redacted wherever it stands.
PIECE = 8
# What a server may put inside a secret it echoes: whitespace, a NUL, a line break.
_GAP = re.compile(r"[\s\x00-\x1f\x7f-\x9f]+")
_NOT_GAP = re.compile(r"[^\s\x00-\x1f\x7f-\x9f]")
# Query parameters that hold a credential in a URL (Azure's api-version stays readable).
_SECRET_QUERY_NAME = re.compile(r"key|token|secret|password|passwd|sig|auth|credential", re.I)
# Terminal escape sequences (CSI `ESC [ ... final`, OSC `ESC ] ... BEL|ST`, two-byte `ESC x`),
# then any other control character. Disjoint classes in sequence: no backtracking.
_ESCAPE_SEQUENCE = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-_]?|\x9b[0-?]*[ -/]*[@-~]"
)
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]+")
# How much of a server's message an error keeps: enough to read, one line in a terminal.
MESSAGE_LIMIT = 300
# How much of it is read at all: a 16 MB error body is not scanned for a 300-character line.
_READ_LIMIT = 64 * 1024


def check_api_key(key: str, source: str) -> None:
    """Refuse a key an HTTP header cannot carry, naming where it came from, never the key."""
    bad = next((char for char in key if ord(char) < 0x20 or ord(char) == 0x7F), None)
    if bad is not None:
        hint = " (a trailing CR from a CRLF .env file?)" if bad == "\r" else ""
        raise UsageError(f"{source} holds a control character {bad!r}{hint}: remove it")
    try:
        key.encode("latin-1")
    except UnicodeEncodeError:
        raise UsageError(f"{source} holds characters an HTTP header cannot carry") from None


class Secrets:
    """What no text evol shows may hold: an API key, a password. `redact` replaces each whole,
    then every run of text made of its 8-character pieces (whitespace and control characters
    within the run are ignored), then every credential header value and URL login."""

    def __init__(self, *values: str | None):
        self.values = tuple(sorted({v for v in values if v and len(v) >= 4}, key=len)[::-1])
        # Pieces of the secret without its own gaps: a password may hold a space.
        joined = [_GAP.sub("", value) for value in self.values]
        self.pieces = frozenset(
            value[start : start + PIECE]
            for value in joined
            for start in range(len(value) - PIECE + 1)
        )

    @classmethod
    def of(cls, api_key: str | None, urls: Iterable[str] = ()) -> Secrets:
        """The API key and the password in each of `urls`, as typed and as the URL carries it."""
        passwords = [urlsplit(url).password for url in urls]
        return cls(api_key, *passwords, *(unquote(word) for word in passwords if word))

    def redact(self, text: str) -> str:
        """`text` with every secret, every piece of one, and every credential replaced by ***."""
        for secret in self.values:
            text = text.replace(secret, REDACTED)
        text = self._redact_pieces(text)
        text = _CREDENTIAL_HEADER.sub(lambda m: f"{m['name']}{m['sep']}{REDACTED}", text)
        text = _URL_LOGIN.sub(_redacted_login, text)
        return _BEARER.sub(lambda m: f"{m[1]} {REDACTED}", text)

    def cut(self, text: str, limit: int = MESSAGE_LIMIT) -> str:
        """A server's words made fit to store and print: terminal escape sequences and control
        characters out, every secret redacted, and only then cut to `limit` characters."""
        text = _ESCAPE_SEQUENCE.sub("", text[:_READ_LIMIT])
        text = self.redact(_CONTROL.sub(" ", text).strip())
        return text if len(text) <= limit else text[: limit - 3] + "..."

    def found_in(self, text: str) -> bool:
        """Whether `text` holds a secret, or a piece of one."""
        return any(secret in text for secret in self.values) or self._redact_pieces(text) != text

    def _redact_pieces(self, text: str) -> str:
        # Matched in the text without its gaps, so that a key split by a NUL or a line break
        # is found; each piece is a plain substring search (linear), and the covered runs are
        # mapped back to the text, gaps included.
        if not self.pieces:
            return text
        joined = _GAP.sub("", text)
        if not any(piece in joined for piece in self.pieces):
            return text
        covered = bytearray(len(joined))
        for piece in self.pieces:
            start = joined.find(piece)
            while start != -1:
                covered[start : start + PIECE] = b"\x01" * PIECE
                start = joined.find(piece, start + 1)
        places = [match.start() for match in _NOT_GAP.finditer(text)]
        kept, end = [], 0
        for run in re.finditer(rb"\x01+", covered):
            kept += [text[end : places[run.start()]], REDACTED]
            end = places[run.end() - 1] + 1
        return "".join([*kept, text[end:]])


NO_SECRETS = Secrets()


def _redacted_login(login: re.Match[str]) -> str:
    user = login["user"]
    return f"//{REDACTED}@" if user is None else f"//{user}:{REDACTED}@"


def redact(text: str, *secrets: str | None) -> str:
    """`text` with every given secret and every credential replaced by *** (`Secrets.redact`)."""
    return Secrets(*secrets).redact(text)


def redact_then_cut(text: str, secrets: Iterable[str | None], limit: int = MESSAGE_LIMIT) -> str:
    """A server's words made fit to store and print (`Secrets.cut`)."""
    return Secrets(*secrets).cut(text, limit)


def strip_login(url: str) -> str:
    """`url` without its `user:password@`, all else as it was."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=host))


def display_url(url: str) -> str:
    """The URL fit for logs and run.json: no user:password, no credential in the query."""
    parts = urlsplit(strip_login(url))
    if parts.query:
        pairs = parse_qsl(parts.query, keep_blank_values=True)
        safe = [(k, REDACTED if _SECRET_QUERY_NAME.search(k) else v) for k, v in pairs]
        parts = parts._replace(query=urlencode(safe, safe="*"))
    return urlunsplit(parts)
