"""What runs used, as nodes report it: kept within what the run could
have used, and summed for a batch (the totals `rgrid status BATCH` shows
beside its counts)."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from rgrid.wire import BatchUsage, Usage
from rgrid_api.db.models import Attempt, Execution

# Time a report may exceed the timeout by: the kill's grace and the report.
WALL_GRACE_S = 600.0


def plausible(usage: Usage, execution: Execution) -> Usage:
    """A node's report, cut to what the run could have used: no longer
    than its timeout, no more CPU than its CPUs for that long, no more
    memory than its limit (the kernel enforces it; page cache may touch
    it). A hostile node lies only about runs it holds, and its lie then
    cannot make one owner's estimates or totals absurd."""
    wall = min(usage.wall_seconds, execution.timeout_s + WALL_GRACE_S)
    cpu = None if usage.cpu_seconds is None else min(usage.cpu_seconds, wall * execution.cpu * 1.05 + 1.0)
    limit = execution.memory_mb * 2**20
    peak = None if usage.peak_memory_bytes is None else min(usage.peak_memory_bytes, limit)
    return Usage(cpu_seconds=cpu, peak_memory_bytes=peak, wall_seconds=wall, output_bytes=usage.output_bytes)


def batch_usage(session: Session, batch_id: str) -> BatchUsage:
    """CPU seconds of every measured attempt of the batch, and the median
    and largest peak memory among them (two indexed reads; the median is
    the database's: a batch may have 100,000 runs)."""
    measured = (
        select(Attempt.cpu_seconds, Attempt.peak_memory_bytes)
        .join(Execution, Execution.id == Attempt.execution_id)
        .where(Execution.batch_id == batch_id, Attempt.wall_seconds.is_not(None))
    )
    totals = measured.subquery()
    count, cpu, peaks, largest = session.execute(
        select(
            func.count(),
            func.coalesce(func.sum(totals.c.cpu_seconds), 0.0),
            func.count(totals.c.peak_memory_bytes),
            func.max(totals.c.peak_memory_bytes),
        )
    ).one()
    median = None
    if peaks:
        median = session.scalar(
            select(totals.c.peak_memory_bytes)
            .where(totals.c.peak_memory_bytes.is_not(None))
            .order_by(totals.c.peak_memory_bytes)
            .offset((peaks - 1) // 2)
            .limit(1)
        )
    return BatchUsage(
        attempts=count,
        cpu_seconds=round(float(cpu), 3),
        median_peak_memory_bytes=median,
        max_peak_memory_bytes=largest,
    )
