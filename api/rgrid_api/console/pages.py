"""The console's pages: runs, a run, a batch, cost and the grid.

Each page reads what the API's own routes read, for the logged-in
browser's key, and renders it on the server; the live parts of a page
(`live.py`) then keep it current. A run or batch of another owner is not
found, exactly as a missing one.
"""

from __future__ import annotations

import shlex
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse

from rgrid.units import parse_duration_s
from rgrid.wire import Resources, Status
from rgrid_api.batches import batch_counts, batch_status, find_batch
from rgrid_api.console.charts import day_chart
from rgrid_api.console.guard import PageVisitor
from rgrid_api.console.logtail import tail
from rgrid_api.console.render import page
from rgrid_api.console.runs import RunFilter, runs_page
from rgrid_api.costs import costed_attempts, execution_cost
from rgrid_api.db.times import aware
from rgrid_api.deps import ReadDB, State
from rgrid_api.errors import NotFound
from rgrid_api.executions import find_execution, list_outputs
from rgrid_api.routes import autoscaler as autoscaler_routes
from rgrid_api.routes import grid as grid_routes
from rgrid_api.routes import workers as worker_routes
from rgrid_api.views import usage_of

router = APIRouter(prefix="/ui", include_in_schema=False)

PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
COST_DAYS = 30


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
    before: str | None = None,
    limit: int = Query(PAGE_SIZE, ge=1, le=MAX_PAGE_SIZE),
) -> HTMLResponse:
    """Newest first, a page at a time, filtered; its running rows live."""
    owner = visitor.caller.owner
    problems = []
    narrowed = RunFilter(script=script.strip() or None, id_prefix=q.strip() or None)
    if status:
        try:
            narrowed = _with(narrowed, status=Status(status))
        except ValueError:
            problems.append(f"no status {status!r}")
    if since:
        try:
            narrowed = _with(narrowed, since=_since(since))
        except ValueError:
            problems.append(
                f"'since' takes an age such as 24h or 7d, or a date such as 2026-12-01, not {since!r}"
            )
    if batch:
        try:
            narrowed = _with(narrowed, batch_id=find_batch(session, owner, batch.strip()).id)
        except NotFound as exc:
            problems.append(str(exc))
    rows, more = ([], None) if problems else runs_page(session, owner, narrowed, before, limit)
    return page(
        request,
        visitor,
        "runs.html",
        rows=rows,
        problems=problems,
        statuses=[s.value for s in Status],
        chosen={"status": status, "batch": batch, "script": script, "since": since, "q": q},
        older=str(request.url.include_query_params(before=more)) if more else None,
        newest=str(request.url.remove_query_params("before")) if before else None,
        live=[r.id for r in rows if not r.final],
    )


def _with(narrowed: RunFilter, **changes: object) -> RunFilter:
    return RunFilter(**{**narrowed.__dict__, **changes})


def _since(text: str) -> datetime:
    """An age (`24h`, `7d`, `90m`) back from now, or a day (`2026-12-01`, UTC)."""
    text = text.strip()
    try:
        return datetime.fromisoformat(text).replace(tzinfo=UTC) if "-" in text else _ago(text)
    except ValueError:
        raise ValueError(text) from None


def _ago(text: str) -> datetime:
    if text.endswith("d") and text[:-1].isdigit():
        return datetime.now(UTC) - timedelta(days=int(text[:-1]))
    return datetime.now(UTC) - timedelta(seconds=parse_duration_s(text))


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
        last_seq=chunks[-1].seq if chunks else 0,
        outputs=list_outputs(session, state.storage, e) if status.final else [],
        cost=execution_cost(session, e, e.attempts),
    )


@router.get("/batches/{batch_id}", response_class=HTMLResponse)
def batch(
    request: Request,
    batch_id: str,
    visitor: PageVisitor,
    session: ReadDB,
    status: str = "",
    before: str | None = None,
) -> HTMLResponse:
    """Progress with counts and an ETA; its inputs, filterable by status."""
    owner = visitor.caller.owner
    b = find_batch(session, owner, batch_id)
    counts = batch_counts(session, [b.id]).get(b.id, {})
    problems = []
    narrowed = RunFilter(batch_id=b.id)
    if status:
        try:
            narrowed = _with(narrowed, status=Status(status))
        except ValueError:
            problems.append(f"no status {status!r}")
    rows, more = ([], None) if problems else runs_page(session, owner, narrowed, before, MAX_PAGE_SIZE // 5)
    return page(
        request,
        visitor,
        "batch.html",
        b=b,
        state=batch_status(b, counts),
        progress=progress(b.total, counts, aware(b.created_at)),
        statuses=[s.value for s in Status],
        chosen=status,
        problems=problems,
        rows=rows,
        older=str(request.url.include_query_params(before=more)) if more else None,
        newest=str(request.url.remove_query_params("before")) if before else None,
        live=[r.id for r in rows if not r.final],
    )


def progress(total: int, counts: dict[str, int], created_at: datetime) -> dict[str, object]:
    """Counts by status, how many ended, and an ETA from the pace so far."""
    ended = sum(n for s, n in counts.items() if Status(s).final)
    elapsed = (datetime.now(UTC) - created_at).total_seconds()
    eta_s = elapsed / ended * (total - ended) if 0 < ended < total else None
    return {"total": total, "ended": ended, "counts": counts, "eta_s": eta_s}


@router.get("/cost", response_class=HTMLResponse)
def cost(request: Request, visitor: PageVisitor, session: ReadDB) -> HTMLResponse:
    """The owner's spend per day for COST_DAYS days, and per script."""
    today = datetime.now(UTC).date()
    since = datetime.combine(today - timedelta(days=COST_DAYS - 1), datetime.min.time(), UTC)
    by_day: dict[date, float] = defaultdict(float)
    by_script: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])
    for costed in costed_attempts(session, visitor.caller.owner, since):
        by_day[costed.finished_at.date()] += costed.eur
        by_script[costed.script][0] += 1
        by_script[costed.script][1] += costed.eur
    scripts = sorted(by_script.items(), key=lambda kv: (-kv[1][1], kv[0]))
    return page(
        request,
        visitor,
        "cost.html",
        chart=day_chart(by_day, today, COST_DAYS),
        total=sum(by_day.values()),
        scripts=[(name, int(runs), eur) for name, (runs, eur) in scripts],
        days=COST_DAYS,
    )


@router.get("/grid", response_class=HTMLResponse)
def grid(request: Request, visitor: PageVisitor, session: ReadDB, state: State) -> HTMLResponse:
    """Nodes and the autoscaler, for admin keys."""
    if not visitor.caller.admin:
        return page(
            request,
            visitor,
            "message.html",
            status_code=403,
            title="Grid",
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
