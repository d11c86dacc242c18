"""Coalesced heartbeats (rgrid_api.beats) on a real SQLite database: a beat
is answered from memory and written with the others at the next flush."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from rgrid.wire import WorkerAck, WorkerRegistration, WorkerStatus
from rgrid_api.beats import Beats
from rgrid_api.db.models import WorkerHeartbeat
from rgrid_api.db.times import aware, utcnow
from rgrid_api.workers import register, set_status, stale_workers
from tests.api.conftest import add_worker


def _age_beats(session: Session, worker_id: str, seconds: float) -> None:
    session.execute(
        update(WorkerHeartbeat)
        .where(WorkerHeartbeat.worker_id == worker_id)
        .values(last_heartbeat_at=utcnow() - timedelta(seconds=seconds))
    )
    session.commit()


def _last_beat(session: Session, worker_id: str) -> float:
    at = session.scalar(
        select(WorkerHeartbeat.last_heartbeat_at).where(WorkerHeartbeat.worker_id == worker_id)
    )
    session.rollback()
    assert at is not None
    return (utcnow() - aware(at)).total_seconds()


def _answer(beats: Beats, worker_id: str) -> WorkerAck:
    answer = beats.beat(worker_id)
    assert answer is not None
    return WorkerAck.model_validate_json(answer)


def test_a_beat_is_answered_from_memory_and_written_at_the_flush(
    sessions: sessionmaker[Session], session: Session
) -> None:
    add_worker(session, "node-1")
    add_worker(session, "node-2")
    _age_beats(session, "node-1", 60)
    _age_beats(session, "node-2", 60)
    beats = Beats(sessions)
    assert beats.beat("node-1") is None  # not read yet: the route takes the database path
    beats.flush()
    ack = _answer(beats, "node-1")
    assert ack.status == WorkerStatus.ACTIVE
    assert _last_beat(session, "node-1") > 50  # not written yet
    beats.flush()
    assert _last_beat(session, "node-1") < 5
    assert _last_beat(session, "node-2") > 50  # it did not beat
    assert stale_workers(session, 10) == ["node-2"]


def test_a_dead_nodes_beat_is_not_recorded_and_it_hears_that_it_is_dead(
    sessions: sessionmaker[Session], session: Session
) -> None:
    add_worker(session, "node-1")
    _age_beats(session, "node-1", 60)
    set_status(session, "node-1", WorkerStatus.DEAD)
    session.commit()
    beats = Beats(sessions)
    beats.flush()
    ack = _answer(beats, "node-1")
    assert ack.status == WorkerStatus.DEAD
    beats.flush()
    assert _last_beat(session, "node-1") > 50


def test_a_change_made_here_is_heard_at_the_next_beat_and_the_head_is_named(
    sessions: sessionmaker[Session], session: Session
) -> None:
    register(
        session,
        WorkerRegistration(id="head", host_name="h", ray_address="127.0.0.1:6379", ray_node_id="ab" * 28),
        head=True,
    )
    session.commit()
    add_worker(session, "node-1")
    beats = Beats(sessions)
    beats.flush()
    known = beats.known("head")
    assert known is not None and known.is_head
    set_status(session, "node-1", WorkerStatus.DRAINING)
    session.commit()
    beats.note("node-1", WorkerStatus.DRAINING, is_head=False)
    ack = _answer(beats, "node-1")
    assert ack.status == WorkerStatus.DRAINING and ack.ray_address == "127.0.0.1:6379"


def test_stopping_writes_what_is_pending(sessions: sessionmaker[Session], session: Session) -> None:
    add_worker(session, "node-1")
    _age_beats(session, "node-1", 60)
    beats = Beats(sessions, flush_s=3600)
    beats.start()
    beats.flush()
    assert beats.beat("node-1") is not None
    beats.stop()
    assert _last_beat(session, "node-1") < 5
