"""The web console at /ui/: runs, live logs, batches, cost and the grid,
in a browser, served by the API server itself (same origin, no other
process or port).

Pages are rendered on the server (`pages.py`, Jinja2 templates), live
parts are server-sent events (`live.py`), actions are POSTs with CSRF
protection (`actions.py`), and who is logged in is a session cookie
(`logins.py`, `guard.py`). Every asset is in this package.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler, request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException

from rgrid_api.console import actions, live, pages
from rgrid_api.console.guard import ConsoleHeaders, LoginNeeded
from rgrid_api.console.problems import problem_page

STATIC = Path(__file__).parent / "static"


def install(app: FastAPI) -> None:
    """The console's routes, assets, headers and error pages on `app`."""
    for router in (actions.router, live.router, pages.router):
        app.include_router(router)
    app.mount("/ui/static", StaticFiles(directory=STATIC), name="console-static")
    app.add_middleware(ConsoleHeaders)

    @app.exception_handler(LoginNeeded)
    async def to_login(_request: Request, _exc: Exception) -> Response:
        return RedirectResponse("/ui/login", status_code=303)

    # Starlette's own (an unknown path, a wrong method) as well as the routes'.
    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if in_console(request):
            return await problem_page(request, exc)
        return await http_exception_handler(request, exc)

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        if in_console(request):
            return await problem_page(request, exc)
        return await request_validation_exception_handler(request, exc)


def in_console(request: Request) -> bool:
    return request.url.path.startswith("/ui/")


async def refusal(request: Request, exc: Exception) -> Response:
    """The console's page for a refusal the API's own handlers caught."""
    return await problem_page(request, exc)
