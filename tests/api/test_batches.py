"""Batches, called directly on a real migrated SQLite database: created in
one transaction, read and cancelled as one, and never dispatched past their
`parallel` cap, whatever else waits in the queue."""

from __future__ import annotations

import tracemalloc

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from rgrid.wire import BatchCreate, BatchItem, InputFile, RunnerResult, RunnerStart, Status
from rgrid_api.attempts import check_outputs, claim_queued, complete_attempt, start_attempt
from rgrid_api.batches import batch_view, cancel_batch, create_batch, find_batch, list_batches
from rgrid_api.db.models import Batch, Execution
from rgrid_api.errors import Conflict, NotFound
from tests.api.conftest import LEASE_S, submit, upload
from tests.support.memstorage import MemoryStorage


def make_batch(
    session: Session, storage: MemoryStorage, n: int, parallel: int | None = None, owner: str = "alice"
) -> Batch:
    script = upload(session, storage, owner, b"import sys\nprint(sys.argv[1])\n")
    shared = upload(session, storage, owner, b"shared\n")
    items = [
        BatchItem(
            input=f"data/{i}.csv",
            inputs=[
                InputFile(sha256=upload(session, storage, owner, f"{i}\n".encode()), path=f"data/{i}.csv")
            ],
            args=[f"data/{i}.csv"],
        )
        for i in range(n)
    ]
    body = BatchCreate(
        script=InputFile(sha256=script, path="job.py"),
        shared=[InputFile(sha256=shared, path="lookup.txt")],
        items=items,
        parallel=parallel,
    )
    batch = create_batch(session, owner, body, "python:3.11")
    session.commit()
    return batch


def finish(session: Session, storage: MemoryStorage, execution_id: str, attempt: int, code: int) -> None:
    start_attempt(session, execution_id, attempt, RunnerStart(worker="w"), LEASE_S, trusted=True)
    session.commit()
    complete_attempt(
        session,
        execution_id,
        attempt,
        check_outputs(storage, execution_id, attempt, RunnerResult(exit_code=code, duration_s=0.1)),
    )
    session.commit()


def test_a_batch_is_one_execution_per_input_in_input_order(session: Session, storage: MemoryStorage) -> None:
    batch = make_batch(session, storage, 5)
    view = batch_view(session, batch)
    assert view.id.startswith("b-") and view.total == 5 and view.status == "running"
    assert view.counts == {Status.QUEUED: 5}
    assert [e.input for e in view.executions] == [f"data/{i}.csv" for i in range(5)]
    row = session.get(Execution, view.executions[2].id)
    assert row is not None and row.args == ["data/2.csv"]
    assert [i["path"] for i in row.inputs] == ["lookup.txt", "data/2.csv"]
    assert find_batch(session, "alice", view.id[:5]).id == view.id


def test_nothing_is_created_when_one_input_was_never_uploaded(
    session: Session, storage: MemoryStorage
) -> None:
    script = upload(session, storage, "alice", b"print(1)\n")
    body = BatchCreate(
        script=InputFile(sha256=script, path="job.py"),
        items=[
            BatchItem(input="a.csv", inputs=[InputFile(sha256="a" * 64, path="a.csv")]),
            BatchItem(input="b.csv"),
        ],
    )
    with pytest.raises(Conflict, match="not uploaded"):
        create_batch(session, "alice", body, "python:3.11")
    session.rollback()
    assert session.scalar(select(func.count()).select_from(Batch)) == 0
    assert session.scalar(select(func.count()).select_from(Execution)) == 0


def test_the_dispatcher_keeps_the_cap_and_serves_other_work(session: Session, storage: MemoryStorage) -> None:
    batch = make_batch(session, storage, 6, parallel=2)
    other = submit(session, storage, owner="bob")  # queued after the whole batch
    first = claim_queued(session, LEASE_S)
    session.commit()
    assert {c.execution_id for c in first} == {e.id for e in batch_view(session, batch).executions[:2]} | {
        other.id
    }
    assert claim_queued(session, LEASE_S) == []  # the batch is at its cap
    session.commit()
    finish(session, storage, first[0].execution_id, 1, 0)
    assert len(claim_queued(session, LEASE_S)) == 1  # one slot came free
    session.commit()


