"""HTTP for the `openai` backend: aiohttp's client, with every limit set.

A run makes hundreds of thousands of small JSON POSTs to servers that may misbehave, so:

- the whole request (connect, send, headers, body) has one deadline: a body that drips a byte
  a second cannot outlive `--timeout`;
- the body is capped (`--max-response-mb`): a Content-Length over the cap is refused before the
  body is read, and the body is counted as aiohttp decodes it, so an endless chunked body or a
  gzip bomb stops at the cap (aiohttp inflates a chunk at a time, never the whole bomb);
- header lines and counts are bounded by aiohttp's limits, and 1xx interim responses (`100
  Continue`, `103 Early Hints`) are skipped by aiohttp, never taken for the reply;
- redirects are not followed: a 3xx is an error that names its Location;
- proxies come from the environment the way the openai SDK takes them (httpx2):
  HTTP_PROXY, HTTPS_PROXY, ALL_PROXY, and NO_PROXY with host names, domains, IP addresses
  and CIDR ranges. tests/llm/test_transport.py checks the choice against httpx2's own.
"""

from __future__ import annotations

import asyncio
import base64
import errno
import ipaddress
import os
import ssl
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import aiohttp

from evol.errors import (
    EndpointUnreachable,
    Redirected,
    TransientBackendError,
    Unreachable,
    UsageError,
)
from evol.secrets import NO_SECRETS, Secrets, display_url, strip_login
from evol.version import __version__

DEFAULT_MAX_RESPONSE_BYTES = 16 * 1024 * 1024
_CHUNK = 1 << 16


@dataclass
class HttpResponse:
    status: int
    headers: Mapping[str, str]  # looked up case-insensitively
    body: bytes


class JsonTransport:
    """Requests to one base URL over one pool of keep-alive connections."""

    def __init__(
        self,
        base_url: str,
        headers: Mapping[str, str],
        *,
        timeout: float,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        secrets: Secrets = NO_SECRETS,
    ):
        """`base_url` without a login: `url_login` turns one into a header. What a server
        says (a Location, a broken reply) is shown redacted of `secrets`."""
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UsageError(f"--base-url {display_url(base_url)}: not an http:// or https:// URL")
        self.where = display_url(base_url)
        self.base = parts._replace(query="", fragment="").geturl().rstrip("/")
        # A query in the base URL goes on every request (Azure's ?api-version=...).
        self.query = f"?{parts.query}" if parts.query else ""
        self.timeout = timeout
        self.secrets = secrets
        self.max_response_bytes = max_response_bytes
        self.headers = {"User-Agent": f"evol/{__version__}", "Accept": "application/json"}
        self.headers |= headers
        self.proxy = proxy_for(base_url)
        self._options: dict[str, Any] = {}
        if self.proxy is not None:
            self._options["proxy"] = self.proxy.url
        if self.proxy is not None and self.proxy.authorization:
            # The login goes where the proxy reads it: an https request's CONNECT, or (aiohttp
            # does not copy proxy_headers there) a plain http request's own headers.
            login = {"Proxy-Authorization": self.proxy.authorization}
            if base_url.startswith("https:"):
                self._options["proxy_headers"] = login
            else:
                self.headers |= login
        self.answered = False  # has this server ever sent a response in this run?
        self._session: aiohttp.ClientSession | None = None

    async def request(self, method: str, path: str, body: bytes | None) -> HttpResponse:
        """Send one request; transport failures become the errors the engine acts on."""
        session = self._session or self._open()
        try:
            async with session.request(
                method,
                self.base + path + self.query,
                data=body,
                allow_redirects=False,
                **self._options,
            ) as reply:
                self.answered = True
                if 300 <= reply.status < 400:
                    location = reply.headers.get("Location")
                    raise redirected(self.where, location, reply.status, self.secrets)
                return HttpResponse(reply.status, reply.headers, await self._body(reply))
        except (TimeoutError, aiohttp.ClientError) as error:
            raise failure_of(
                error,
                self.where,
                self.timeout,
                answered=self.answered,
                secrets=self.secrets,
                proxy=self.proxy,
            ) from None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _body(self, reply: aiohttp.ClientResponse) -> bytes:
        cap = self.max_response_bytes
        length = reply.content_length
        if length is not None and length > cap:
            raise TransientBackendError(
                f"{self.where} announced a reply of {length:,} bytes, over the "
                f"{cap:,}-byte cap (--max-response-mb)"
            )
        if length is not None and "Content-Encoding" not in reply.headers:
            return await reply.read()  # exactly `length` bytes, within the cap: one read
        parts, size = [], 0
        async for chunk in reply.content.iter_chunked(_CHUNK):
            size += len(chunk)
            if size > cap:
                raise TransientBackendError(
                    f"{self.where} sent a reply of over {cap:,} bytes (--max-response-mb)"
                )
            parts.append(chunk)
        return b"".join(parts)

    def _open(self) -> aiohttp.ClientSession:
        # Made here, inside the running event loop. No cookie jar, no environment lookups
        # (the proxy was chosen above), no limit on connections (the engine bounds requests).
        tls = ssl.create_default_context() if self.base.startswith("https:") else None
        loop = asyncio.get_running_loop()
        if loop.get_exception_handler() is None:
            loop.set_exception_handler(_drop_stray_connection_errors)
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, ssl=tls if tls else True),
            headers=self.headers,
            cookie_jar=aiohttp.DummyCookieJar(),
            # One deadline for the whole request, aiohttp's `total`: it runs from connecting to
            # the body's last byte (every read of the body is under it), and costs less CPU
            # than an asyncio.timeout around the request (about 4 us a call, one timer less).
            timeout=aiohttp.ClientTimeout(
                total=self.timeout, connect=None, sock_connect=None, sock_read=None
            ),
            trust_env=False,
            max_line_size=16 * 1024,
            max_field_size=16 * 1024,
            max_headers=100,
        )
        return self._session


