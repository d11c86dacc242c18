"""What the console does: logging in and out, cancelling and retrying
runs and batches; every change a POST with the session's CSRF token.

Every action is the API's own route called for the logged-in key, so the
console can do exactly what that key can do through the CLI, no more. A
refusal (a cap, a run that cannot be retried) comes back as a page that
says why (`problems.py`).
"""

from __future__ import annotations

import secrets

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from rgrid_api.console.guard import (
    COOKIE,
    LOGIN_COOKIE,
    PostedForm,
    clear_cookie,
    cookie_name,
    form_of,
    matches,
    posted_form,
    same_origin,
    set_cookie,
    started_here,
)
from rgrid_api.console.logins import close_session, open_session, session_from_link
from rgrid_api.console.render import page
from rgrid_api.deps import DB, AppState, State
from rgrid_api.routes import batches as batch_routes
from rgrid_api.routes import executions as execution_routes

router = APIRouter(prefix="/ui", include_in_schema=False)

LOGIN_FORM_S = 600
LOGIN_PATH = "/ui/login"
LINK_USED = "That login link was used already or has expired: run `rgrid console` again."
LINK_ELSEWHERE = (
    "That login link was opened from another site's page, so it was not used: "
    "open it from `rgrid console` or paste it into the address bar."
)


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request) -> HTMLResponse:
    """The key form."""
    return login_page(request)


def login_page(request: Request, problem: str = "", status_code: int = 200) -> HTMLResponse:
    """The key form, saying `problem` (never text from the request); its
    CSRF token also sits in a short-lived cookie (before a session there is
    nothing else to bind it to)."""
    token = secrets.token_urlsafe(24)
    answer = page(request, None, "login.html", status_code=status_code, login_csrf=token, problem=problem)
    set_cookie(answer, request, LOGIN_COOKIE, token, LOGIN_FORM_S, LOGIN_PATH)
    return answer


@router.post("/login")
async def login(request: Request, state: State) -> Response:
    """An API key typed into the form."""
    same_origin(request)
    form = await form_of(request)
    expected = request.cookies.get(cookie_name(request, LOGIN_COOKIE), "")
    if not expected or not matches(form.get("csrf", ""), expected):
        return login_page(request, "The form was stale: try again.", 403)
    key = form.get("key", "").strip()
    caller = await run_in_threadpool(state.callers.get, key) if key else None
    if caller is None:
        return login_page(request, "That API key was refused.", 401)
    token = await run_in_threadpool(_open, state, caller.key_id)
    return logged_in(request, state, token)


@router.get("/login/{token}")
def login_link(request: Request, token: str, state: State) -> Response:
    """A one-time link from `rgrid console`: it works once, for 60 s, and
    only when opened from outside the browser or typed: a page of another
    site that sends the browser here (to log it in as someone else) is
    refused, and the link is left unused."""
    if not started_here(request):
        return login_page(request, LINK_ELSEWHERE, 403)
    with state.sessions() as session:
        cookie = session_from_link(session, token, state.settings.console_session_s)
        session.commit()
    if cookie is None:
        return login_page(request, LINK_USED, 401)
    return logged_in(request, state, cookie)


def _open(state: AppState, key_id: int) -> str:
    with state.sessions() as session:
        token = open_session(session, key_id, state.settings.console_session_s)
        session.commit()
    return token


def logged_in(request: Request, state: AppState, token: str) -> Response:
    answer = RedirectResponse("/ui/", status_code=303)
    set_cookie(answer, request, COOKIE, token, int(state.settings.console_session_s), "/ui")
    clear_cookie(answer, request, LOGIN_COOKIE, LOGIN_PATH)
    return answer


@router.post("/logout", dependencies=[Depends(posted_form)])
def logout(request: Request, session: DB) -> Response:
    close_session(session, request.cookies.get(cookie_name(request, COOKIE), ""))
    session.commit()
    answer = RedirectResponse(LOGIN_PATH, status_code=303)
    clear_cookie(answer, request, COOKIE, "/ui")
    return answer


@router.post("/runs/{execution_id}/cancel")
def cancel_run(execution_id: str, posted: PostedForm, session: DB, state: State) -> Response:
    visitor, _form = posted
    view = execution_routes.cancel(execution_id, visitor.caller, session, state)
    return RedirectResponse(f"/ui/runs/{view.id}", status_code=303)


@router.post("/runs/{execution_id}/retry")
def retry_run(execution_id: str, posted: PostedForm, session: DB, state: State) -> Response:
    visitor, _form = posted
    view = execution_routes.retry(execution_id, visitor.caller, session, state, exact=False)
    return RedirectResponse(f"/ui/runs/{view.id}", status_code=303)


@router.post("/batches/{batch_id}/retry-failed")
def retry_failed(batch_id: str, posted: PostedForm, session: DB, state: State) -> Response:
    visitor, _form = posted
    view = batch_routes.retry(batch_id, visitor.caller, session, state, failed=True)
    return RedirectResponse(f"/ui/batches/{view.id}", status_code=303)


@router.post("/batches/{batch_id}/cancel")
def cancel_batch(batch_id: str, posted: PostedForm, session: DB, state: State) -> Response:
    visitor, _form = posted
    view = batch_routes.cancel(batch_id, visitor.caller, session, state)
    return RedirectResponse(f"/ui/batches/{view.id}", status_code=303)
