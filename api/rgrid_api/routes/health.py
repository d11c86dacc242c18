"""The one unauthenticated route."""

from __future__ import annotations

from fastapi import APIRouter

from rgrid.wire import Health
from rgrid_api.version import VERSION

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health)
def healthz() -> Health:
    return Health(status="ok", version=VERSION)
