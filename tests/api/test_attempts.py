"""Attempts, called directly: dispatch claims, start (the fencing check),
leases, logs, outputs, completion, requeue and retry accounting, cancel
before start, and the state triggers in the database itself."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import event, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from rgrid.errors import StaleAttempt
from rgrid.wire import (
    FailureReason,
    OutputFile,
    RunnerLogLine,
    RunnerResult,
    RunnerStart,
    Status,
    WorkerStatus,
)
from rgrid_api.attempts import (
    NotStarted,
    append_logs,
    attempt_lost,
    attempt_open,
    check_current,
    check_outputs,
    claim_queued,
    complete_attempt,
    expired_attempts,
    lease_for_outputs,
    output_upload_urls,
    renew_dispatched,
    renew_lease,
    runner_spec,
    start_attempt,
)
from rgrid_api.db.models import Attempt, Execution, Output
from rgrid_api.db.times import aware, utcnow
from rgrid_api.errors import Invalid
from rgrid_api.executions import cancel_execution, read_logs
from rgrid_api.storage import output_key
from rgrid_api.workers import set_status
from tests.api.conftest import LEASE_S, add_worker, submit
from tests.support.memstorage import MemoryStorage

START = RunnerStart(worker="host-a")


def running(session: Session, storage: MemoryStorage, **submitted: Any) -> Execution:
    """A submitted execution whose attempt 1 was claimed and started, as a
    runner's start call leaves it (committed)."""
    e = submit(session, storage, **submitted)
    claim_queued(session, LEASE_S)
    session.commit()
    start_attempt(session, e.id, 1, START, LEASE_S, trusted=True)
    session.commit()
    return e


def state(session: Session, execution_id: str) -> tuple[str, int, int]:
    session.expire_all()
    e = session.get(Execution, execution_id)
    assert e is not None
    return e.status, e.attempt, e.lost_attempts


def attempt_row(session: Session, execution_id: str, number: int) -> Attempt:
    session.expire_all()
    row = session.query(Attempt).filter_by(execution_id=execution_id, number=number).one()
    return row


def test_claim_opens_attempt_one_with_a_lease(session: Session, storage: MemoryStorage) -> None:
    e = submit(session, storage)
    claimed = claim_queued(session, LEASE_S)
    session.commit()
    assert [(c.execution_id, c.attempt) for c in claimed] == [(e.id, 1)]
    assert state(session, e.id) == (Status.DISPATCHED, 1, 0)
    row = attempt_row(session, e.id, 1)
    assert row.status == Status.DISPATCHED and row.lease_expires_at is not None
    assert claim_queued(session, LEASE_S) == []
    session.commit()


def test_start_hands_the_runner_fresh_urls_and_runs(session: Session, storage: MemoryStorage) -> None:
    e = submit(session, storage, inputs={"data/a.csv": b"1,2\n"})
    claim_queued(session, LEASE_S)
    session.commit()
    started = start_attempt(session, e.id, 1, START, LEASE_S, trusted=True)
    session.commit()
    assert isinstance(started, Execution)
    spec = runner_spec(storage, started, 1)
    assert spec.script.path == "job.py" and spec.script.url.startswith("memory://get/objects/alice/")
    assert [i.path for i in spec.inputs] == ["data/a.csv"]
    assert state(session, e.id)[0] == Status.RUNNING
    assert attempt_row(session, e.id, 1).worker == "host-a"


def test_a_started_attempt_is_never_taken_over_by_another_node(
    session: Session, storage: MemoryStorage
) -> None:
    """The thief has a registered node of its own and the attempt's ticket."""
    add_worker(session, "victim")
    add_worker(session, "thief")
    e = submit(session, storage)
    claim_queued(session, LEASE_S)
    session.commit()
    start_attempt(session, e.id, 1, RunnerStart(worker="v", worker_id="victim"), LEASE_S)
    session.commit()
    with pytest.raises(StaleAttempt, match="started by another node"):
        start_attempt(session, e.id, 1, RunnerStart(worker="t", worker_id="thief"), LEASE_S)
    with pytest.raises(StaleAttempt, match="started by another node"):
        start_attempt(session, e.id, 1, START, LEASE_S, trusted=True)  # not even the head's
    row = attempt_row(session, e.id, 1)
    assert (row.status, row.worker_id) == (Status.RUNNING, "victim")
    # Its own runner, retrying a start whose answer it lost, is answered.
    again = start_attempt(session, e.id, 1, RunnerStart(worker="v", worker_id="victim"), LEASE_S)
    session.commit()
    assert isinstance(again, Execution) and again.id == e.id
    assert attempt_row(session, e.id, 1).worker_id == "victim"


