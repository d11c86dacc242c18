"""The control plane's bulk statements on PostgreSQL itself (SQLite takes
shapes PostgreSQL refuses: an IN list in an executemany, for one), in a
database of their own on the tests' PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import create_engine, select, text, update
from sqlalchemy.orm import Session, sessionmaker

from rgrid.wire import WorkerRegistration, WorkerStatus
from rgrid_api.attempts import claim_queued, renew_dispatched
from rgrid_api.beats import Beats
from rgrid_api.db.engine import make_engine, make_sessionmaker
from rgrid_api.db.migrate import upgrade
from rgrid_api.db.models import Attempt, WorkerHeartbeat
from rgrid_api.db.times import aware, utcnow
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
