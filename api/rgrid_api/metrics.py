"""Metrics for operators, in Prometheus' text format (`GET /metrics`, for
admin keys, or without a key on `RGRID_METRICS_BIND`).

Two kinds, and why:
- **Counters and histograms of events** (runs finished, queue waits, run
  durations, attempts lost, nodes joined or failed, request latency) are
  this process's own, counted as its transactions commit: a session hook
  (`watch`) reads the state moves each flush made and applies them after
  the commit, so a rolled-back move is never counted and no code path
  that ends a run can forget to. With several API servers each counts
  what it did: sum them over instances (`sum without (instance) (...)`).
- **Gauges of state** (queue depth, workers, autoscaled nodes, € spent) are
  read from the database once per scrape, through indexed counts, so
  every server reports the same grid-wide value: take `max`, not `sum`.

No label takes a per-run value (an id, a node name): every label is one of
a few states, reasons or route templates.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import Engine, event, func, inspect, select
from sqlalchemy.orm import Session, sessionmaker
from starlette.types import ASGIApp, Receive, Scope, Send

from rgrid.wire import UNFINISHED_STATES, FailureReason, InstanceState, Status, WorkerStatus
from rgrid_api.costs import spent_eur
from rgrid_api.db.models import Attempt, Execution, Instance, Worker
from rgrid_api.db.times import aware, utcnow
from rgrid_infra.provider import ProviderError

PENDING = "rgrid_metrics_pending"
PROVIDER_KINDS = frozenset(
    {
        ProviderError.UNAVAILABLE,
        ProviderError.LIMIT,
        ProviderError.AUTH,
        ProviderError.RATE_LIMITED,
        ProviderError.GONE,
    }
)

FINISHED = Counter(
    "rgrid_executions_finished_total",
    "Executions that ended, by final status and failure reason (none: succeeded; cached: reused).",
    ["status", "reason"],
    registry=None,
)
QUEUE_WAIT = Histogram(
    "rgrid_execution_queue_wait_seconds",
    "From submission to its first attempt running.",
    buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 4 * 3600),
    registry=None,
)
RUN_DURATION = Histogram(
    "rgrid_execution_duration_seconds",
    "How long a finished execution's script ran (its deciding attempt).",
    buckets=(0.5, 1, 5, 10, 30, 60, 300, 600, 1800, 3600, 4 * 3600, 12 * 3600, 24 * 3600),
    registry=None,
)
ATTEMPTS_LOST = Counter(
    "rgrid_attempts_lost_total",
    "Attempts lost to the infrastructure (a dead node, a lost task, an expired lease).",
    registry=None,
)
CREATE_FAILURES = Counter(
    "rgrid_autoscaler_create_failures_total",
    "Servers the autoscaler asked for and did not get, or that never joined, by why.",
    ["reason"],
    registry=None,
)
JOIN_TIME = Histogram(
    "rgrid_autoscaler_join_seconds",
    "From asking the provider for a server to its agent registering.",
    buckets=(10, 20, 30, 45, 60, 90, 120, 180, 300, 600, 900, 1800),
    registry=None,
)
REQUEST_LATENCY = Histogram(
    "rgrid_api_request_duration_seconds",
    "API requests by route template and method (long polls included: they wait on purpose).",
    ["route", "method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    registry=None,
)
# Where a request answered before routing (`rgrid_api.beatpath`) names its
# route template for RequestTimer.
ROUTE_KEY = "rgrid.route"
# A method outside these is counted as "other": a client chooses it.
METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})
EVENTS = (FINISHED, QUEUE_WAIT, RUN_DURATION, ATTEMPTS_LOST, CREATE_FAILURES, JOIN_TIME, REQUEST_LATENCY)


def _since(start: datetime | None, now: datetime) -> float | None:
    return None if start is None else max(0.0, (now - aware(start)).total_seconds())


def _new_status(obj: Any, attribute: str) -> str | None:
    added = inspect(obj).attrs[attribute].history.added
    return str(added[0]) if added else None


def _moves(session: Session, _context: object) -> None:
    """After each flush: note the state moves it wrote (counted on commit)."""
    pending: list[tuple[Any, ...]] = session.info.setdefault(PENDING, [])
    now = utcnow()
    for obj in (*session.new, *session.dirty):
        if isinstance(obj, Execution):
            status = _new_status(obj, "status")
            if status is None:
                continue
            if Status(status).final:
                reason = obj.failure_reason or ("cached" if obj.cached_from else "none")
                ran = obj.duration_s if not obj.cached_from else None
                pending.append((FINISHED.labels(status, reason).inc, 1))
                if ran is not None:
                    pending.append((RUN_DURATION.observe, ran))
            elif status == Status.RUNNING and obj.attempt == 1:
                waited = _since(obj.created_at, now)
                if waited is not None:
                    pending.append((QUEUE_WAIT.observe, waited))
        elif isinstance(obj, Attempt):
            if (
                _new_status(obj, "status") == Status.FAILED
                and obj.failure_reason == FailureReason.WORKER_LOST
            ):
                pending.append((ATTEMPTS_LOST.inc, 1))
        elif isinstance(obj, Instance):
            state = _new_status(obj, "state")
            if state == InstanceState.JOINED:
                joined = _since(obj.requested_at, now)
                if joined is not None:
                    pending.append((JOIN_TIME.observe, joined))
            elif state == InstanceState.ALLOCATION_FAILED:
                kind = (obj.reason or "").partition(":")[0]
                pending.append(
                    (CREATE_FAILURES.labels(kind if kind in PROVIDER_KINDS else "never_appeared").inc, 1)
                )
            elif state == InstanceState.JOIN_TIMEOUT:
                pending.append((CREATE_FAILURES.labels("join_timeout").inc, 1))


def _counted(session: Session) -> None:
    for apply, value in session.info.pop(PENDING, []):
        apply(value)


def _dropped(session: Session) -> None:
    session.info.pop(PENDING, None)


def watch(sessions: sessionmaker) -> None:
    """Count the state moves of every session these sessions make."""
    event.listen(sessions, "after_flush", _moves)
    event.listen(sessions, "after_commit", _counted)
    event.listen(sessions, "after_rollback", _dropped)


def note_finished(session: Session, status: Status, reason: str, count: int) -> None:
    """Runs ended by a bulk UPDATE, which no flush shows (a batch's queued
    runs cancelled at once): counted on commit like the others."""
    if count > 0:
        session.info.setdefault(PENDING, []).append((FINISHED.labels(status, reason).inc, count))


class GridState(Collector):
    """The gauges read from the database at each scrape: one indexed count
    per table, grouped by state."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def collect(self) -> Iterator[Metric]:
        queue = GaugeMetricFamily("rgrid_executions", "Executions not yet ended, by state.", labels=["state"])
        workers = GaugeMetricFamily("rgrid_workers", "Registered worker nodes by status.", labels=["status"])
        nodes = GaugeMetricFamily("rgrid_autoscaler_nodes", "Autoscaled servers by state.", labels=["state"])
        cost = CounterMetricFamily(
            "rgrid_cost_eur", "What the autoscaled servers have cost, in euros, since the grid began."
        )
        with self.engine.connect() as conn:
            unfinished = dict(
                conn.execute(
                    select(Execution.status, func.count())
                    .where(Execution.status.in_(UNFINISHED_STATES))
                    .group_by(Execution.status)
                ).all()
            )
            for waiting in UNFINISHED_STATES:
                queue.add_metric([waiting], unfinished.get(waiting, 0))
            by_status = dict(conn.execute(select(Worker.status, func.count()).group_by(Worker.status)).all())
            for status in WorkerStatus:
                workers.add_metric([status], by_status.get(status, 0))
            by_state = dict(conn.execute(select(Instance.state, func.count()).group_by(Instance.state)).all())
            for state in InstanceState:
                nodes.add_metric([state], by_state.get(state, 0))
            cost.add_metric([], spent_eur(conn, utcnow()))
        yield from (queue, workers, nodes, cost)


def registry_for(engine: Engine) -> CollectorRegistry:
    """This server's metrics: its own event counters and the grid's gauges."""
    registry = CollectorRegistry(auto_describe=False)
    for metric in EVENTS:
        registry.register(metric)
    registry.register(GridState(engine))
    return registry


class RequestTimer:
    """Times every request by the template of the route that took it
    (`/v1/executions/{execution_id}`, never the id itself)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        try:
            await self.app(scope, receive, send)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or scope.get(ROUTE_KEY) or "unmatched"
            method = scope["method"] if scope["method"] in METHODS else "other"
            REQUEST_LATENCY.labels(template, method).observe(time.perf_counter() - started)


def serve_metrics(bind: str | None, registry: CollectorRegistry) -> WSGIServer | None:
    """Serve /metrics without a key on `bind` (RGRID_METRICS_BIND), in a
    thread of its own: a scrape never waits behind API requests."""
    if bind is None:
        return None
    host, _, port = bind.rpartition(":")
    try:
        server, _thread = start_http_server(int(port), addr=host.strip("[]"), registry=registry)
    except (OSError, OverflowError) as exc:
        raise RuntimeError(f"RGRID_METRICS_BIND={bind}: cannot listen there ({exc})") from None
    return server