def test_a_node_credential_must_name_a_registered_worker(session: Session, storage: MemoryStorage) -> None:
    e = submit(session, storage)
    claim_queued(session, LEASE_S)
    session.commit()
    with pytest.raises(StaleAttempt, match="not registered here"):
        start_attempt(session, e.id, 1, RunnerStart(worker="j", worker_id="joined-only"), LEASE_S)
    assert state(session, e.id) == (Status.DISPATCHED, 1, 0)  # untouched: it waits for its own node


def test_a_stale_runner_is_fenced_off_everywhere(session: Session, storage: MemoryStorage) -> None:
    e = running(session, storage)
    assert attempt_lost(session, e.id, 1, FailureReason.WORKER_LOST) is True
    session.commit()
    assert state(session, e.id) == (Status.QUEUED, 1, 1)
    claim_queued(session, LEASE_S)
    session.commit()
    start_attempt(session, e.id, 2, START, LEASE_S, trusted=True)
    session.commit()
    # Runner 1 comes back from a partition: every call it makes is refused.
    with pytest.raises(StaleAttempt):
        renew_lease(session, e.id, 1, LEASE_S)
    with pytest.raises(StaleAttempt):
        append_logs(session, e.id, 1, [RunnerLogLine(stream="stdout", data="late\n")], LEASE_S)
    with pytest.raises(StaleAttempt):
        complete_attempt(
            session, e.id, 1, check_outputs(storage, e.id, 1, RunnerResult(exit_code=0, duration_s=1))
        )
    with pytest.raises(StaleAttempt):
        start_attempt(session, e.id, 1, START, LEASE_S, trusted=True)
    complete_attempt(
        session, e.id, 2, check_outputs(storage, e.id, 2, RunnerResult(exit_code=0, duration_s=1))
    )
    session.commit()
    assert state(session, e.id) == (Status.SUCCEEDED, 2, 1)
    # Losing an attempt that already ended is a no-op, never a second requeue.
    assert attempt_lost(session, e.id, 2, FailureReason.WORKER_LOST) is False
    session.commit()
    assert state(session, e.id) == (Status.SUCCEEDED, 2, 1)


def test_lost_attempts_beyond_retries_fail_as_worker_lost(session: Session, storage: MemoryStorage) -> None:
    e = submit(session, storage, retries=1)
    for number in (1, 2):
        claim_queued(session, LEASE_S)
        session.commit()
        requeued = attempt_lost(session, e.id, number, FailureReason.WORKER_LOST)
        session.commit()
        assert requeued is (number == 1)
    session.expire_all()
    execution = session.get(Execution, e.id)
    assert execution is not None
    assert (execution.status, execution.failure_reason, execution.lost_attempts) == (
        Status.FAILED,
        FailureReason.WORKER_LOST,
        2,
    )


def test_cancel_queued_is_immediate(session: Session, storage: MemoryStorage) -> None:
    e = submit(session, storage)
    cancel_execution(session, "alice", e.id)
    session.commit()
    assert state(session, e.id)[0] == Status.CANCELLED
    assert claim_queued(session, LEASE_S) == []
    session.commit()


def test_cancel_before_start_ends_it_at_once_and_fences_a_late_runner(
    session: Session, storage: MemoryStorage
) -> None:
    """Handed to Ray but never started (Ray may never place it): cancelled at
    once, its task named for cancelling, and a runner that starts late is
    refused."""
    e = submit(session, storage)
    claim_queued(session, LEASE_S)
    session.commit()
    _, unstarted = cancel_execution(session, "alice", e.id)
    session.commit()
    assert unstarted == 1
    assert state(session, e.id)[0] == Status.CANCELLED
    assert attempt_row(session, e.id, 1).failure_reason == FailureReason.CANCELLED
    with pytest.raises(StaleAttempt):
        start_attempt(session, e.id, 1, START, LEASE_S, trusted=True)
    assert state(session, e.id)[0] == Status.CANCELLED


def test_cancel_while_running_is_told_on_the_next_call(session: Session, storage: MemoryStorage) -> None:
    e = running(session, storage)
    assert renew_lease(session, e.id, 1, LEASE_S) is False
    session.commit()
    cancel_execution(session, "alice", e.id)
    session.commit()
    assert renew_lease(session, e.id, 1, LEASE_S) is True
    session.commit()
    complete_attempt(
        session,
        e.id,
        1,
        check_outputs(
            storage,
            e.id,
            1,
            RunnerResult(exit_code=None, failure_reason=FailureReason.CANCELLED, duration_s=1),
        ),
    )
    session.commit()
    assert state(session, e.id)[0] == Status.CANCELLED


