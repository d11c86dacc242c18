"""Why a queued execution has not started yet, in one sentence for
`rgrid status`: the owner's running-CPU cap, its batch's `--parallel`, or a
full (or empty) grid. None when nothing holds it: the next dispatch round
takes it."""

from __future__ import annotations

from sqlalchemy import Connection, func, select

from rgrid.wire import ExecutionView, Status
from rgrid_api.attempts import IN_FLIGHT
from rgrid_api.auth import running_caps
from rgrid_api.db.models import Batch, Execution


def _running_cpus(conn: Connection, owner: str | None = None) -> float:
    query = select(func.sum(Execution.cpu)).where(Execution.status.in_(IN_FLIGHT))
    if owner is not None:
        query = query.where(Execution.owner == owner)
    return float(conn.scalar(query) or 0.0)


def why_waiting(
    conn: Connection, owner: str, view: ExecutionView, default_cap: float | None, grid_cpus: float | None
) -> str | None:
    if view.status != Status.QUEUED:
        return None
    cap = running_caps(conn, {owner}, default_cap).get(owner)
    if cap is not None and _running_cpus(conn, owner) + view.resources.cpu > cap:
        return f"{owner} runs its cap of {cap:g} CPUs at once; this starts when some of its runs end"
    if view.batch_id is not None:
        parallel = conn.scalar(select(Batch.parallel).where(Batch.id == view.batch_id))
        if parallel is not None:
            busy = conn.scalar(
                select(func.count())
                .select_from(Execution)
                .where(Execution.batch_id == view.batch_id, Execution.status.in_(IN_FLIGHT))
            )
            if (busy or 0) >= parallel:
                return f"its batch runs at most {parallel} at once (--parallel)"
    if grid_cpus is None:
        return None
    if grid_cpus <= 0:
        return "no node is taking jobs yet"
    if view.resources.cpu > grid_cpus:
        return f"needs {view.resources.cpu:g} CPUs; the grid's nodes have {grid_cpus:g} in all"
    if _running_cpus(conn) + view.resources.cpu > grid_cpus:
        return f"the grid's {grid_cpus:g} CPUs are in use; this starts in turn as they free"
    return None
