"""What the console does, each a POST: logging in and out, cancelling and
retrying runs and batches.

Every action is the API's own route called for the logged-in key, so the
console can do exactly what that key can do through the CLI, no more. A
refusal (a cap, a run that cannot be retried) comes back as a page that
says why.
"""

from __future__ import annotations

import secrets

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from rgrid_api.console.guard import COOKIE, LOGIN_COOKIE, PostedForm, form_of, matches, same_origin
from rgrid_api.console.logins import close_session, open_session, session_from_link
from rgrid_api.console.render import page
from rgrid_api.deps import DB, AppState, State
from rgrid_api.routes import batches as batch_routes
from rgrid_api.routes import executions as execution_routes

router = APIRouter(prefix="/ui", include_in_schema=False)

LOGIN_FORM_S = 600


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, problem: str = "") -> HTMLResponse:
    """The key form; its CSRF token also sits in a short-lived cookie
    (before a session there is nothing else to bind it to)."""
    token = secrets.token_urlsafe(24)
    answer = page(request, None, "login.html", login_csrf=token, problem=problem)
    answer.set_cookie(
        LOGIN_COOKIE,
        token,
        max_age=LOGIN_FORM_S,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/ui/login",
    )
    return answer


@router.post("/login")
async def login(request: Request, state: State) -> Response:
    """An API key typed into the form."""
    same_origin(request)
    form = await form_of(request)
    if not matches(form.get("csrf", ""), request.cookies.get(LOGIN_COOKIE, "")) or not form.get("csrf"):
        return login_again(request, "The form was stale: try again.")
    key = form.get("key", "").strip()
    caller = await run_in_threadpool(state.callers.get, key) if key else None
    if caller is None:
        return login_again(request, "That API key was refused.", status_code=401)
    token = await run_in_threadpool(_open, state, caller.key_id)
    return logged_in(request, state, token)


@router.get("/login/{token}")
def login_link(request: Request, token: str, state: State) -> Response:
    """A one-time link from `rgrid console`: it works once, for 60 s."""
    with state.sessions() as session:
        cookie = session_from_link(session, token, state.settings.console_session_s)
        session.commit()
    if cookie is None:
        return login_again(
            request, "That login link was used already or has expired: run `rgrid console` again.", 401
        )
    return logged_in(request, state, cookie)


def _open(state: AppState, key_id: int) -> str:
    with state.sessions() as session:
        token = open_session(session, key_id, state.settings.console_session_s)
        session.commit()
    return token


def login_again(request: Request, problem: str, status_code: int = 403) -> HTMLResponse:
    answer = login_form(request, problem)
    answer.status_code = status_code
    return answer


def logged_in(request: Request, state: AppState, token: str) -> Response:
    answer = RedirectResponse("/ui/", status_code=303)
    answer.set_cookie(
        COOKIE,
        token,
        max_age=int(state.settings.console_session_s),
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/ui",
    )
    answer.delete_cookie(LOGIN_COOKIE, path="/ui/login")
    return answer


@router.post("/logout")
def logout(request: Request, form: PostedForm, session: DB) -> Response:
    close_session(session, request.cookies.get(COOKIE, ""))
    session.commit()
    answer = RedirectResponse("/ui/login", status_code=303)
    answer.delete_cookie(COOKIE, path="/ui")
    return answer


@router.post("/runs/{execution_id}/cancel")
def cancel_run(execution_id: str, form: PostedForm, session: DB, state: State) -> Response:
    view = execution_routes.cancel(execution_id, form[0].caller, session, state)
    return RedirectResponse(f"/ui/runs/{view.id}", status_code=303)


@router.post("/runs/{execution_id}/retry")
def retry_run(execution_id: str, form: PostedForm, session: DB, state: State) -> Response:
    view = execution_routes.retry(execution_id, form[0].caller, session, state, exact=False)
    return RedirectResponse(f"/ui/runs/{view.id}", status_code=303)


@router.post("/batches/{batch_id}/retry-failed")
def retry_failed(batch_id: str, form: PostedForm, session: DB, state: State) -> Response:
    view = batch_routes.retry(batch_id, form[0].caller, session, state, failed=True)
    return RedirectResponse(f"/ui/batches/{view.id}", status_code=303)


@router.post("/batches/{batch_id}/cancel")
def cancel_batch(batch_id: str, form: PostedForm, session: DB, state: State) -> Response:
    view = batch_routes.cancel(batch_id, form[0].caller, session, state)
    return RedirectResponse(f"/ui/batches/{view.id}", status_code=303)


def refused(request: Request, exc: Exception) -> HTMLResponse:
    """A console request the API refused (not found, a cap, a conflict),
    as a page; another owner's id reads exactly as a missing one."""
    status = getattr(exc, "status_code", 500)
    message = exc.detail if isinstance(exc, HTTPException) else str(exc)
    return page(request, None, "message.html", status_code=status, title="Not done", message=str(message))
