"""The control plane's bulk statements on PostgreSQL itself (SQLite takes
shapes PostgreSQL refuses: an IN list in an executemany, for one), in a
database of their own on the tests' PostgreSQL."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from sqlalchemy import create_engine, func, select, text, update
from sqlalchemy.orm import Session, sessionmaker

from rgrid.wire import ObjectSpec, UploadPlan, WorkerRegistration, WorkerStatus
from rgrid_api.attempts import claim_queued, renew_dispatched
from rgrid_api.beats import Beats
from rgrid_api.credentials import Taken, join, worker_for
from rgrid_api.db.engine import make_engine, make_sessionmaker
from rgrid_api.db.migrate import upgrade
from rgrid_api.db.models import Attempt, StoredObject, WorkerHeartbeat
from rgrid_api.db.times import aware, utcnow
from rgrid_api.settings import Settings
from rgrid_api.uploads import plan_uploads
from rgrid_api.workers import register, set_status
from tests.api.conftest import submit
from tests.support.memstorage import MemoryStorage
from tests.support.services import Postgres


@pytest.fixture
def pg_sessions(postgres: Postgres) -> Iterator[sessionmaker[Session]]:
    name = f"statements_{uuid.uuid4().hex[:8]}"
    admin = create_engine(
        postgres.url.replace("postgresql://", "postgresql+psycopg://"), isolation_level="AUTOCOMMIT"
    )
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))
    url = postgres.url.rsplit("/", 1)[0] + f"/{name}"
    upgrade(url)
    engine = make_engine(url)
    yield make_sessionmaker(engine)
    engine.dispose()
    with admin.connect() as conn:
        conn.execute(text(f"DROP DATABASE {name}"))
    admin.dispose()


def _age(session: Session) -> dict[str, float]:
    rows = session.execute(select(WorkerHeartbeat.worker_id, WorkerHeartbeat.last_heartbeat_at)).all()
    session.rollback()
    return {worker_id: (utcnow() - aware(at)).total_seconds() for worker_id, at in rows}


def test_coalesced_beats_are_written_for_live_nodes_only(pg_sessions: sessionmaker[Session]) -> None:
    with pg_sessions() as session:
        for worker_id in ("live", "dead"):
            register(session, WorkerRegistration(id=worker_id, host_name="h"))
            session.commit()
        session.execute(update(WorkerHeartbeat).values(last_heartbeat_at=utcnow() - timedelta(minutes=5)))
        session.commit()
        set_status(session, "dead", WorkerStatus.DEAD)
        session.commit()
    beats = Beats(pg_sessions)
    beats.flush()
    assert beats.beat("live") is not None and beats.beat("dead") is not None
    beats.flush()
    with pg_sessions() as session:
        ages = _age(session)
    assert ages["live"] < 30 and ages["dead"] > 200


def test_dispatched_leases_are_renewed_in_one_statement(pg_sessions: sessionmaker[Session]) -> None:
    storage = MemoryStorage()
    with pg_sessions() as session:
        for _ in range(3):
            submit(session, storage)
        keys = [(c.execution_id, c.attempt) for c in claim_queued(session, 1.0)]
        session.commit()
        assert len(keys) == 3
        session.execute(update(Attempt).values(lease_expires_at=utcnow() - timedelta(minutes=1)))
        session.commit()
        renew_dispatched(session, keys[:2], 30.0)
        session.commit()
        rows = session.execute(select(Attempt.execution_id, Attempt.lease_expires_at)).all()
    leases = {execution_id: aware(at) for execution_id, at in rows if at is not None}
    assert all(leases[k] > utcnow() for k, _ in keys[:2]) and leases[keys[2][0]] < utcnow()


def _when_one_waits_for_a_lock(sessions: sessionmaker[Session]) -> None:
    """Return once another backend waits for a row lock (an insert behind
    an uncommitted one of the same key); fail if none does within 30 s."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with sessions() as watcher:
            waiting = watcher.scalar(
                text("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'")
            )
        if waiting:
            return
        time.sleep(0.01)
    raise AssertionError("the second transaction never waited for the first")


def test_two_clients_planning_one_new_object_both_get_a_ticket(pg_sessions: sessionmaker[Session]) -> None:
    """The loser of the insert race plans again in its savepoint and finds
    the winner's row; its caller's transaction goes on and commits."""
    storage = MemoryStorage()
    settings = Settings()
    wanted = [ObjectSpec(sha256="ab" * 32, size=10)]
    with pg_sessions() as first:
        ours = plan_uploads(first, storage, settings, "alice", wanted)

        def second_client() -> UploadPlan:
            with pg_sessions() as second:
                plan = plan_uploads(second, storage, settings, "alice", wanted)
                second.commit()
                return plan

        with ThreadPoolExecutor(1) as pool:
            theirs = pool.submit(second_client)
            _when_one_waits_for_a_lock(pg_sessions)
            first.commit()
    assert [t.sha256 for t in theirs.result().missing] == [t.sha256 for t in ours.missing] == ["ab" * 32]
    with pg_sessions() as session:
        assert session.scalar(select(func.count()).select_from(StoredObject)) == 1


def test_two_nodes_joining_as_one_id_at_once_get_one_credential(pg_sessions: sessionmaker[Session]) -> None:
    with pg_sessions() as first:
        credential = join(first, "w-race")

        def second_node() -> str:
            with pg_sessions() as second:
                return join(second, "w-race")

        with ThreadPoolExecutor(1) as pool:
            theirs = pool.submit(second_node)
            _when_one_waits_for_a_lock(pg_sessions)
            first.commit()
    with pytest.raises(Taken, match="joined a moment ago"):
        theirs.result()
    with pg_sessions() as session:
        assert worker_for(session, credential) == "w-race"
