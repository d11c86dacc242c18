"""The one unauthenticated route."""

from __future__ import annotations

from fastapi import APIRouter

from rgrid.version import VERSION
from rgrid.wire import Health

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    """Answered on the event loop, never behind the thread pool or the
    database: a server busy with heartbeats or long-polls is alive, and a
    supervisor must not restart it for being busy."""
    return Health(status="ok", version=VERSION)
