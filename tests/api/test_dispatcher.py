"""The dispatcher's bookkeeping in one process: a real SQLite database and
the transport in memory (tests.support.memtransport), rounds driven by the
test. What it hands out and when, which generation holds what, and what
happens when a task ends without its runner or a whole driver dies."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from rgrid.wire import FailureReason, RunnerResult, RunnerStart, Status
from rgrid_api.attempts import check_outputs, complete_attempt, start_attempt
from rgrid_api.db.models import Attempt, Execution
from rgrid_api.db.times import aware, utcnow
from rgrid_api.dispatcher import Dispatcher
from rgrid_api.notify import ChangeFeed
from rgrid_api.settings import Settings
from rgrid_runner.driver_messages import Settled
from tests.api.conftest import LEASE_S, add_worker, submit
from tests.support.memstorage import MemoryStorage
from tests.support.memtransport import MemoryTransport

ONE_NODE = [(2.0, 4096.0)]  # two CPUs, 4 GiB


def dispatcher(sessions: sessionmaker[Session], transport: MemoryTransport) -> Dispatcher:
    settings = Settings(database_url="sqlite://", lease_s=LEASE_S, dispatch_margin=0.0)
    d = Dispatcher(settings, sessions, sessions, ChangeFeed(), transport)
    transport.start(d)  # the listener, without the dispatcher's own threads
    return d


def attempts(session: Session, execution_id: str) -> list[tuple[int, str, str | None]]:
    """As the database has them now. Each read ends its transaction: every
    SQLite transaction here takes the write lock the dispatcher needs."""
    session.expire_all()
    rows = session.scalars(
        select(Attempt).where(Attempt.execution_id == execution_id).order_by(Attempt.number)
    )
    found = [(a.number, a.status, a.failure_reason) for a in rows]
    session.rollback()
    return found


def status(session: Session, execution_id: str) -> Status:
    session.expire_all()
    execution = session.get(Execution, execution_id)
    assert execution is not None
    found = Status(execution.status)
    session.rollback()
    return found


def test_nothing_is_handed_out_until_a_transport_connects_then_only_what_fits(
    sessions: sessionmaker[Session], session: Session, storage: MemoryStorage
) -> None:
    transport = MemoryTransport()
    d = dispatcher(sessions, transport)
    runs = [submit(session, storage).id for _ in range(3)]
    d.dispatch_round()
    assert transport.submitted == [] and all(status(session, r) == Status.QUEUED for r in runs)
    generation = transport.connect(ONE_NODE)
    d.dispatch_round()
    handed = [(m.ticket.execution_id, m.ticket.attempt) for m in transport.submitted]
    assert handed == [(runs[0], 1), (runs[1], 1)]  # oldest first, as many as the 2 CPUs take
    assert set(transport.held.values()) == {generation}
    assert status(session, runs[2]) == Status.QUEUED
    d.dispatch_round()
    assert len(transport.submitted) == 2  # the third waits for room


def test_a_dead_driver_gives_back_everything_its_generation_held(
    sessions: sessionmaker[Session], session: Session, storage: MemoryStorage
) -> None:
    transport = MemoryTransport()
    d = dispatcher(sessions, transport)
    runs = [submit(session, storage).id for _ in range(2)]
    transport.connect(ONE_NODE)
    d.dispatch_round()
    transport.lose()
    for r in runs:
        assert attempts(session, r) == [(1, Status.FAILED, FailureReason.WORKER_LOST)]
        assert status(session, r) == Status.QUEUED
    d.dispatch_round()
    assert len(transport.submitted) == 2  # nothing handed to a transport that is not connected
    transport.connect(ONE_NODE)
    d.dispatch_round()
    assert [(m.ticket.execution_id, m.ticket.attempt) for m in transport.submitted[2:]] == [
        (r, 2) for r in runs
    ]


def test_a_task_that_ends_without_its_runner_is_lost_and_one_that_reported_is_not(
    sessions: sessionmaker[Session], session: Session, storage: MemoryStorage
) -> None:
    transport = MemoryTransport()
    d = dispatcher(sessions, transport)
    add_worker(session, "w1")
    reported, silent = submit(session, storage).id, submit(session, storage).id
    transport.connect(ONE_NODE)
    d.dispatch_round()
    start_attempt(session, reported, 1, RunnerStart(worker="h", worker_id="w1"), LEASE_S, trusted=True)
    session.commit()
    complete_attempt(
        session, reported, 1, check_outputs(storage, reported, 1, RunnerResult(exit_code=0, duration_s=0.1))
    )
    session.commit()
    transport.settle(reported, 1)
    transport.settle(silent, 1)
    assert attempts(session, reported) == [(1, Status.SUCCEEDED, None)]
    assert attempts(session, silent) == [(1, Status.FAILED, FailureReason.WORKER_LOST)]
    assert status(session, silent) == Status.QUEUED
    d.dispatch_round()
    assert (transport.submitted[-1].ticket.execution_id, transport.submitted[-1].ticket.attempt) == (
        silent,
        2,
    )


def test_a_late_word_from_a_dead_generation_changes_nothing(
    sessions: sessionmaker[Session], session: Session, storage: MemoryStorage
) -> None:
    transport = MemoryTransport()
    d = dispatcher(sessions, transport)
    run = submit(session, storage).id
    old = transport.connect(ONE_NODE)
    d.dispatch_round()
    transport.lose()
    transport.connect(ONE_NODE)
    d.dispatch_round()  # attempt 2, held by the new generation
    d.on_settled(old, Settled(execution_id=run, attempt=1))
    assert attempts(session, run) == [
        (1, Status.FAILED, FailureReason.WORKER_LOST),
        (2, Status.DISPATCHED, None),
    ]


def test_the_leases_of_what_the_transport_holds_are_renewed(
    sessions: sessionmaker[Session], session: Session, storage: MemoryStorage
) -> None:
    transport = MemoryTransport()
    d = dispatcher(sessions, transport)
    run = submit(session, storage).id
    transport.connect(ONE_NODE)
    d.dispatch_round()
    soon = utcnow() + timedelta(seconds=1)
    with sessions() as s:
        row = s.scalar(select(Attempt).where(Attempt.execution_id == run))
        assert row is not None
        row.lease_expires_at = soon
        s.commit()
    d.renew_round()
    session.expire_all()
    row = session.scalar(select(Attempt).where(Attempt.execution_id == run))
    assert row is not None and row.lease_expires_at is not None
    assert aware(row.lease_expires_at) > soon + timedelta(seconds=LEASE_S / 2)
    session.rollback()
