"""Pages from templates, and the words and numbers they show.

Autoescaping is on for every template, and nothing is ever marked safe:
whatever a job printed or named (a log line, a script or input name, an
argument) reaches the browser as text. The words for a run's ending come
from `rgrid.outcome` and for its usage from `rgrid.sizing`, so the console
says what the CLI says.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from rgrid.outcome import describe
from rgrid.sizing import usage_hint, usage_line
from rgrid.wire import FailureReason, Status
from rgrid_api.console.logins import Visitor

TEMPLATES = Environment(
    loader=PackageLoader("rgrid_api.console", "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def when(value: datetime | None) -> str:
    """`2026-12-07 08:01:02` (UTC, as the CLI's times)."""
    if value is None:
        return "—"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def duration(seconds: float | None) -> str:
    """`0.42 s`, `3 min 4 s`, `2 h 5 min`."""
    if seconds is None:
        return "—"
    if seconds < 60:
        return f"{seconds:.2f} s" if seconds < 10 else f"{seconds:.0f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def euros(value: float | None) -> str:
    """`€0.0123`; `—` while a run has no cost yet."""
    if value is None:
        return "—"
    return f"€{value:.4f}" if value < 1 else f"€{value:.2f}"


def ending(status: Status, reason: FailureReason | str | None, exit_code: int | None) -> str:
    return describe(Status(status), FailureReason(reason) if reason else None, exit_code)


TEMPLATES.filters.update(when=when, duration=duration, euros=euros)
TEMPLATES.globals.update(ending=ending, usage_line=usage_line, usage_hint=usage_hint)


def render(template: str, **context: Any) -> str:
    return TEMPLATES.get_template(template).render(**context)


def page(
    request: Request, visitor: Visitor | None, template: str, status_code: int = 200, **context: Any
) -> HTMLResponse:
    """A whole page: the template with the visitor (for the menu and every
    form's CSRF token) and the path it answers."""
    html = render(
        template,
        visitor=visitor,
        csrf=visitor.csrf_token if visitor else "",
        admin=bool(visitor and visitor.caller.admin),
        path=request.url.path,
        **context,
    )
    return HTMLResponse(html, status_code=status_code)
