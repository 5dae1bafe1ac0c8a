"""Who may talk to the web page: Host and Origin checks (always) and a token (beyond loopback).

The page runs code in kernels on this machine, so a request it serves must come from the page
itself, opened by someone entitled to it:

- **Host** (every request): the Host header must name this server: a loopback name
  (`localhost`, `127.0.0.1`, `[::1]`, any 127.x address), the address it is bound to, or a
  name the operator allowed with `--allow-host`. Bound to a wildcard address (`0.0.0.0`,
  `::`), any IP address and this machine's own names are accepted too. A web page that
  rebinds its own DNS name to 127.0.0.1 (DNS rebinding) sends its own name, and is refused.
- **Origin** (every request that carries one): it must be this page's own origin, i.e. the
  scheme and the very Host of the request. Browsers send Origin on every cross-origin request
  and every POST, so another site can neither post to the API nor read it. Without Origin, a
  request that the browser marks `Sec-Fetch-Site: cross-site` or `same-site` is refused too,
  except a plain navigation to the page itself (`GET /`), e.g. a link to it.
- **Token** (when configured; `notebook-agent ui` always configures one when bound beyond
  loopback): every request must carry it, as `Authorization: Bearer TOKEN` or as the cookie
  that visiting `/?token=TOKEN` once sets (HttpOnly, SameSite=Lax). It is compared in constant
  time (`secrets.compare_digest`).

Refusals are 403 (Host, Origin) or 401 (token) with a JSON `detail` that says why.
"""

from __future__ import annotations

import ipaddress
import json
import secrets
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

COOKIE = "notebook_agent_token"
TOKEN_ENV = "NOTEBOOK_AGENT_UI_TOKEN"
MIN_TOKEN_CHARS = 16
LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})
WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "::"})


def new_token() -> str:
    return secrets.token_urlsafe(32)


