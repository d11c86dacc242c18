"""What the active autoscaler last concluded, kept in one row so that any
server can answer `rgrid autoscaler status` (the autoscaler runs in one)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.orm import Session

from rgrid_api.db.models import AutoscalerReport
from rgrid_api.db.times import aware

ROW_ID = 1


class Report(BaseModel):
    provider: str
    cluster: str
    caps: dict[str, float | int | None] = {}
    spend_eur_per_hour: float = 0.0
    demand: int = 0  # executions waiting for a node
    unmet: int = 0  # ... that no node the autoscaler may create would take
    blocked: list[str] = []  # why it does not scale now
    backoff: dict[str, float] = {}  # "type@location" -> until (epoch s)


def write(session: Session, report: Report, now: datetime) -> None:
    """Keep the latest report."""
    row = session.get(AutoscalerReport, ROW_ID)
    if row is None:
        session.add(AutoscalerReport(id=ROW_ID, updated_at=now, report=report.model_dump()))
    else:
        row.updated_at, row.report = now, report.model_dump()


@dataclass(frozen=True)
class Reported:
    report: Report
    at: datetime


def read(session: Session) -> Reported | None:
    row = session.scalar(select(AutoscalerReport).where(AutoscalerReport.id == ROW_ID))
    if row is None:
        return None
    return Reported(Report.model_validate(row.report), aware(row.updated_at))