def _drop_stray_connection_errors(
    loop: asyncio.AbstractEventLoop, context: dict[str, object]
) -> None:
    """The loop's exception handler while a transport is open: a connection error that no
    task took up is not printed.

    When two requests fail the same way at once (a certificate that does not verify), the
    first stops the run and the second is cancelled; if its TLS handshake had already failed
    in the same turn of the loop, asyncio reports that error as never retrieved, a traceback
    after the run's one-line reason, about the cause that line already names."""
    unclaimed = str(context.get("message", "")).endswith("exception was never retrieved")
    if unclaimed and isinstance(context.get("exception"), OSError):
        return
    loop.default_exception_handler(context)


def failure_of(
    error: TimeoutError | aiohttp.ClientError,
    where: str,
    timeout: float,
    *,
    answered: bool,
    doing: str = "",
    secrets: Secrets = NO_SECRETS,
    proxy: Proxy | None = None,
) -> Exception:
    """The evol error for a request to `where` that aiohttp could not complete: a timeout or
    a broken reply is worth a retry; no connection at all stops the run, unless the endpoint
    `answered` before (it may be restarting). A failure of the `proxy` names the proxy, not
    --base-url. `secrets` are redacted from what aiohttp says."""
    if isinstance(error, TimeoutError):
        return TransientBackendError(f"{where} timed out after {timeout:g}s{doing}")
    if proxy is not None and isinstance(
        error, aiohttp.ClientProxyConnectionError | aiohttp.ClientHttpProxyError
    ):
        cause = (
            f"it answered {error.status} {secrets.cut(error.message)}"
            if isinstance(error, aiohttp.ClientHttpProxyError)
            else _connect_failure(error)
        )
        return unreachable_proxy(proxy, where, cause, answered=answered)
    if isinstance(error, aiohttp.ClientConnectorError):
        # `where` is shown redacted already; redacting it again took the rest of its query.
        why = f"cannot reach {where}: {secrets.redact(_connect_failure(error))}"
        return Unreachable(why) if answered else EndpointUnreachable(f"{why}; check --base-url")
    said = secrets.cut(f"{type(error).__name__}: {error}")
    return TransientBackendError(f"{where} sent a broken reply ({said})")


def redirected(where: str, location: str | None, status: int, secrets: Secrets) -> Redirected:
    """The error for a 3xx: where it points, which a server may have filled with our key."""
    shown = secrets.cut(display_url(location)) if location else "(no Location header)"
    return Redirected(
        f"{where} redirects to {shown} ({status}): point --base-url at the final address"
    )


def unreachable_proxy(proxy: Proxy, where: str, cause: str, *, answered: bool) -> Exception:
    """The error for a proxy that refused or failed the way to `where`, naming the proxy and
    the variable it came from."""
    why = f"cannot reach {where} through the proxy {display_url(proxy.url)}: {cause}"
    if answered:
        return Unreachable(why)
    return EndpointUnreachable(f"{why}; check {proxy.variable} (or NO_PROXY)")


def url_login(base_url: str, key: str | None, key_source: str) -> tuple[str, dict[str, str]]:
    """`base_url` without its `user:password@`, and the header that sends that login as HTTP
    Basic auth (none without a login). A key goes in the same Authorization header, so a login
    next to a key is refused, one line, rather than one of them silently dropped."""
    parts = urlsplit(base_url)
    if parts.username is None and parts.password is None:
        return base_url, {}
    if key is not None:
        raise UsageError(
            f"--base-url {display_url(base_url)} carries user:password@ and an API key is set "
            f"({key_source}): both would go in the Authorization header; keep the key in "
            f"{key_source} and drop user:password@ from --base-url, or unset the key"
        )
    login = f"{unquote(parts.username or '')}:{unquote(parts.password or '')}"
    basic = base64.b64encode(login.encode()).decode()  # RFC 7617, in UTF-8
    return strip_login(base_url), {"Authorization": f"Basic {basic}"}


