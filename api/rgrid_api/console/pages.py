"""The console's pages: runs, a run, batches, a batch, cost and the grid.

Each page reads what the API's own routes read, for the logged-in
browser's key, and renders it on the server; the live parts of a page
(`live.py`) then keep it current. A run or batch of another owner is not
found, exactly as a missing one. A parameter that means nothing (a status
that does not exist, a `since` that is no time) is said on the page, over
an empty list, never ignored.
"""

from __future__ import annotations

import shlex
from collections import defaultdict
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse
from sqlalchemy.orm import Session

from rgrid.units import parse_since
from rgrid.wire import Resources, Status
from rgrid_api.batches import batch_counts, batch_progress, batch_status, find_batch, list_batches
from rgrid_api.console.charts import day_chart
from rgrid_api.console.guard import PageVisitor
from rgrid_api.console.logtail import TAIL_LINES, tail
from rgrid_api.console.render import page
from rgrid_api.console.runlist import RunFilter, RunRow, runs_page
from rgrid_api.costs import costed_attempts, execution_cost
from rgrid_api.deps import ReadDB, State
from rgrid_api.errors import DomainError
from rgrid_api.executions import find_execution, list_outputs
from rgrid_api.routes import autoscaler as autoscaler_routes
from rgrid_api.routes import grid as grid_routes
from rgrid_api.routes import workers as worker_routes
from rgrid_api.views import usage_of

router = APIRouter(prefix="/ui", include_in_schema=False)

PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
BATCH_PAGE_SIZE = 100
BATCHES_SHOWN = 100
COST_DAYS = 30
STATUSES = [s.value for s in Status]


@router.get("/", response_class=HTMLResponse)
def runs(
    request: Request,
    visitor: PageVisitor,
    session: ReadDB,
    status: str = "",
    batch: str = "",
    script: str = "",
    since: str = "",
    q: str = "",
    after: str | None = None,
    limit: int = Query(PAGE_SIZE, ge=1, le=MAX_PAGE_SIZE),
) -> HTMLResponse:
    """Newest first, a page at a time, filtered; its running rows live."""
    owner = visitor.caller.owner
    narrowed, problems = _status_filter(
        RunFilter(script=script.strip() or None, id_prefix=q.strip() or None), status
    )
    if since.strip():
        try:
            narrowed = replace(narrowed, since=parse_since(since))
        except ValueError as exc:
            problems.append(f"since {exc}")
    if batch.strip():
        try:
            narrowed = replace(narrowed, batch_id=find_batch(session, owner, batch.strip()).id)
        except DomainError as exc:
            problems.append(str(exc))
    chosen = {"status": status, "batch": batch, "script": script, "since": since, "q": q}
    return page(
        request,
        visitor,
        "runs.html",
        statuses=STATUSES,
        chosen=chosen,
        filtered=any(v.strip() for v in chosen.values()),
        **_listing(request, session, owner, narrowed, problems, after, limit, newest_first=True),
    )


def _status_filter(narrowed: RunFilter, status: str) -> tuple[RunFilter, list[str]]:
    if not status:
        return narrowed, []
    try:
        return replace(narrowed, status=Status(status)), []
    except ValueError:
        return narrowed, [f"no status {status!r} (one of {', '.join(STATUSES)})"]


def _listing(
    request: Request,
    session: Session,
    owner: str,
    narrowed: RunFilter,
    problems: list[str],
    after: str | None,
    limit: int,
    newest_first: bool,
) -> dict[str, Any]:
    """A list's rows, its problems, its links to the next and first page,
    and the ids its live part follows."""
    rows: list[RunRow] = []
    more = None
    if not problems:
        try:
            rows, more = runs_page(session, owner, narrowed, after, limit, newest_first)
        except DomainError as exc:
            problems.append(str(exc))
    return {
        "rows": rows,
        "problems": problems,
        "next_page": str(request.url.include_query_params(after=more)) if more else None,
        "first_page": str(request.url.remove_query_params("after")) if after else None,
        "live": [r.id for r in rows if not r.final],
    }