def test_a_draining_worker_gives_work_back_without_counting_it(
    session: Session, storage: MemoryStorage
) -> None:
    worker = add_worker(session)
    set_status(session, worker, WorkerStatus.DRAINING)
    session.commit()
    e = submit(session, storage)
    claim_queued(session, LEASE_S)
    session.commit()
    refused = start_attempt(
        session, e.id, 1, RunnerStart(worker="h", worker_id=worker), LEASE_S, trusted=True
    )
    session.commit()
    assert refused == NotStarted(f"worker {worker} takes no new work")
    assert state(session, e.id) == (Status.QUEUED, 1, 0)


def test_logs_are_sequenced_and_renew_the_lease(session: Session, storage: MemoryStorage) -> None:
    e = running(session, storage)
    lines = [RunnerLogLine(stream="stdout", data="a\n"), RunnerLogLine(stream="stderr", data="b\n")]
    append_logs(session, e.id, 1, lines, LEASE_S)
    session.commit()
    append_logs(session, e.id, 1, [RunnerLogLine(stream="stdout", data="c\n")], LEASE_S)
    session.commit()
    chunks = read_logs(session, e.id, after=0)
    assert [(c.seq, c.stream, c.data) for c in chunks] == [
        (1, "stdout", "a\n"),
        (2, "stderr", "b\n"),
        (3, "stdout", "c\n"),
    ]
    assert [c.seq for c in read_logs(session, e.id, after=2)] == [3]


def test_an_attempt_is_open_until_it_ends_or_is_superseded(session: Session, storage: MemoryStorage) -> None:
    e = submit(session, storage)
    claim_queued(session, LEASE_S)
    session.commit()
    assert attempt_open(session, e.id, 1)
    attempt_lost(session, e.id, 1, FailureReason.WORKER_LOST)
    session.commit()
    assert not attempt_open(session, e.id, 1)
    claim_queued(session, LEASE_S)
    session.commit()
    start_attempt(session, e.id, 2, START, LEASE_S, trusted=True)
    session.commit()
    assert attempt_open(session, e.id, 2) and not attempt_open(session, e.id, 1)
    complete_attempt(
        session, e.id, 2, check_outputs(storage, e.id, 2, RunnerResult(exit_code=0, duration_s=0.1))
    )
    session.commit()
    assert not attempt_open(session, e.id, 2)


def test_the_last_lines_travel_with_the_result(session: Session, storage: MemoryStorage) -> None:
    """A short job's output comes with its result, and is recorded with it:
    after the lines already shipped, and not at all from a fenced-off runner."""
    e = running(session, storage)
    append_logs(session, e.id, 1, [RunnerLogLine(stream="stdout", data="a\n")], LEASE_S)
    session.commit()
    tail = [RunnerLogLine(stream="stdout", data="b\n"), RunnerLogLine(stream="stderr", data="c\n")]
    complete_attempt(
        session,
        e.id,
        1,
        check_outputs(storage, e.id, 1, RunnerResult(exit_code=0, duration_s=0.1, logs=tail)),
    )
    session.commit()
    assert [(c.seq, c.data) for c in read_logs(session, e.id, after=0)] == [
        (1, "a\n"),
        (2, "b\n"),
        (3, "c\n"),
    ]
    with pytest.raises(StaleAttempt):
        complete_attempt(
            session,
            e.id,
            1,
            check_outputs(storage, e.id, 1, RunnerResult(exit_code=0, duration_s=0.1, logs=tail)),
        )
    assert len(read_logs(session, e.id, after=0)) == 3


def test_giving_up_an_unstarted_attempt_leaves_one_that_started_meanwhile(
    session: Session, storage: MemoryStorage
) -> None:
    """The monitor reads the unstarted attempts, then gives each up around
    a fenced node: one whose runner started on a healthy node in between
    runs on."""
    e = running(session, storage)
    assert (
        attempt_lost(session, e.id, 1, FailureReason.WORKER_LOST, counted=False, unstarted_only=True) is False
    )
    session.commit()
    assert state(session, e.id) == (Status.RUNNING, 1, 0)


def test_outputs_must_be_in_storage_before_they_count(session: Session, storage: MemoryStorage) -> None:
    e = running(session, storage)
    check_current(session, e.id, 1)
    urls = output_upload_urls(storage, e.id, 1, ["out/r.txt"])
    assert urls == {"out/r.txt": f"memory://put/{output_key(e.id, 1, 'out/r.txt')}"}
    result = RunnerResult(
        exit_code=0, duration_s=1, outputs=[OutputFile(path="out/r.txt", size=3, sha256="0" * 64)]
    )
    with pytest.raises(Invalid, match="missing or incomplete"):
        complete_attempt(session, e.id, 1, check_outputs(storage, e.id, 1, result))
    storage.put(output_key(e.id, 1, "out/r.txt"), b"abc")
    twice = result.model_copy(update={"outputs": result.outputs * 2})
    with pytest.raises(Invalid, match="reported twice"):
        check_outputs(storage, e.id, 1, twice)  # the database's unique path would be a 500
    complete_attempt(session, e.id, 1, check_outputs(storage, e.id, 1, result))
    session.commit()
    assert [o.path for o in session.query(Output).filter_by(execution_id=e.id)] == ["out/r.txt"]


