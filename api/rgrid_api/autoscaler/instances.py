"""The instances table: one row per server, its state machine, and what the
planner needs to know of each (its worker's status and idle time)."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from rgrid.states import INSTANCE, INSTANCE_ENDED, INSTANCE_FINAL
from rgrid.wire import OPEN_STATES, WAITING_STATES, InstanceState
from rgrid_api.autoscaler import plan as p
from rgrid_api.credentials import revoke
from rgrid_api.db.models import Attempt, Execution, Instance, InstanceTransition, Worker
from rgrid_api.db.times import aware, utcnow


def add(session: Session, name: str, provider: str, create: p.Create, reason: str) -> None:
    """The row of a server about to be created: the caller commits it
    before the create call, so a crash in between leaves a row to adopt or
    forget, never a server nobody knows."""
    now = utcnow()
    session.add(
        Instance(
            name=name,
            provider=provider,
            server_type=create.server_type,
            location=create.location,
            price_eur_per_hour=create.price,
            cpus=create.cpus,
            memory_mb=create.memory_mb,
            state=InstanceState.REQUESTED,
            reason=reason,
            requested_at=now,
            state_since=now,
        )
    )
    session.add(
        InstanceTransition(
            instance=name, from_state=None, to_state=InstanceState.REQUESTED, at=now, reason=reason
        )
    )


def move(session: Session, name: str, state: InstanceState, reason: str, **fields: object) -> bool:
    """Take one allowed transition (`rgrid.states.INSTANCE`) and record it;
    False if not allowed now (the planner may act on a row another server
    moved meanwhile). A node on its way out loses its credentials at once."""
    row = session.get(Instance, name)
    if row is None or row.state == state or not INSTANCE.allowed(row.state, state):
        return False
    now = utcnow()
    session.add(
        InstanceTransition(instance=name, from_state=row.state, to_state=state, at=now, reason=reason)
    )
    row.state, row.reason, row.state_since = state, reason, now
    for key, value in fields.items():
        setattr(row, key, value)
    if state in INSTANCE_ENDED:
        revoke(session, name)
    if state in INSTANCE_FINAL:
        row.ended_at = now
    return True


def load(session: Session) -> list[p.InstanceRecord]:
    """The rows that are not final, with their workers' status and idle time."""
    rows = session.scalars(select(Instance).where(Instance.state.not_in(INSTANCE_FINAL))).all()
    names = [r.name for r in rows]
    workers = {
        worker_id: (status, started_at, ended_at)
        for worker_id, status, started_at, ended_at in session.execute(
            select(Worker.id, Worker.status, Worker.started_at, Worker.ended_at).where(Worker.id.in_(names))
        )
    }
    busy = set(
        session.scalars(
            select(Attempt.worker_id)
            .where(Attempt.worker_id.in_(names), Attempt.status.in_(OPEN_STATES))
            .distinct()
        )
    )
    last_end = dict(
        session.execute(
            select(Attempt.worker_id, func.max(Attempt.finished_at))
            .where(Attempt.worker_id.in_(names))
            .group_by(Attempt.worker_id)
        ).all()
    )
    out = []
    for r in rows:
        status, started_at, ended_at = workers.get(r.name, (None, None, None))
        idle_since = None
        if status is not None and r.name not in busy:
            ends = [aware(t) for t in (last_end.get(r.name), started_at) if t is not None]
            idle_since = max(ends) if ends else None
        out.append(
            p.InstanceRecord(
                name=r.name,
                state=InstanceState(r.state),
                server_id=r.server_id,
                server_type=r.server_type,
                location=r.location,
                price=r.price_eur_per_hour,
                requested_at=aware(r.requested_at),
                state_since=aware(r.state_since),
                action_id=r.action_id,
                worker_status=status,
                idle_since=idle_since,
                worker_ended_at=aware(ended_at) if ended_at else None,
            )
        )
    return out


def demand(session: Session, limit: int = 10_000) -> list[p.Need]:
    """Executions waiting for a place: queued, or handed to Ray and not yet
    started anywhere (Ray holds them until a node fits)."""
    rows = session.execute(
        select(Execution.id, Execution.cpu, Execution.memory_mb, Execution.runtime)
        .where(Execution.status.in_(WAITING_STATES))
        .order_by(Execution.created_at)
        .limit(limit)
    ).all()
    return [p.Need(key, cpu, memory_mb, runtime) for key, cpu, memory_mb, runtime in rows]


def live_capacity(session: Session) -> list[p.WorkerRoom]:
    """Free room on every active worker: what it registered, less what its
    open attempts asked for."""
    used: dict[str | None, tuple[float, int]] = {}
    for worker_id, cpu, memory in session.execute(
        select(Attempt.worker_id, Execution.cpu, Execution.memory_mb)
        .join(Execution, Execution.id == Attempt.execution_id)
        .where(Attempt.status.in_(OPEN_STATES), Attempt.worker_id.is_not(None))
    ):
        c, m = used.get(worker_id, (0.0, 0))
        used[worker_id] = (c + cpu, m + memory)
    out = []
    for worker in session.scalars(select(Worker).where(Worker.status == "active")):
        c, m = used.get(worker.id, (0.0, 0))
        cpus = float(worker.resources.get("CPU", 0))
        memory = int(worker.resources.get("memory_mb", 1 << 40))
        if cpus > 0:
            out.append(
                p.WorkerRoom(
                    worker.id, max(0.0, cpus - c), memory - m, frozenset(worker.runtimes), cpus, memory
                )
            )
    return out
