"""Reads that never wait for a writer (SQLite under WAL), read-only sessions
that refuse to write, and API keys resolved from a short cache that still
lets a revocation take effect within seconds."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from rgrid.wire import FailureReason, RunnerResult, RunnerStart, Status
from rgrid_api.attempts import attempt_lost, check_outputs, claim_queued, complete_attempt, start_attempt
from rgrid_api.auth import Caller, SecretCache, caller_for_key, create_key, revoke_keys
from rgrid_api.db.engine import make_engine, make_hot_reader, make_readers, read_only
from rgrid_api.db.models import Execution
from rgrid_api.errors import Conflict, NotFound
from rgrid_api.executionread import read_execution
from rgrid_api.views import execution_view
from tests.api.conftest import LEASE_S, submit
from tests.support.memstorage import MemoryStorage


def test_a_reader_is_not_held_up_by_an_open_write_transaction(
    sessions: sessionmaker[Session], storage: MemoryStorage
) -> None:
    with sessions() as s:
        e = submit(s, storage)
    readers = make_readers(sessions.kw["bind"])
    writer = sessions()
    row = writer.get(Execution, e.id)  # BEGIN IMMEDIATE: the write lock is held from here
    assert row is not None
    row.status = Status.CANCELLED
    writer.flush()
    try:
        done = threading.Event()
        seen: list[str] = []

        def read() -> None:
            with readers() as r:
                seen.append(r.scalar(select(Execution.status).where(Execution.id == e.id)) or "")
            done.set()

        threading.Thread(target=read, daemon=True).start()
        # A reader that waited for the lock would wait for the busy timeout (30 s).
        assert done.wait(10), "the reader waited for the writer"
        assert seen == [Status.QUEUED]  # the last committed state
    finally:
        writer.rollback()
        writer.close()


def test_a_read_only_session_refuses_to_write(
    sessions: sessionmaker[Session], storage: MemoryStorage
) -> None:
    with sessions() as s:
        e = submit(s, storage)
    with make_readers(sessions.kw["bind"])() as r:
        row = r.get(Execution, e.id)
        assert row is not None
        row.status = Status.CANCELLED
        with pytest.raises(RuntimeError, match="read-only"):
            r.commit()


def _owner(cache: SecretCache[Caller], key: str) -> str | None:
    caller = cache.get(key)
    return caller.owner if caller else None


def test_a_revoked_key_stops_working_within_the_cache_time(sessions: sessionmaker[Session]) -> None:
    with sessions() as s:
        key = create_key(s, "alice", "laptop")
        s.commit()
        other = create_key(s, "alice", "ci")
        s.commit()
    cache = SecretCache(make_readers(sessions.kw["bind"]), 0.3, caller_for_key)
    assert _owner(cache, key) == "alice" and _owner(cache, other) == "alice"
    assert _owner(cache, "rg_not-a-key") is None
    with sessions() as s:
        assert revoke_keys(s, "alice", "laptop") == 1
        s.commit()
        assert revoke_keys(s, "alice", "laptop") == 0
        s.commit()
    deadline = time.monotonic() + 5
    while _owner(cache, key) is not None:
        assert time.monotonic() < deadline, "the revoked key was still accepted after 5 s"
        time.sleep(0.05)
    assert _owner(cache, other) == "alice"


def test_a_new_key_is_accepted_soon_after_being_refused(sessions: sessionmaker[Session]) -> None:
    cache = SecretCache(make_readers(sessions.kw["bind"]), 60, caller_for_key)
    key = "rg_" + "k" * 43
    assert _owner(cache, key) is None
    with sessions() as s:
        create_key(s, "bob", key=key)
        s.commit()
    deadline = time.monotonic() + 5
    while _owner(cache, key) != "bob":
        assert time.monotonic() < deadline, "a refused answer was kept too long"
        time.sleep(0.05)


def test_the_core_read_answers_what_the_orm_does_with_times_in_utc(
    sessions: sessionmaker[Session], storage: MemoryStorage
) -> None:
    with sessions() as s:
        e = submit(s, storage)
        claim_queued(s, LEASE_S)
        s.commit()
        start_attempt(s, e.id, 1, RunnerStart(worker="host-a"), LEASE_S, trusted=True)
        s.commit()
        assert attempt_lost(s, e.id, 1, FailureReason.WORKER_LOST)
        s.commit()
        claim_queued(s, LEASE_S)
        s.commit()
        start_attempt(s, e.id, 2, RunnerStart(worker="host-b"), LEASE_S, trusted=True)
        s.commit()
        complete_attempt(s, e.id, 2, check_outputs(storage, e.id, 2, RunnerResult(exit_code=3, duration_s=1)))
        s.commit()
        s.expire_all()
        row = s.get(Execution, e.id)
        assert row is not None
        orm = execution_view(row, row.attempts)
    with read_only(sessions.kw["bind"]).connect() as conn:
        view = read_execution(conn, "alice", e.id[:6].upper())
        assert view.model_copy(update={"cost_eur": None}) == orm
        assert [a.worker for a in view.attempts] == ["host-a", "host-b"] and view.exit_code == 3
        assert view.cost_eur == 0.0  # final, on nodes without a price
        times = [view.created_at, view.started_at, view.finished_at, *(a.started_at for a in view.attempts)]
        assert all(t is not None and t.utcoffset() == timedelta(0) for t in times)
        with pytest.raises(NotFound):
            read_execution(conn, "mallory", e.id)  # another owner's id is no id at all
        with pytest.raises(NotFound):
            read_execution(conn, "alice", "not-an-id!")


def test_the_core_read_tells_a_prefix_clash_from_an_execution_with_many_attempts(
    sessions: sessionmaker[Session], storage: MemoryStorage
) -> None:
    with sessions() as s:
        ids = [submit(s, storage).id for _ in range(2)]
        for n, old in enumerate(ids):
            s.execute(update(Execution).where(Execution.id == old).values(id=f"samepre{n}xy"))
        s.commit()
    with read_only(sessions.kw["bind"]).connect() as conn:
        with pytest.raises(Conflict, match="more than one"):
            read_execution(conn, "alice", "samepre")
        assert read_execution(conn, "alice", "samepre1").id == "samepre1xy"


def test_the_hot_read_never_waits_for_a_connection_request_threads_hold(db_path: Path) -> None:
    """On SQLite the hot read runs on the event loop; a thread holding the
    writers' last connection may need the loop to give it back."""
    url = f"sqlite:///{db_path}"
    writers = make_engine(url)
    held = [writers.connect() for _ in range(writers.pool.size() + writers.pool._max_overflow)]  # type: ignore[attr-defined]
    try:
        hot = make_hot_reader(url)
        with hot.connect() as conn:  # with a shared pool: a 30 s wait, then TimeoutError
            assert conn.execute(select(Execution.id).limit(1)).all() == []
        hot.dispose()
    finally:
        for conn in held:
            conn.close()
        writers.dispose()