@router.get("/runs/{execution_id}", response_class=HTMLResponse)
def run(
    request: Request, execution_id: str, visitor: PageVisitor, session: ReadDB, state: State
) -> HTMLResponse:
    """The command, its resources, attempts, live log, outputs and cost."""
    e = find_execution(session, visitor.caller.owner, execution_id)
    status = Status(e.status)
    chunks, left_out = tail(session, e.id)
    return page(
        request,
        visitor,
        "run.html",
        e=e,
        status=status,
        command=shlex.join(["python", e.script_name, *e.args]),
        inputs=[f["path"] for f in e.inputs],
        env_names=sorted(e.env),
        resources=Resources(cpu=e.cpu, memory_mb=e.memory_mb, timeout_s=e.timeout_s),
        attempts=[(a, usage_of(a)) for a in e.attempts],
        chunks=chunks,
        left_out=left_out,
        tail_lines=TAIL_LINES,
        last_seq=chunks[-1].seq if chunks else 0,
        outputs=list_outputs(session, state.storage, e) if status.final else [],
        cost=execution_cost(session, e, e.attempts),
    )


@router.get("/batches", response_class=HTMLResponse)
def batches(request: Request, visitor: PageVisitor, session: ReadDB) -> HTMLResponse:
    """The owner's newest batches with their counts."""
    shown = list_batches(session, visitor.caller.owner, BATCHES_SHOWN)
    ended = [(b, sum(n for s, n in b.counts.items() if Status(s).final)) for b in shown]
    return page(request, visitor, "batches.html", batches=ended, limit=BATCHES_SHOWN)


@router.get("/batches/{batch_id}", response_class=HTMLResponse)
def batch(
    request: Request,
    batch_id: str,
    visitor: PageVisitor,
    session: ReadDB,
    status: str = "",
    after: str | None = None,
) -> HTMLResponse:
    """Progress with counts and an ETA; its inputs in submission order,
    filterable by status."""
    owner = visitor.caller.owner
    b = find_batch(session, owner, batch_id)
    counts = batch_counts(session, [b.id]).get(b.id, {})
    narrowed, problems = _status_filter(RunFilter(batch_id=b.id), status)
    return page(
        request,
        visitor,
        "batch.html",
        b=b,
        batch_state=batch_status(b, counts),
        progress=batch_progress(b, counts, datetime.now(UTC)),
        statuses=STATUSES,
        chosen=status,
        filtered=bool(status),
        **_listing(request, session, owner, narrowed, problems, after, BATCH_PAGE_SIZE, newest_first=False),
    )


@router.get("/cost", response_class=HTMLResponse)
def cost(request: Request, visitor: PageVisitor, session: ReadDB) -> HTMLResponse:
    """The owner's spend per day (UTC) for COST_DAYS days, and per script."""
    today = datetime.now(UTC).date()
    since = datetime.combine(today - timedelta(days=COST_DAYS - 1), datetime.min.time(), UTC)
    by_day: dict[date, float] = defaultdict(float)
    attempts: dict[str, int] = defaultdict(int)
    spent: dict[str, float] = defaultdict(float)
    for costed in costed_attempts(session, visitor.caller.owner, since):
        by_day[costed.finished_at.date()] += costed.eur
        attempts[costed.script] += 1
        spent[costed.script] += costed.eur
    return page(
        request,
        visitor,
        "cost.html",
        chart=day_chart(by_day, today, COST_DAYS),
        total=sum(by_day.values()),
        scripts=[(name, attempts[name], spent[name]) for name in sorted(spent, key=lambda n: (-spent[n], n))],
        days=COST_DAYS,
    )


@router.get("/grid", response_class=HTMLResponse)
def grid(request: Request, visitor: PageVisitor, session: ReadDB, state: State) -> HTMLResponse:
    """Nodes and the autoscaler, for admin keys: the admin routes' own answers."""
    if not visitor.caller.admin:
        return page(
            request,
            visitor,
            "message.html",
            status_code=403,
            title="Not allowed",
            message="The grid page needs an admin key (ask the grid's operator).",
        )
    return page(
        request,
        visitor,
        "grid.html",
        capacity=grid_routes.capacity(visitor.caller, session, state),
        workers=worker_routes.index(visitor.caller, session, all_=False).workers,
        autoscaler=autoscaler_routes.status(visitor.caller, session, state),
    )