def _ip(name: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(name)
    except ValueError:
        return None


def normalize_host(name: str) -> str:
    """A host name as compared here: lower case, no brackets, no trailing dot."""
    name = name.strip().lower()
    if name.startswith("[") and name.endswith("]"):
        name = name[1:-1]
    return name.rstrip(".")


def is_loopback(host: str) -> bool:
    """Whether `host` (a name or an address, as given to --host) is loopback only."""
    host = normalize_host(host)
    ip = _ip(host)
    return host in LOOPBACK_NAMES if ip is None else ip.is_loopback


def split_host_header(value: str) -> str | None:
    """The host part of a Host header (`name`, `name:port`, `[v6]:port`), or None if malformed."""
    value = value.strip()
    if not value or any(c in value for c in "/\\@?# \t"):
        return None
    if value.startswith("["):
        end = value.find("]")
        rest = value[end + 1:]
        if end < 0 or (rest and not (rest[0] == ":" and rest[1:].isdigit())):
            return None
        return normalize_host(value[1:end])
    name, sep, port = value.rpartition(":")
    if sep and ":" not in name and port.isdigit():
        return normalize_host(name)
    if ":" in value:  # a bare IPv6 address is not a valid Host header
        return None
    return normalize_host(value)


@dataclass
class AccessPolicy:
    """What `Guard` enforces. `bind_host` is the address the server listens on."""

    bind_host: str = "127.0.0.1"
    token: str | None = None
    allowed_hosts: tuple[str, ...] = ()
    _names: frozenset[str] = field(init=False, repr=False, default=frozenset())

    def __post_init__(self) -> None:
        names = {normalize_host(h) for h in self.allowed_hosts if h.strip()}
        bind = normalize_host(self.bind_host)
        if bind not in WILDCARD_HOSTS:
            names.add(bind)
        else:  # reachable on every interface: this machine's own names too
            for name in (socket.gethostname(), socket.getfqdn()):
                if name:
                    names.add(normalize_host(name))
        self._names = frozenset(names)

    @property
    def wildcard(self) -> bool:
        return normalize_host(self.bind_host) in WILDCARD_HOSTS

    def host_allowed(self, host: str) -> bool:
        if host in self._names or host in LOOPBACK_NAMES:
            return True
        ip = _ip(host)
        return ip is not None and (ip.is_loopback or self.wildcard)

    def token_ok(self, given: str | None) -> bool:
        if self.token is None:
            return True
        if not given:
            return False
        return secrets.compare_digest(given.encode("utf-8", "replace"), self.token.encode("utf-8"))


def _headers(scope: dict[str, Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in scope.get("headers", []):
        name = k.decode("latin-1").lower()
        out[name] = v.decode("latin-1") if name not in out else out[name] + "," + v.decode("latin-1")
    return out


def _cookie(header: str, name: str) -> str | None:
    for part in header.split(";"):
        k, sep, v = part.strip().partition("=")
        if sep and k == name:
            return v.strip().strip('"')
    return None


class Guard:
    """Plain ASGI middleware enforcing an AccessPolicy on every HTTP request (SSE included)."""

    def __init__(self, app: Any, policy: AccessPolicy):
        self.app = app
        self.policy = policy

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = _headers(scope)
        path, method = scope.get("path", ""), scope.get("method", "GET")
        host_header = headers.get("host", "")
        host = split_host_header(host_header)
        if host is None or not self.policy.host_allowed(host):
            shown = ascii(host_header)[1:-1][:100]
            return await _refuse(send, 403, f"request refused: Host {shown!r} is not this server's name "
                                 "(a loopback name, the address it listens on, or one allowed with --allow-host)")
        origin = headers.get("origin")
        if origin is not None:
            parts = urlsplit(origin)
            scheme = scope.get("scheme", "http")
            if parts.scheme != scheme or parts.netloc.lower() != host_header.strip().lower():
                shown = ascii(origin)[1:-1][:100]
                return await _refuse(send, 403, f"cross-site request refused: Origin {shown!r} is not "
                                     "this page's origin")
        else:
            site = headers.get("sec-fetch-site", "").lower()
            navigation = method == "GET" and path == "/" and headers.get("sec-fetch-mode", "navigate") == "navigate"
            if site in ("cross-site", "same-site") and not navigation:
                return await _refuse(send, 403, "cross-site request refused: it did not come from this page")
        if self.policy.token is None:
            return await self.app(scope, receive, send)
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        if path == "/" and method == "GET" and "token" in query:
            if not self.policy.token_ok(query["token"][-1]):
                return await _refuse(send, 401, "wrong token: open the URL that `notebook-agent ui` printed "
                                     "when it started")
            secure = "; Secure" if scope.get("scheme") == "https" else ""
            cookie = f"{COOKIE}={self.policy.token}; Path=/; HttpOnly; SameSite=Lax{secure}"
            return await _respond(send, 303, b"", [(b"location", b"/"), (b"set-cookie", cookie.encode()),
                                                   (b"cache-control", b"no-store")])
        auth = headers.get("authorization", "")
        given = auth[7:].strip() if auth[:7].lower() == "bearer " else None
        if given is None:
            given = _cookie(headers.get("cookie", ""), COOKIE)
        if not self.policy.token_ok(given):
            why = "no token" if not given else "wrong token"
            return await _refuse(send, 401, f"{why}: this server needs its token; open the URL with ?token= "
                                 "that `notebook-agent ui` printed when it started, or send "
                                 "'Authorization: Bearer TOKEN'")
        return await self.app(scope, receive, send)


async def _respond(send: Any, status: int, body: bytes, headers: Iterable[tuple[bytes, bytes]]) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-length", str(len(body)).encode()), *headers]})
    await send({"type": "http.response.body", "body": body})


async def _refuse(send: Any, status: int, message: str) -> None:
    body = json.dumps({"detail": message}).encode()
    await _respond(send, status, body, [(b"content-type", b"application/json"), (b"cache-control", b"no-store")])
