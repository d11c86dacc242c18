"""Completing an upload reads every stored byte (its sha256), which takes
minutes for a large object: no transaction is held meanwhile (on SQLite a
writing one is the whole database's write lock), and an object planned
again while it was read is not marked complete under the old ticket."""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from rgrid.wire import ObjectSpec, UploadCompletion
from rgrid_api.db.models import StoredObject
from rgrid_api.errors import Conflict, Invalid
from rgrid_api.settings import Settings
from rgrid_api.storage import object_key
from rgrid_api.uploads import complete_upload, plan_uploads
from tests.support.memstorage import MemoryStorage

DATA = b"a large object, as far as this test is concerned\n"
SHA = hashlib.sha256(DATA).hexdigest()


class SlowReadingStorage(MemoryStorage):
    """Storage that runs `meanwhile` while it reads an object's bytes: what
    other requests do during a long hash."""

    def __init__(self, meanwhile: Callable[[], None]) -> None:
        super().__init__()
        self.meanwhile = meanwhile

    def sha256(self, key: str) -> str:
        digest = super().sha256(key)
        self.meanwhile()  # after the bytes were read, before the answer
        return digest


def planned(session: Session, storage: MemoryStorage, size: int = len(DATA)) -> None:
    plan_uploads(session, storage, Settings(), "alice", [ObjectSpec(sha256=SHA, size=size)])
    session.commit()


def completed(session: Session) -> bool:
    session.expire_all()
    return bool(session.scalar(select(StoredObject.complete).where(StoredObject.sha256 == SHA)))


def test_others_write_while_the_bytes_are_read(
    session: Session, sessions: sessionmaker[Session], db_path: Path
) -> None:
    wrote: list[bool] = []

    def another_writer() -> None:
        other = sqlite3.connect(db_path, timeout=1, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # "database is locked" after 1 s if the write lock is held
        other.execute("UPDATE api_keys SET name = name")
        other.execute("COMMIT")
        other.close()
        wrote.append(True)

    storage = SlowReadingStorage(another_writer)
    planned(session, storage)
    storage.put(object_key("alice", SHA), DATA)
    complete_upload(sessions, storage, "alice", UploadCompletion(sha256=SHA, size=len(DATA)))
    assert wrote == [True]
    assert completed(session)


def refused_when_meanwhile(
    session: Session, sessions: sessionmaker[Session], meanwhile: Callable[[MemoryStorage], None], why: str
) -> None:
    """A completion during whose hash `meanwhile` happens is refused (a
    Conflict saying `why`), and the object is not marked complete."""
    storage = SlowReadingStorage(lambda: meanwhile(storage))
    planned(session, storage)
    storage.put(object_key("alice", SHA), DATA)
    with pytest.raises(Conflict, match=why):
        complete_upload(sessions, storage, "alice", UploadCompletion(sha256=SHA, size=len(DATA)))
    assert not completed(session)


@pytest.mark.parametrize("size", [len(DATA), len(DATA) + 1])
def test_an_object_planned_again_while_it_was_read_keeps_its_new_ticket(
    session: Session, sessions: sessionmaker[Session], size: int
) -> None:
    """The same size too: a new plan is a new ticket."""

    def planned_again(storage: MemoryStorage) -> None:
        with sessions() as other:
            planned(other, storage, size=size)

    refused_when_meanwhile(session, sessions, planned_again, "planned again")


def test_an_object_swept_and_planned_anew_while_it_was_read_is_not_marked(
    session: Session, sessions: sessionmaker[Session]
) -> None:
    """The sweep took the old row and its bytes; the client planned the
    object again (a new row of the same size, no bytes yet): marking that
    row complete would point every run at bytes that are not there."""

    def swept_and_planned_anew(storage: MemoryStorage) -> None:
        with sessions() as other:
            other.execute(delete(StoredObject))
            other.commit()
            storage.delete(object_key("alice", SHA))
            planned(other, storage)

    refused_when_meanwhile(session, sessions, swept_and_planned_anew, "cleaned up")


def test_a_failed_check_leaves_the_bytes_another_completion_verified(
    session: Session, sessions: sessionmaker[Session]
) -> None:
    """This completion read bad bytes; meanwhile the client uploaded good
    ones and completed them. The bad check must not delete them."""

    def uploaded_again_and_completed() -> None:
        storage.meanwhile = lambda: None
        MemoryStorage.put(storage, object_key("alice", SHA), DATA)
        complete_upload(sessions, storage, "alice", UploadCompletion(sha256=SHA, size=len(DATA)))

    storage = SlowReadingStorage(uploaded_again_and_completed)
    planned(session, storage)
    storage.put(object_key("alice", SHA), b"x" * len(DATA))  # bad bytes, the right size
    with pytest.raises(Invalid, match="corrupted"):
        complete_upload(sessions, storage, "alice", UploadCompletion(sha256=SHA, size=len(DATA)))
    assert completed(session)
    assert storage.size(object_key("alice", SHA)) == len(DATA)


def test_a_second_completion_of_a_complete_object_is_a_no_op(
    session: Session, sessions: sessionmaker[Session]
) -> None:
    storage = MemoryStorage()
    planned(session, storage)
    storage.put(object_key("alice", SHA), DATA)
    done = UploadCompletion(sha256=SHA, size=len(DATA))
    complete_upload(sessions, storage, "alice", done)
    complete_upload(sessions, storage, "alice", done)
    assert completed(session)
