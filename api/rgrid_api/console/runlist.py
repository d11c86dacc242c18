"""The console's lists of runs: one owner's executions a page at a time,
filtered; newest first (the runs page) or in submission order (a
batch's inputs).

Pages are cut by a cursor (the last row's creation time and id), never by
an offset: the thousandth page costs what the first does, and a run that
arrives while someone pages does not shift the rows under them. Every
filter rides an index that starts with the owner (see the models); the id
search is a range on the key, as every id lookup is (`lookup.id_range`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from rgrid.wire import Status
from rgrid_api.costs import execution_costs
from rgrid_api.db.models import Execution
from rgrid_api.db.times import aware
from rgrid_api.errors import NotFound
from rgrid_api.ids import ID_LENGTH
from rgrid_api.lookup import id_range


@dataclass(frozen=True)
class RunFilter:
    """What a list is narrowed to (each None: not narrowed)."""

    status: Status | None = None
    batch_id: str | None = None
    script: str | None = None
    since: datetime | None = None
    id_prefix: str | None = None


@dataclass(frozen=True)
class RunRow:
    """One row of a list, as the page shows it."""

    id: str
    script: str
    status: Status
    exit_code: int | None
    created_at: datetime
    started_at: datetime | None
    duration_s: float | None
    cost_eur: float | None
    batch_id: str | None
    batch_input: str | None

    @property
    def final(self) -> bool:
        return self.status.final


def runs_page(
    session: Session,
    owner: str,
    narrowed: RunFilter,
    after: str | None,
    limit: int,
    newest_first: bool = True,
) -> tuple[list[RunRow], str | None]:
    """A page of the owner's runs that come after the run `after` in the
    list's order (None: from the start); and the cursor of the next page,
    None on the last. NotFound for an `after` that is not the owner's run
    or an id search that is no id."""
    if after is not None and not (len(after) == ID_LENGTH and after.isalnum() and after.isascii()):
        raise NotFound(f"no run {after!r} to page on from")
    if narrowed.script is not None and "\x00" in narrowed.script:
        raise NotFound("no script name holds a NUL byte")
    query = select(Execution).where(Execution.owner == owner)
    if narrowed.status is not None:
        query = query.where(Execution.status == narrowed.status)
    if narrowed.batch_id is not None:
        query = query.where(Execution.batch_id == narrowed.batch_id)
    if narrowed.script is not None:
        query = query.where(Execution.script_name == narrowed.script)
    if narrowed.since is not None:
        query = query.where(Execution.created_at >= narrowed.since)
    if narrowed.id_prefix:
        # The owner as an expression, so that SQLite reads the key's range
        # and not the owner's whole history (as `lookup.prefix_query`).
        low, high = id_range(narrowed.id_prefix, "", ID_LENGTH, "run")
        query = query.where(Execution.id.between(low, high), Execution.owner.concat("") == owner)
    if after is not None:
        cursor = session.execute(
            select(Execution.created_at, Execution.id).where(Execution.owner == owner, Execution.id == after)
        ).first()
        if cursor is None:
            raise NotFound(f"no run {after!r} to page on from")
        at, last = cursor
        if newest_first:
            query = query.where(
                Execution.created_at <= at,
                or_(Execution.created_at < at, and_(Execution.created_at == at, Execution.id < last)),
            )
        else:
            query = query.where(
                Execution.created_at >= at,
                or_(Execution.created_at > at, and_(Execution.created_at == at, Execution.id > last)),
            )
    order = (
        (Execution.created_at.desc(), Execution.id.desc())
        if newest_first
        else (Execution.created_at, Execution.id)
    )
    rows = list(session.scalars(query.order_by(*order).limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    return as_rows(session, rows), rows[-1].id if more else None


def run_rows(session: Session, owner: str, ids: list[str]) -> list[RunRow]:
    """These runs of the owner's (others' ids are left out): what a list's
    live rows are re-read as."""
    if not ids:
        return []
    rows = session.scalars(select(Execution).where(Execution.owner == owner, Execution.id.in_(ids)))
    return as_rows(session, list(rows))


def as_rows(session: Session, executions: list[Execution]) -> list[RunRow]:
    costs = execution_costs(session, [(e, e.attempts) for e in executions])
    now = datetime.now(UTC)
    return [
        RunRow(
            id=e.id,
            script=e.script_name,
            status=Status(e.status),
            exit_code=e.exit_code,
            created_at=aware(e.created_at),
            started_at=aware(e.started_at) if e.started_at else None,
            duration_s=_duration(e, now),
            cost_eur=costs[e.id],
            batch_id=e.batch_id,
            batch_input=e.batch_input,
        )
        for e in executions
    ]


def _duration(e: Execution, now: datetime) -> float | None:
    """How long it ran: its recorded duration, or so far while it runs."""
    if e.duration_s is not None:
        return e.duration_s
    if e.started_at is None:
        return None
    end = aware(e.finished_at) if e.finished_at else now
    return max(0.0, (end - aware(e.started_at)).total_seconds())
