"""The one unauthenticated route."""

from __future__ import annotations

from fastapi import APIRouter

from rgrid.version import VERSION
from rgrid.wire import Health

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health)
def healthz() -> Health:
    return Health(status="ok", version=VERSION)
