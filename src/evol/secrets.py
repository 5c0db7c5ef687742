"""Keeping API keys out of every text evol prints or stores.

A key is checked once at start (a CR from a CRLF `.env` file would otherwise become an
injected header line), and every error text that comes from a server or an HTTP library passes
through `redact` before it is shown or written: a 500 that echoes the request headers, an SDK
error that quotes the Authorization header, a key in a `--base-url` query.
"""

from __future__ import annotations

import re
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


def display_url(url: str) -> str:
    """The URL fit for logs and run.json: no user:password, no credential in the query."""
    parts = urlsplit(url)
    if parts.username or parts.password:
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        if parts.port:
            host = f"{host}:{parts.port}"
        parts = parts._replace(netloc=host)
    if parts.query:
        pairs = parse_qsl(parts.query, keep_blank_values=True)
        safe = [(k, REDACTED if _SECRET_QUERY_NAME.search(k) else v) for k, v in pairs]
        parts = parts._replace(query=urlencode(safe, safe="*"))
    return urlunsplit(parts)
