"""`GET /metrics`: the grid's metrics in Prometheus' text format, for admin
keys (what they show is the whole grid's, every tenant's). A Prometheus
without a key scrapes RGRID_METRICS_BIND instead (`rgrid_api.metrics`)."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from rgrid_api.deps import Admin, State

router = APIRouter(tags=["metrics"])


@router.get("/metrics", response_class=Response, responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
def metrics(_admin: Admin, state: State) -> Response:
    return Response(generate_latest(state.metrics), media_type=CONTENT_TYPE_LATEST)