def _connect_failure(error: aiohttp.ClientConnectorError) -> str:
    """Why a connection failed, in words: the TLS reason, the DNS failure, the refusal."""
    if isinstance(error, aiohttp.ClientConnectorCertificateError):
        reason = getattr(error.certificate_error, "verify_message", None) or str(
            error.certificate_error
        )
        return f"TLS certificate verification failed ({reason})"
    if isinstance(error, aiohttp.ClientConnectorSSLError):
        return f"TLS failed ({getattr(error.os_error, 'reason', None) or error.os_error})"
    if isinstance(error, aiohttp.ClientConnectorDNSError):
        return f"cannot resolve host {error.host!r}"
    # uvloop words every refusal "Connect call failed", and a reset in the TLS handshake comes
    # with no number and no words: name the cause from the error number, or from its kind.
    number = error.os_error.errno or _ERRNO_OF.get(type(error.os_error))
    return os.strerror(number).lower() if number else str(error.os_error)


_ERRNO_OF = {
    ConnectionResetError: errno.ECONNRESET,
    ConnectionAbortedError: errno.ECONNABORTED,
    ConnectionRefusedError: errno.ECONNREFUSED,
    BrokenPipeError: errno.EPIPE,
}


@dataclass(frozen=True)
class Proxy:
    url: str
    authorization: str | None  # the Proxy-Authorization header, from the URL's login
    variable: str  # the environment variable that named it, for messages


def proxy_for(url: str, proxies: Mapping[str, str] | None = None) -> Proxy | None:
    """The proxy the environment names for `url`, chosen as httpx2 (the openai SDK) chooses.

    `proxies` is urllib's view of the environment (`getproxies()`: HTTP_PROXY, HTTPS_PROXY,
    ALL_PROXY, NO_PROXY, lower case first).
    """
    proxies = urllib.request.getproxies() if proxies is None else proxies
    parts = urlsplit(url)
    scheme = parts.scheme if proxies.get(parts.scheme) else "all"
    target = proxies.get(scheme)
    if not target or _bypassed(parts, proxies.get("no", "")):
        return None
    if "://" not in target:
        target = f"http://{target}"
    proxy = urlsplit(target)
    if proxy.scheme not in ("http", "https"):
        raise UsageError(
            f"the proxy {display_url(target)} is a {proxy.scheme} proxy; the openai backend "
            "goes through HTTP proxies only (use --backend openai-sdk, or an HTTP proxy)"
        )
    authorization = None
    if ":" in unquote(proxy.username or ""):
        raise UsageError(
            f"the proxy {display_url(target)} has a ':' in its user name, which HTTP Basic auth "
            "cannot carry (RFC 7617): use a user name without one"
        )
    if proxy.username is not None:
        authorization = aiohttp.encode_basic_auth(
            unquote(proxy.username), unquote(proxy.password or "")
        )
        host = f"[{proxy.hostname}]" if ":" in (proxy.hostname or "") else proxy.hostname
        proxy = proxy._replace(netloc=f"{host}:{proxy.port}" if proxy.port else str(host))
    return Proxy(proxy.geturl(), authorization, f"{scheme.upper()}_PROXY")


def _bypassed(parts, no_proxy: str) -> bool:
    """Whether NO_PROXY exempts the URL, with curl's rules as httpx2 applies them."""
    host = (parts.hostname or "").lower()
    port = parts.port or (443 if parts.scheme == "https" else 80)
    for entry in (item.strip().lower() for item in no_proxy.split(",")):
        if not entry:
            continue
        if entry == "*":
            return True
        if "://" in entry:  # scheme://host[:port]: that host exactly, as httpx2's URLPattern
            scheme, _, entry = entry.partition("://")
            if scheme in ("all", parts.scheme) and _matches(host, port, entry, exact=True):
                return True
        elif _matches(host, port, entry):
            return True
    return False


def _matches(host: str, port: int, entry: str, *, exact: bool = False) -> bool:
    if entry.startswith("[") and "]:" in entry:  # [::1]:8000, an IPv6 address with its port
        entry, _, entry_port = entry[1:].partition("]:")
        if not entry_port.isdigit() or int(entry_port) != port:
            return False
    network = _network(entry)
    if network is not None:
        try:
            return ipaddress.ip_address(host) in network
        except ValueError:
            return False
    name, _, entry_port = entry.rpartition(":") if entry.count(":") == 1 else (entry, "", "")
    if entry_port and entry_port.isdigit() and int(entry_port) != port:
        return False
    name = name.strip("[]")
    if exact:
        return host == name
    if name.startswith("*."):
        name = name[1:]  # *.example.com: the subdomains only, as .example.com
    if name.startswith("."):
        return host.endswith(name)
    return host == name or host.endswith(f".{name}")


def _network(entry: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    """The addresses an IP entry covers (one address, or a CIDR range); None for a name."""
    try:
        return ipaddress.ip_network(entry.strip("[]"), strict=False)
    except ValueError:
        return None
