"""Why a queued execution has not started yet, in one sentence for
`rgrid status`: the owner's running-CPU cap, its batch's `--parallel`, or a
full (or empty) grid. None when nothing holds it: the next dispatch round
takes it."""

from __future__ import annotations

from sqlalchemy import Connection, func, select

from rgrid.wire import ExecutionView, Status
from rgrid_api.attempts import IN_FLIGHT, running_cpus
from rgrid_api.auth import Caps, owner_caps
from rgrid_api.db.models import Batch, Execution


def why_waiting(
    conn: Connection, owner: str, view: ExecutionView, default: Caps, grid_cpus: float | None
) -> str | None:
    if view.status != Status.QUEUED:
        return None
    cpu = view.resources.cpu
    running = running_cpus(conn)
    cap = owner_caps(conn, {owner}, default)[owner].running_cpus
    if cap is not None and cpu > cap:
        return f"needs {cpu:g} CPUs, more than {owner} may run at once ({cap:g}): it cannot start"
    if cap is not None and running.get(owner, 0.0) + cpu > cap:
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
    if cpu > grid_cpus:
        return f"needs {cpu:g} CPUs; the grid's nodes have {grid_cpus:g} in all"
    if sum(running.values()) + cpu > grid_cpus:
        return f"the grid's {grid_cpus:g} CPUs are in use; this starts in turn as they free"
    return None
