"""The console's doors: who is logged in, that a form came from the
console itself, and the headers every console answer carries.

- A page without a live session sends the browser to the login page; a
  live part (an event stream) answers 401.
- Every POST carries the session's CSRF token in its form and, when the
  browser says where it comes from (`Origin`, `Sec-Fetch-Site`), comes from
  this origin. The session cookie is also SameSite=Strict: a request that
  another site starts carries no session at all.
- Answers forbid inline scripts and framing (Content-Security-Policy),
  sniffing, caching, and referrers to other sites (a login link is a
  secret in a URL).
"""

from __future__ import annotations

import hmac
from typing import Annotated
from urllib.parse import parse_qs, urlsplit

from fastapi import Depends, HTTPException, Request, Response
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rgrid_api.console.logins import Visitor, visitor
from rgrid_api.deps import AppState, app_state

COOKIE = "rgrid_console"
LOGIN_COOKIE = "rgrid_console_login"  # the login form's CSRF token, before any session
MAX_FORM_BYTES = 16 * 1024


def cookie_name(request: Request, name: str) -> str:
    """Over https a `__Host-` cookie: Secure, Path=/ and no Domain, so a
    sibling subdomain cannot set or shadow it (browsers do not tell ports
    apart: serve storage from its own host name, as the operations guide
    says). Plain http (loopback, a tunnel) cannot have one."""
    return f"__Host-{name}" if _https(request) else name


def set_cookie(response: Response, request: Request, name: str, value: str, max_age: int, path: str) -> None:
    """HttpOnly and SameSite=Strict always; Secure, `__Host-` and the
    whole path over https (the prefix demands Path=/)."""
    response.set_cookie(
        cookie_name(request, name),
        value,
        max_age=max_age,
        httponly=True,
        samesite="strict",
        secure=_https(request),
        path="/" if _https(request) else path,
    )


def clear_cookie(response: Response, request: Request, name: str, path: str) -> None:
    response.delete_cookie(
        cookie_name(request, name),
        path="/" if _https(request) else path,
        secure=_https(request),
        httponly=True,
        samesite="strict",
    )


def _https(request: Request) -> bool:
    return request.url.scheme == "https"


CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    # A login link's token must not leave in a Referer; this origin's own
    # pages may name themselves (browsers then send a real Origin on POST).
    (b"referrer-policy", b"same-origin"),
    (b"cache-control", b"no-store"),
]


class LoginNeeded(Exception):
    """A page asked for without a live session: the login page answers."""


class ConsoleHeaders:
    """Adds HEADERS to every answer under /ui (the API's JSON answers are
    left as they are)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/ui"):
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *HEADERS]
            await send(message)

        await self.app(scope, receive, with_headers)


async def session_visitor(request: Request, state: AppState) -> Visitor | None:
    """The browser's live session, if it has one (no rate limit taken)."""
    token = request.cookies.get(cookie_name(request, COOKIE))
    if not token:
        return None

    def read() -> Visitor | None:
        with state.readers() as session:
            return visitor(session, token)

    return await run_in_threadpool(read)


async def _visitor(request: Request, state: AppState) -> Visitor | None:
    found = await session_visitor(request, state)
    if found is not None:
        state.rate_limit.take(found.caller.key_id)
    return found


async def still_logged_in(request: Request, state: AppState) -> bool:
    """Whether a long answer's session is still alive (not logged out,
    not expired, its key not revoked)."""
    return await session_visitor(request, state) is not None


async def page_visitor(request: Request, state: Annotated[AppState, Depends(app_state)]) -> Visitor:
    """The logged-in browser of a page; else to the login page."""
    found = await _visitor(request, state)
    if found is None:
        raise LoginNeeded()
    return found


async def live_visitor(request: Request, state: Annotated[AppState, Depends(app_state)]) -> Visitor:
    """The logged-in browser of a live part or a download; else 401."""
    found = await _visitor(request, state)
    if found is None:
        raise HTTPException(401, "log in to the console first")
    return found


def same_origin(request: Request) -> None:
    """Refuse a request the browser says another site started: by
    `Sec-Fetch-Site` where the browser sends it (every current one does),
    else by `Origin`."""
    site = request.headers.get("sec-fetch-site")
    if site is not None:
        if site not in ("same-origin", "none"):
            raise HTTPException(403, "a console form must come from the console")
        return
    origin = request.headers.get("origin")
    if origin is None:
        return  # not a browser's cross-site form; the CSRF token still decides
    parts = urlsplit(origin)
    if origin == "null" or (parts.scheme, parts.netloc) != (request.url.scheme, request.url.netloc):
        raise HTTPException(403, "a console form must come from the console")


def started_here(request: Request) -> bool:
    """Whether the browser says this navigation was typed, opened from
    outside the browser (`rgrid console`) or came from the console itself,
    not from another site's page."""
    return request.headers.get("sec-fetch-site", "none") in ("none", "same-origin")


async def form_of(request: Request) -> dict[str, str]:
    """A url-encoded form, each field's first value; a larger one is
    refused before it is read."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_FORM_BYTES:
        raise HTTPException(413, "form too large")
    body = b""
    async for part in request.stream():
        body += part
        if len(body) > MAX_FORM_BYTES:
            raise HTTPException(413, "form too large")
    try:
        fields = parse_qs(body.decode(), keep_blank_values=True, max_num_fields=20)
    except (UnicodeDecodeError, ValueError):
        raise HTTPException(400, "the form could not be read") from None
    return {name: values[0] for name, values in fields.items()}


def matches(presented: str, expected: str) -> bool:
    return hmac.compare_digest(presented.encode(), expected.encode())


async def posted_form(
    request: Request, state: Annotated[AppState, Depends(app_state)]
) -> tuple[Visitor, dict[str, str]]:
    """A logged-in browser's form, checked: same origin, its CSRF token."""
    same_origin(request)
    found = await live_visitor(request, state)
    form = await form_of(request)
    if not matches(form.get("csrf", ""), found.csrf_token):
        raise HTTPException(403, "the form's CSRF token is missing or stale: reload the page")
    return found, form


PageVisitor = Annotated[Visitor, Depends(page_visitor)]
LiveVisitor = Annotated[Visitor, Depends(live_visitor)]
PostedForm = Annotated[tuple[Visitor, dict[str, str]], Depends(posted_form)]
