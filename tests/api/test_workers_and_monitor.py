"""The worker registry and the monitor's decisions, called directly: dead
workers and expired leases are given back exactly once, a fresh monitor
waits one heartbeat timeout before trusting what it sees, and only one
monitor acts per database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from rgrid.wire import RunnerStart, Status, WorkerStatus
from rgrid_api.attempts import claim_queued, start_attempt
from rgrid_api.db.models import Execution, WorkerHeartbeat
from rgrid_api.monitor import Monitor
from rgrid_api.notify import ChangeFeed
from rgrid_api.settings import Settings
from rgrid_api.workers import heartbeat, list_workers, open_attempts, set_status, stale_workers
from tests.api.conftest import LEASE_S, add_worker, submit
from tests.support.memstorage import MemoryStorage
from tests.support.memtransport import MemoryTransport

TIMEOUT_S = 10.0


def age_heartbeat(session: Session, worker_id: str, seconds: float) -> None:
    session.execute(
        update(WorkerHeartbeat)
        .where(WorkerHeartbeat.worker_id == worker_id)
        .values(last_heartbeat_at=datetime.now(UTC) - timedelta(seconds=seconds))
    )
    session.commit()


def monitor(sessions: sessionmaker[Session], transport: MemoryTransport) -> Monitor:
    settings = Settings(heartbeat_timeout_s=TIMEOUT_S, database_url="sqlite://")
    return Monitor(settings, sessions, ChangeFeed(), transport)


def running_on(session: Session, storage: MemoryStorage, worker_id: str) -> str:
    e = submit(session, storage)
    claim_queued(session, LEASE_S)
    session.commit()
    start_attempt(session, e.id, 1, RunnerStart(worker="h", worker_id=worker_id), LEASE_S, trusted=True)
    session.commit()
    return e.id


def status_of(session: Session, execution_id: str) -> str:
    session.expire_all()
    execution = session.get(Execution, execution_id)
    assert execution is not None
    status = execution.status
    session.rollback()  # end the read: the monitor writes from its own session
    return status


def test_registry_heartbeats_and_staleness(session: Session) -> None:
    worker = add_worker(session)
    assert heartbeat(session, worker) == WorkerStatus.ACTIVE
    session.commit()
    assert stale_workers(session, TIMEOUT_S) == []
    age_heartbeat(session, worker, TIMEOUT_S + 1)
    assert stale_workers(session, TIMEOUT_S) == [worker]
    set_status(session, worker, WorkerStatus.DEAD)
    session.commit()
    # A dead worker's heartbeat is answered, not recorded: it must stop.
    assert heartbeat(session, worker) == WorkerStatus.DEAD
    session.commit()
    assert stale_workers(session, TIMEOUT_S) == []
    assert list_workers(session) == []
    assert [w.status for w in list_workers(session, include_ended=True)] == [WorkerStatus.DEAD]


def test_a_dead_worker_is_declared_only_after_one_timeout_of_trust(
    sessions: sessionmaker[Session], session: Session, storage: MemoryStorage
) -> None:
    worker = add_worker(session, ray_node_id="ab" * 28)
    execution_id = running_on(session, storage, worker)
    age_heartbeat(session, worker, TIMEOUT_S + 5)
    transport = MemoryTransport()
    m = monitor(sessions, transport)
    assert m._lead()
    m._sweep()
    # Just became active: heartbeats may not have been recorded meanwhile.
    assert status_of(session, execution_id) == Status.RUNNING
    assert m._trusted_since is not None
    m._trusted_since -= TIMEOUT_S
    m._sweep()
    assert status_of(session, execution_id) == Status.QUEUED
    assert transport.cancelled == [(execution_id, 1)]
    # Ray is told to place nothing more on the dead node's raylet.
    assert transport.fenced == ["ab" * 28]
    assert open_attempts(session, worker) == 0
    session.rollback()
    # A second sweep finds nothing more to give back.
    m._sweep()
    assert transport.cancelled == [(execution_id, 1)]
    assert transport.fenced == ["ab" * 28]
    m._release()


def test_attempts_ray_has_not_started_go_around_a_fenced_node_at_no_cost(
    sessions: sessionmaker[Session], session: Session, storage: MemoryStorage
) -> None:
    """Ray may hold a dispatched attempt for the node just fenced (a frozen
    raylet keeps it for a minute): it is submitted again, and that spends
    none of the execution's retries."""
    worker = add_worker(session, ray_node_id="cd" * 28)
    running = running_on(session, storage, worker)
    waiting = submit(session, storage, retries=0)
    claim_queued(session, LEASE_S)
    session.commit()
    age_heartbeat(session, worker, TIMEOUT_S + 5)
    transport = MemoryTransport()
    m = monitor(sessions, transport)
    assert m._lead()
    assert m._trusted_since is None
    m._sweep()
    assert m._trusted_since is not None
    m._trusted_since -= TIMEOUT_S
    m._sweep()
    assert transport.fenced == ["cd" * 28]
    assert sorted(transport.cancelled) == sorted([(running, 1), (waiting.id, 1)])
    assert status_of(session, waiting.id) == Status.QUEUED
    session.expire_all()
    execution = session.get(Execution, waiting.id)
    assert execution is not None and execution.lost_attempts == 0
    assert status_of(session, running) == Status.QUEUED
    m._release()


def test_an_expired_lease_is_given_back(
    sessions: sessionmaker[Session], session: Session, storage: MemoryStorage
) -> None:
    e = submit(session, storage)
    claim_queued(session, lease_s=-1.0)
    session.commit()
    transport = MemoryTransport()
    m = monitor(sessions, transport)
    assert m._lead()
    m._sweep()
    assert status_of(session, e.id) == Status.QUEUED
    assert transport.cancelled == [(e.id, 1)]
    assert transport.fenced == []
    m._release()


def test_one_monitor_acts_per_database(sessions: sessionmaker[Session]) -> None:
    first, second = monitor(sessions, MemoryTransport()), monitor(sessions, MemoryTransport())
    assert first._lead()
    assert not second._lead()
    assert first._lead()
    first._release()
    assert second._lead()
    second._release()
