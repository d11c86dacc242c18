"""The worker registry: agents register their node and heartbeat in place;
the monitor reads it to find dead nodes; users list it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import bindparam, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from rgrid.states import WORKER
from rgrid.wire import LIVE_WORKER_STATES, OPEN_STATES, WorkerRegistration, WorkerStatus, WorkerView
from rgrid_api.db.engine import is_postgres
from rgrid_api.db.models import Attempt, Instance, Worker, WorkerHeartbeat
from rgrid_api.db.times import aware, utcnow
from rgrid_api.errors import NotFound


@dataclass(frozen=True)
class Head:
    """Where the cluster's Ray head is, as its agent announced it."""

    address: str
    ray_node_id: str


def register(session: Session, reg: WorkerRegistration, head: bool = False) -> None:
    """Upsert the worker; the node ids it announces replace the old ones (a
    restarted node is a new Ray node). `head`: the head's token registers
    it, which marks it the head for good."""
    now = utcnow()
    worker = session.get(Worker, reg.id)
    if worker is None:
        worker = Worker(id=reg.id, started_at=now, status=WorkerStatus.ACTIVE)
        session.add(worker)
    worker.host_name = reg.host_name
    worker.resources = reg.resources
    worker.runtimes = reg.runtimes
    worker.sandbox = reg.sandbox
    worker.provider = reg.provider
    worker.server_id = reg.server_id
    worker.pid = reg.pid
    worker.version = reg.version
    worker.ray_node_id = reg.ray_node_id
    worker.ray_address = reg.ray_address
    worker.ray_token_fp = reg.ray_token_fp
    worker.is_head = worker.is_head or head
    WORKER.move(worker, WorkerStatus.ACTIVE)
    worker.ended_at = None
    session.flush()
    _beat(session, reg.id, now)


def current_head(session: Session) -> Head | None:
    """The live head that beat last (there is normally one)."""
    row = session.execute(
        select(Worker.ray_address, Worker.ray_node_id)
        .join(WorkerHeartbeat, WorkerHeartbeat.worker_id == Worker.id)
        .where(
            Worker.status.in_(LIVE_WORKER_STATES),
            Worker.ray_address.is_not(None),
            Worker.ray_node_id.is_not(None),
        )
        .order_by(WorkerHeartbeat.last_heartbeat_at.desc())
        .limit(1)
    ).first()
    return Head(row[0], row[1]) if row and row[0] and row[1] else None


def offered_runtimes(session: Session) -> set[str] | None:
    """Runtimes the live workers offer; None while no worker is live (the
    grid is starting: refuse nothing yet)."""
    rows = session.scalars(select(Worker.runtimes).where(Worker.status == WorkerStatus.ACTIVE)).all()
    if not rows:
        return None
    return {runtime for runtimes in rows for runtime in runtimes}


def _beat(session: Session, worker_id: str, now: datetime) -> None:
    dialect_insert = pg_insert if is_postgres(session.get_bind()) else sqlite_insert
    stmt = dialect_insert(WorkerHeartbeat).values(worker_id=worker_id, last_heartbeat_at=now)
    session.execute(stmt.on_conflict_do_update(index_elements=["worker_id"], set_={"last_heartbeat_at": now}))


def record_beats(session: Session, beats: dict[str, datetime]) -> None:
    """Many nodes' beats in one statement (rgrid_api.beats); a node that
    is no longer live keeps its last one. (No IN list: PostgreSQL's
    executemany takes none.)"""
    live = (
        select(Worker.id)
        .where(
            Worker.id == WorkerHeartbeat.worker_id,
            or_(*(Worker.status == status for status in LIVE_WORKER_STATES)),
        )
        .exists()
    )
    session.connection().execute(
        update(WorkerHeartbeat)
        .where(WorkerHeartbeat.worker_id == bindparam("beat_worker"), live)
        .values(last_heartbeat_at=bindparam("beat_at")),
        [{"beat_worker": worker_id, "beat_at": at} for worker_id, at in beats.items()],
    )


# How long an ended node stays in the heartbeat view: a node declared dead
# (or one that left and lingers) hears so from its next beat.
ENDED_KEPT_S = 3600.0


def registry(session: Session) -> dict[str, tuple[WorkerStatus, bool]]:
    """Each live or recently ended node's status, and whether it is the head."""
    cutoff = utcnow() - timedelta(seconds=ENDED_KEPT_S)
    rows = session.execute(
        select(Worker.id, Worker.status, Worker.is_head).where(
            or_(Worker.status.in_(LIVE_WORKER_STATES), Worker.ended_at > cutoff)
        )
    )
    return {worker_id: (WorkerStatus(status), bool(is_head)) for worker_id, status, is_head in rows}


