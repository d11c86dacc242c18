"""The grid as a whole: its capacity as counts for every key (never whose
work it is), and an admin's hand on its nodes."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import func, select

from rgrid.wire import OPEN_STATES, UNFINISHED_STATES, GridCapacity, Status, WorkerAck, WorkerStatus
from rgrid_api.attempts import running_cpus
from rgrid_api.db.models import Execution, Worker
from rgrid_api.deps import DB, Admin, ReadDB, State, User
from rgrid_api.errors import Conflict, NotFound
from rgrid_api.workers import grid_cpus, set_status

router = APIRouter(prefix="/v1/grid", tags=["grid"])


@router.get("", response_model=GridCapacity)
def capacity(caller: User, session: ReadDB, state: State) -> GridCapacity:
    """CPUs as the dispatcher counts them (Ray's job nodes), else as the
    registered nodes say; nodes as registered here."""
    known = state.dispatcher.transport.capacity() if state.dispatcher else None
    cpus = known.cpus if known is not None else grid_cpus(session)
    counts = dict(
        session.execute(
            select(Execution.status, func.count())
            .where(Execution.status.in_(UNFINISHED_STATES))
            .group_by(Execution.status)
        ).all()
    )
    nodes = session.scalar(
        select(func.count()).select_from(Worker).where(Worker.status == WorkerStatus.ACTIVE)
    )
    return GridCapacity(
        role=caller.role,
        nodes=nodes or 0,
        cpus=cpus,
        free_cpus=max(0.0, cpus - sum(running_cpus(session).values())),
        queued=counts.get(Status.QUEUED, 0),
        running=sum(counts.get(s, 0) for s in OPEN_STATES),
    )


@router.post("/workers/{worker_id}/drain", response_model=WorkerAck)
def drain(worker_id: str, _admin: Admin, session: DB, state: State) -> WorkerAck:
    """Ask a node to drain: it takes no new work, finishes what it runs, and
    leaves (its agent learns it from its next heartbeat's answer: at once
    from this server, within a second from any other). Not the Ray head:
    its leaving would take the whole cluster with it."""
    worker = session.get(Worker, worker_id)
    if worker is None:
        raise NotFound(f"no worker {worker_id!r}")
    if worker.is_head:
        raise Conflict(f"{worker_id} is the Ray head: drain the workers, or stop the head's service")
    set_status(session, worker_id, WorkerStatus.DRAINING)
    session.commit()
    session.refresh(worker)
    state.beats.note(worker_id, WorkerStatus(worker.status), worker.is_head)
    return WorkerAck(status=WorkerStatus(worker.status))
