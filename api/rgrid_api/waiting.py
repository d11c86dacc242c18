"""Why a queued execution has not started yet, in one sentence for
`rgrid status`: a Ray token rotation under way, the owner's running-CPU cap, its batch's `--parallel`, or a
full (or empty) grid. None when nothing holds it: the next dispatch round
takes it."""

from __future__ import annotations

from sqlalchemy import Connection, func, select
from sqlalchemy.orm import Session

from rgrid.wire import OPEN_STATES, ExecutionView, Status
from rgrid_api.attempts import fail_unschedulable, running_cpus
from rgrid_api.auth import Caps, owner_caps
from rgrid_api.db.models import Batch, Execution
from rgrid_api.raytoken import rotation_waits
from rgrid_runner.driver_messages import Capacity


def why_waiting(
    conn: Connection, owner: str, view: ExecutionView, default: Caps, grid: Capacity | None
) -> str | None:
    if view.status != Status.QUEUED:
        return None
    if rotation_waits(conn):
        return "the grid is renewing its Ray token: nothing starts until the runs under way end"
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
                .where(Execution.batch_id == view.batch_id, Execution.status.in_(OPEN_STATES))
            )
            if (busy or 0) >= parallel:
                return f"its batch runs at most {parallel} at once (--parallel)"
    if grid is None:
        return None
    if grid.cpus <= 0:
        return "no node is taking jobs yet"
    if unfit := fits_no_node(grid, cpu, view.resources.memory_mb):
        return unfit
    if sum(running.values()) + cpu > grid.cpus:
        return f"the grid's {grid.cpus:g} CPUs are in use; this starts in turn as they free"
    return None


def fits_no_node(grid: Capacity | None, cpu: float, memory_mb: int) -> str | None:
    """Why a run fits no node that takes jobs now, if it fits none (and
    there is at least one)."""
    if grid is None or grid.cpus <= 0 or grid.fits(cpu, memory_mb):
        return None
    return (
        f"needs {cpu:g} CPUs and {memory_mb} MiB on one node; no node that takes jobs has both "
        f"(the most CPUs: {grid.largest_cpus:g}; the most memory: {grid.largest_memory_mb:.0f} MiB)"
    )


def fail_where_no_node_fits(
    session: Session, ids: list[str], cpu: float, memory_mb: int, grid: Capacity | None
) -> list[tuple[str, int]]:
    """Fail these runs as unschedulable if they fit no node of `grid` (the
    caller knows no autoscaler could add one); the attempts whose Ray tasks
    were handed out meanwhile, to cancel."""
    why = fits_no_node(grid, cpu, memory_mb)
    if why is None:
        return []
    opened = [(i, fail_unschedulable(session, i, f"{why}, and no autoscaler adds nodes")) for i in ids]
    return [(i, attempt) for i, attempt in opened if attempt is not None]