def heartbeat(session: Session, worker_id: str) -> WorkerStatus:
    """Record a heartbeat; answer the worker's status. A dead worker's
    heartbeat is not recorded: it has to stop and register anew."""
    worker = session.get(Worker, worker_id)
    if worker is None:
        raise NotFound(f"no worker {worker_id!r}")
    if worker.status in LIVE_WORKER_STATES:
        _beat(session, worker_id, utcnow())
    return WorkerStatus(worker.status)


def set_status(session: Session, worker_id: str, status: WorkerStatus) -> None:
    worker = session.get(Worker, worker_id)
    if worker is None:
        raise NotFound(f"no worker {worker_id!r}")
    if worker.status in LIVE_WORKER_STATES:
        WORKER.move(worker, status)
        if not status.live:
            worker.ended_at = utcnow()


def grid_cpus(session: Session) -> float:
    """The CPUs of the nodes that take new work (active: not draining)."""
    rows = session.scalars(select(Worker.resources).where(Worker.status == WorkerStatus.ACTIVE))
    return float(sum(float((resources or {}).get("CPU", 0.0)) for resources in rows))


def ray_node_ids(session: Session, worker_ids: list[str]) -> list[tuple[str, str]]:
    """(Ray node id, worker id) of these workers (those that registered one)."""
    rows = session.execute(select(Worker.ray_node_id, Worker.id).where(Worker.id.in_(worker_ids)))
    return [(node, worker) for node, worker in rows if node]


def set_ray_node(session: Session, worker_id: str, ray_node_id: str) -> None:
    session.execute(
        update(Worker)
        .where(Worker.id == worker_id, Worker.ray_node_id.is_(None))
        .values(ray_node_id=ray_node_id)
    )


def stale_workers(session: Session, timeout_s: float) -> list[str]:
    cutoff = utcnow() - timedelta(seconds=timeout_s)
    return list(
        session.scalars(
            select(Worker.id)
            .join(WorkerHeartbeat, WorkerHeartbeat.worker_id == Worker.id)
            .where(Worker.status.in_(LIVE_WORKER_STATES), WorkerHeartbeat.last_heartbeat_at < cutoff)
        )
    )


def open_attempts(session: Session, worker_id: str) -> int:
    """Attempts still open on one worker (a draining node waits for 0)."""
    count = session.scalar(
        select(func.count())
        .select_from(Attempt)
        .where(Attempt.worker_id == worker_id, Attempt.status.in_(OPEN_STATES))
    )
    return count or 0


def list_workers(session: Session, include_ended: bool = False) -> list[WorkerView]:
    now = utcnow()
    running = dict(
        session.execute(
            select(Attempt.worker_id, func.count())
            .where(Attempt.status.in_(OPEN_STATES), Attempt.worker_id.is_not(None))
            .group_by(Attempt.worker_id)
        ).all()
    )
    query = (
        select(Worker, WorkerHeartbeat.last_heartbeat_at)
        .join(WorkerHeartbeat, WorkerHeartbeat.worker_id == Worker.id, isouter=True)
        .order_by(Worker.started_at)
    )
    if not include_ended:
        query = query.where(Worker.status.in_(LIVE_WORKER_STATES))
    listed = session.execute(query).all()
    priced = {
        name: (server_type, price)
        for name, server_type, price in session.execute(
            select(Instance.name, Instance.server_type, Instance.price_eur_per_hour).where(
                Instance.name.in_([worker.id for worker, _ in listed])
            )
        )
    }
    views = []
    for worker, beat in listed:
        server_type, price = priced.get(worker.id, (None, None))
        age = (now - aware(beat)).total_seconds() if beat else None
        views.append(
            WorkerView(
                id=worker.id,
                host_name=worker.host_name,
                status=WorkerStatus(worker.status),
                heartbeat_age_s=age,
                running=running.get(worker.id, 0),
                runtimes=worker.runtimes,
                sandbox=worker.sandbox,
                provider=worker.provider,
                server_id=worker.server_id,
                pid=worker.pid,
                ray_node_id=worker.ray_node_id,
                started_at=worker.started_at,
                server_type=server_type,
                price_eur_per_hour=price,
            )
        )
    return views