def test_the_lease_outlives_the_check_of_every_output(session: Session, storage: MemoryStorage) -> None:
    """The runner stopped renewing when it reported: checking thousands of
    outputs with no lock held must not let the monitor take the attempt."""
    many = RunnerResult(
        exit_code=0,
        duration_s=1,
        outputs=[OutputFile(path=f"out/{n}.txt", size=1, sha256="0" * 64) for n in range(6000)],
    )
    assert lease_for_outputs(LEASE_S, many) >= LEASE_S + 6000 * 0.005
    e = running(session, storage)
    renew_lease(session, e.id, 1, lease_for_outputs(LEASE_S, many))
    session.commit()
    row = attempt_row(session, e.id, 1)
    assert row.lease_expires_at is not None
    assert aware(row.lease_expires_at) > utcnow() + timedelta(seconds=LEASE_S + 25)


@pytest.mark.parametrize("bad", ["../escape.txt", "/etc/passwd", ""])
def test_an_output_path_outside_the_work_dir_is_refused(
    session: Session, storage: MemoryStorage, bad: str
) -> None:
    e = running(session, storage)
    result = RunnerResult(exit_code=0, duration_s=1, outputs=[OutputFile(path=bad, size=0, sha256="0" * 64)])
    with pytest.raises(Invalid):
        complete_attempt(session, e.id, 1, check_outputs(storage, e.id, 1, result))
    assert state(session, e.id)[0] == Status.RUNNING


def test_an_expired_lease_is_found(session: Session, storage: MemoryStorage) -> None:
    e = submit(session, storage)
    claim_queued(session, lease_s=-1.0)
    session.commit()
    assert expired_attempts(session) == [(e.id, 1)]


def test_the_database_refuses_transitions_outside_the_diagram(
    session: Session, storage: MemoryStorage
) -> None:
    e = running(session, storage)
    complete_attempt(
        session, e.id, 1, check_outputs(storage, e.id, 1, RunnerResult(exit_code=0, duration_s=1))
    )
    session.commit()
    with pytest.raises(DBAPIError, match="invalid execution status transition"):
        session.execute(text("UPDATE executions SET status='running' WHERE id=:id"), {"id": e.id})
    session.rollback()
    with pytest.raises(DBAPIError, match="invalid attempt status transition"):
        session.execute(
            text("UPDATE attempts SET status='failed' WHERE execution_id=:id AND number=1"), {"id": e.id}
        )
    session.rollback()
    assert state(session, e.id)[0] == Status.SUCCEEDED


def test_the_fence_and_the_claim_read_no_attempt_list(session: Session, storage: MemoryStorage) -> None:
    """Every runner call passes the fence, and the dispatcher claims all the
    time: neither loads an execution's list of attempts, which only the views
    want (the fence reads its rows in one SELECT)."""
    first = submit(session, storage)
    submit(session, storage)
    selects: list[str] = []

    def record(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            selects.append(statement)

    engine = session.get_bind()
    event.listen(engine, "before_cursor_execute", record)
    try:
        claim_queued(session, LEASE_S)
        session.commit()
        claim_selects = list(selects)
        selects.clear()
        renew_lease(session, first.id, 1, LEASE_S)
        session.commit()
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert claim_selects and not [q for q in claim_selects if "FROM attempts" in q], claim_selects
    assert len(selects) == 1, selects


def test_a_bulk_renewal_keeps_fencing(session: Session, storage: MemoryStorage) -> None:
    """The dispatcher renews what it holds in one statement; an attempt
    that was lost meanwhile is not revived by it, and its late runner is
    still refused."""
    e = submit(session, storage)
    (first,) = claim_queued(session, LEASE_S)
    session.commit()
    assert attempt_lost(session, e.id, first.attempt, FailureReason.WORKER_LOST)
    session.commit()
    (second,) = claim_queued(session, LEASE_S)
    session.commit()
    assert second.attempt == first.attempt + 1
    renew_dispatched(session, [(e.id, first.attempt), (e.id, second.attempt)], LEASE_S)
    session.commit()
    session.expire_all()
    lost = session.scalar(
        select(Attempt).where(Attempt.execution_id == e.id, Attempt.number == first.attempt)
    )
    assert lost is not None and lost.status == Status.FAILED
    with pytest.raises(StaleAttempt):
        start_attempt(session, e.id, first.attempt, RunnerStart(worker="w"), LEASE_S, trusted=True)
    start_attempt(session, e.id, second.attempt, RunnerStart(worker="w"), LEASE_S, trusted=True)
    session.commit()