def test_status_is_failed_if_any_failed_and_succeeded_only_if_all_did(
    session: Session, storage: MemoryStorage
) -> None:
    batch = make_batch(session, storage, 2)
    for c in claim_queued(session, LEASE_S):
        finish(session, storage, c.execution_id, 1, 0)
    assert batch_view(session, batch).status == Status.SUCCEEDED
    failing = make_batch(session, storage, 2, owner="bob")
    codes = iter([0, 3])
    for c in claim_queued(session, LEASE_S):
        finish(session, storage, c.execution_id, 1, next(codes))
    view = batch_view(session, failing)
    assert view.status == Status.FAILED and view.counts == {Status.SUCCEEDED: 1, Status.FAILED: 1}
    assert view.finished_at is not None
    assert [e.exit_code for e in view.executions] == [0, 3]


def test_cancel_ends_the_queued_and_unstarted_and_tells_the_running(
    session: Session, storage: MemoryStorage
) -> None:
    batch = make_batch(session, storage, 4, parallel=2)
    running, unstarted = claim_queued(session, LEASE_S)
    session.commit()
    start_attempt(session, running.execution_id, 1, RunnerStart(worker="w"), LEASE_S, trusted=True)
    session.commit()
    _, touched, to_cancel = cancel_batch(session, "alice", batch.id)
    session.commit()
    assert len(touched) == 4
    assert to_cancel == [(unstarted.execution_id, 1)]  # its Ray task is cancelled too
    session.expire_all()
    view = batch_view(session, batch)
    assert view.counts == {Status.RUNNING: 1, Status.CANCELLED: 3} and view.status == "running"
    row = session.get(Execution, running.execution_id)
    assert row is not None and row.cancel_requested
    assert claim_queued(session, LEASE_S) == []
    session.commit()


def test_owners_never_see_each_others_batches(session: Session, storage: MemoryStorage) -> None:
    batch = make_batch(session, storage, 1)
    with pytest.raises(NotFound):
        find_batch(session, "bob", batch.id)
    with pytest.raises(NotFound):
        cancel_batch(session, "bob", batch.id)
    assert list_batches(session, "bob", 10) == []
    assert [b.id for b in list_batches(session, "alice", 10)] == [batch.id]


@pytest.mark.slow
def test_ten_thousand_inputs_are_created_in_bounded_memory(session: Session, storage: MemoryStorage) -> None:
    script = upload(session, storage, "alice", b"print(1)\n")
    data = upload(session, storage, "alice", b"same\n")
    items = [
        BatchItem(
            input=f"d/{i:05d}.csv", inputs=[InputFile(sha256=data, path=f"d/{i:05d}.csv")], args=[str(i)]
        )
        for i in range(10_000)
    ]
    body = BatchCreate(script=InputFile(sha256=script, path="job.py"), items=items, parallel=4)
    tracemalloc.start()
    try:
        batch = create_batch(session, "alice", body, "python:3.11")
        session.commit()
        view = batch_view(session, batch)
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert view.total == 10_000 and view.counts == {Status.QUEUED: 10_000}
    assert peak < 256 * 1024 * 1024, f"creating the batch took {peak / 2**20:.0f} MiB"
    assert len(claim_queued(session, LEASE_S)) == 4
    session.commit()


def test_the_notable_inputs_are_filtered_by_the_server(session: Session, storage: MemoryStorage) -> None:
    """What `rgrid status` asks of a large batch: running, failed or
    cancelled inputs, in input order, at most `limit`; the counts stay whole."""
    batch = make_batch(session, storage, 6)
    codes = iter([0, 3, 0, 4, 5])
    claimed = claim_queued(session, LEASE_S, limit=5)
    session.commit()
    for c in claimed:
        finish(session, storage, c.execution_id, 1, next(codes))
    view = batch_view(session, batch, notable=True, limit=2)
    assert [(e.input, e.exit_code) for e in view.executions] == [("data/1.csv", 3), ("data/3.csv", 4)]
    assert view.total == 6 and view.counts == {Status.SUCCEEDED: 2, Status.FAILED: 3, Status.QUEUED: 1}
