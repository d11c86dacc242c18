"""How the console says no: any refusal under /ui (not found, not
allowed, a cap, a bad parameter) is a page in the console's frame, with
its menu if a browser is logged in, never the API's JSON. Another owner's
run reads exactly as a missing one: the message is the API's own."""

from __future__ import annotations

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse
from starlette.exceptions import HTTPException

from rgrid_api.console.guard import session_visitor
from rgrid_api.console.render import page

TITLES = {
    400: "Bad request",
    401: "Log in first",
    403: "Not allowed",
    404: "Not found",
    409: "Conflict",
    413: "Too large",
    422: "Bad request",
    429: "Slow down",
}


async def problem_page(request: Request, exc: Exception) -> HTMLResponse:
    status = getattr(exc, "status_code", 500)
    if isinstance(exc, RequestValidationError):
        status = 400
        message = "; ".join(_field_problem(e) for e in exc.errors())
    elif isinstance(exc, HTTPException):
        message = str(exc.detail)
    else:
        message = str(exc)
    # A throttled browser gets no database read for its menu.
    visitor = None if status == 429 else await session_visitor(request, request.app.state.rgrid)
    return page(
        request,
        visitor,
        "message.html",
        status_code=status,
        title=TITLES.get(status, "Not done"),
        message=message,
    )


def _field_problem(error: dict[str, object]) -> str:
    where = error.get("loc", ())
    name = where[-1] if isinstance(where, tuple | list) and where else "a parameter"
    return f"{name}: {error.get('msg', 'not valid')}"
