"""Database rows to wire models."""

from __future__ import annotations

from rgrid.wire import AttemptView, ExecutionView, FailureReason, Resources, Status
from rgrid_api.db.models import Attempt, Execution


def attempt_view(a: Attempt) -> AttemptView:
    return AttemptView(
        number=a.number,
        status=Status(a.status),
        worker=a.worker,
        started_at=a.started_at,
        finished_at=a.finished_at,
        exit_code=a.exit_code,
        failure_reason=FailureReason(a.failure_reason) if a.failure_reason else None,
    )


def execution_view(e: Execution) -> ExecutionView:
    return ExecutionView(
        id=e.id,
        status=Status(e.status),
        script=e.script_name,
        args=e.args,
        runtime=e.runtime,
        resources=Resources(cpu=e.cpu, memory_mb=e.memory_mb, timeout_s=e.timeout_s),
        created_at=e.created_at,
        started_at=e.started_at,
        finished_at=e.finished_at,
        exit_code=e.exit_code,
        failure_reason=FailureReason(e.failure_reason) if e.failure_reason else None,
        failure_detail=e.failure_detail,
        duration_s=e.duration_s,
        retry_of=e.retry_of,
        batch_id=e.batch_id,
        cached_from=e.cached_from,
        attempts=[attempt_view(a) for a in e.attempts],
    )
