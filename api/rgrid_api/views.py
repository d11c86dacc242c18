"""Database rows to wire models.

They take ORM objects and Core rows alike (the hot read in
`rgrid_api.executionread` skips the ORM), and answer every time in UTC with
its offset on both databases: SQLite hands stored times back naive.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import Row

from rgrid.wire import AttemptView, ExecutionView, FailureReason, Resources, Status, Usage
from rgrid_api.db.models import Attempt, Execution
from rgrid_api.db.times import aware


class AttemptColumns(NamedTuple):
    """An attempt's columns as a Core join hands them back, beside its
    execution's: what its view and its cost need."""

    number: int
    status: str
    worker: str | None
    worker_id: str | None
    started_at: datetime | None
    finished_at: datetime | None
    exit_code: int | None
    failure_reason: str | None
    ray_node_id: str | None
    cpu_seconds: float | None
    peak_memory_bytes: int | None
    wall_seconds: float | None
    output_bytes: int | None
    interpreter: str | None
    rgrid_version: str | None


def _utc(value: datetime | None) -> datetime | None:
    return aware(value) if value else None


def attempt_view(a: Attempt | AttemptColumns) -> AttemptView:
    return AttemptView(
        number=a.number,
        status=Status(a.status),
        worker=a.worker,
        started_at=_utc(a.started_at),
        finished_at=_utc(a.finished_at),
        exit_code=a.exit_code,
        failure_reason=FailureReason(a.failure_reason) if a.failure_reason else None,
        usage=usage_of(a),
    )


def usage_of(a: Attempt | AttemptColumns) -> Usage | None:
    """What an attempt used, if its runner reported it."""
    if a.wall_seconds is None:
        return None
    return Usage(
        cpu_seconds=a.cpu_seconds,
        peak_memory_bytes=a.peak_memory_bytes,
        wall_seconds=a.wall_seconds,
        output_bytes=a.output_bytes or 0,
    )


def execution_view(e: Execution | Row[Any], attempts: Iterable[Attempt | AttemptColumns]) -> ExecutionView:
    return ExecutionView(
        id=e.id,
        status=Status(e.status),
        script=e.script_name,
        args=e.args,
        runtime=e.runtime,
        resources=Resources(cpu=e.cpu, memory_mb=e.memory_mb, timeout_s=e.timeout_s),
        created_at=aware(e.created_at),
        started_at=_utc(e.started_at),
        finished_at=_utc(e.finished_at),
        exit_code=e.exit_code,
        failure_reason=FailureReason(e.failure_reason) if e.failure_reason else None,
        failure_detail=e.failure_detail,
        duration_s=e.duration_s,
        retry_of=e.retry_of,
        batch_id=e.batch_id,
        cached_from=e.cached_from,
        attempts=[attempt_view(a) for a in attempts],
    )
