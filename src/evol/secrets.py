"""Keeping API keys out of every text evol prints or stores.

A key is checked once at start (a CR from a CRLF `.env` file would otherwise become an
injected header line), and every error text that comes from a server or an HTTP library passes
through `redact` before it is shown or written: a 500 that echoes the request headers, an SDK
error that quotes the Authorization header, a key in a `--base-url` query. A server's own words
go through `redact_then_cut`: cut first, a key that straddles the cut would no longer be
recognised, and all but its last characters would be kept.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from evol.errors import UsageError

REDACTED = "***"
# Header values that carry credentials, however a server or a library prints them:
# `Authorization: Bearer sk-...`, `"api-key": "..."`, `'x-api-key': b'...'`.
_CREDENTIAL_HEADER = re.compile(
    r"""(?P<name>authorization|proxy-authorization|x-api-key|api-key|api_key)"""
    r"""(?P<sep>['"]?\s*[:=]\s*b?['"]?)(?P<value>(?:bearer|basic)\s+[^\s'",}]+|[^\s'",}]+)""",
    re.IGNORECASE,
)
_BEARER = re.compile(r"\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}", re.IGNORECASE)
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


def redact(text: str, *secrets: str | None) -> str:
    """`text` with every given secret and every credential header value replaced by ***."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, REDACTED)
    text = _CREDENTIAL_HEADER.sub(lambda m: f"{m['name']}{m['sep']}{REDACTED}", text)
    return _BEARER.sub(lambda m: f"{m[1]} {REDACTED}", text)


def redact_then_cut(text: str, secrets: Iterable[str | None], limit: int = MESSAGE_LIMIT) -> str:
    """A server's words made fit to store and print: every secret and credential redacted in
    the whole text, terminal escape sequences and control characters out (and redacted again,
    for a key an escape sequence had split), and only then cut to `limit` characters."""
    secrets = tuple(secrets)
    text = _CONTROL.sub(" ", _ESCAPE_SEQUENCE.sub("", redact(text, *secrets))).strip()
    text = redact(text, *secrets)
    return text if len(text) <= limit else text[: limit - 3] + "..."


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
