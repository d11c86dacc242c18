"""What a batch's runs used, summed from its attempts' reports: the totals
`rgrid status BATCH` shows beside its counts."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from rgrid.wire import BatchUsage
from rgrid_api.db.models import Attempt, Execution


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
