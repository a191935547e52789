"""Who may use the web app, and a check that a state-changing request came from its own pages.

- Bound to a loopback address (127.0.0.1, ::1, localhost: the default) the app needs no
  token: only this machine's users reach it.
- Bound to any other address it needs the token (`--token`, `$AGENTX_TOKEN`, or one made at
  start and printed): on every request as `Authorization: Bearer <token>`, or as the cookie
  that `GET /login?token=<token>` sets. Static files and /login are the only exceptions.
- Every state-changing request (POST), on any address, needs the CSRF token: the
  `agentx_csrf` cookie's value, repeated in an `X-CSRF-Token` header or a `csrf` form field
  (a page of another site can make the browser send the cookie, but cannot read it to repeat
  it), and an `Origin`, when the browser sends one, naming this server.

What it does not do: TLS (put a reverse proxy in front for that), user accounts (the token
is shared; a review records the name the reviewer typed), rate limiting.
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
from dataclasses import dataclass
from urllib.parse import urlsplit

from fastapi import HTTPException, Request

CSRF_COOKIE = "agentx_csrf"
TOKEN_COOKIE = "agentx_token"
OPEN_PATHS = ("/login", "/static/")
WRITE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}


def is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass
class Guard:
    """The token (None: loopback, none needed) and the checks every route runs."""

    host: str
    token: str | None = None

    @classmethod
    def for_host(cls, host: str, token: str | None) -> Guard:
        if is_loopback(host):
            return cls(host, token or None)
        return cls(host, token or secrets.token_urlsafe(24))

    @property
    def needs_token(self) -> bool:
        return self.token is not None

    def token_ok(self, request: Request) -> bool:
        if not self.needs_token:
            return True
        given = request.cookies.get(TOKEN_COOKIE) or ""
        header = request.headers.get("authorization", "")
        if header.lower().startswith("bearer "):
            given = header[7:].strip()
        return hmac.compare_digest(given.encode(), self.token.encode())

    async def check(self, request: Request) -> None:
        """The app-wide dependency: the token where one is needed; the CSRF token on writes."""
        path = request.url.path
        if any(path == p or (p.endswith("/") and path.startswith(p)) for p in OPEN_PATHS):
            return
        if not self.token_ok(request):
            raise HTTPException(401, "this agentx server needs its token: open /login?token=... once, or send "
                                     "'Authorization: Bearer <token>' (agentx serve printed it at start)")
        if request.method in WRITE_METHODS:
            await self.check_csrf(request)

    async def check_csrf(self, request: Request) -> None:
        expected = request.cookies.get(CSRF_COOKIE) or ""
        given = request.headers.get("x-csrf-token") or ""
        if not given and request.headers.get("content-type", "").startswith(
                ("application/x-www-form-urlencoded", "multipart/form-data")):
            given = str((await request.form()).get("csrf") or "")
        if not expected or not hmac.compare_digest(given.encode(), expected.encode()):
            raise HTTPException(403, "missing or wrong CSRF token: reload the page and try again")
        origin = request.headers.get("origin")
        if origin and origin != "null" and urlsplit(origin).netloc != request.headers.get("host"):
            raise HTTPException(403, f"refused a request from another site ({origin})")


def csrf_token(request: Request) -> str:
    """The page's CSRF token: the cookie's, or a new one the response sets."""
    return request.cookies.get(CSRF_COOKIE) or request.state.__dict__.setdefault("new_csrf", secrets.token_urlsafe(18))
