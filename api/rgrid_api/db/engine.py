"""Engine and session factory for SQLite (embedded) and Postgres (production)."""

from __future__ import annotations

import sqlite3
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

READ_ONLY = "rgrid_read_only"
# Pre-ping: a server outlives PostgreSQL restarts and failovers.
POSTGRES_POOL: dict[str, Any] = {"pool_pre_ping": True, "pool_size": 10, "max_overflow": 20}


class ReadOnlySession(Session):
    """A session for requests that only read: writing through one is a bug."""

    def flush(self, objects: object = None) -> None:
        if self.new or self.dirty or self.deleted:
            raise RuntimeError("a read-only session was asked to write")
        super().flush(objects)  # type: ignore[arg-type]


def make_engine(url: str, **options: Any) -> Engine:
    """Build an engine. SQLite gets WAL, a busy timeout and, for sessions
    that may write, BEGIN IMMEDIATE: a deferred transaction that reads and
    then writes fails at once with 'database is locked' when another writer
    got in between, so a writing transaction takes the write lock up front.
    Readers (`make_readers`) begin deferred: under WAL they read a snapshot
    and never wait for the writer."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: sqlite3.Connection, _record: object) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()
            dbapi_conn.isolation_level = None

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn: Connection) -> None:
            conn.exec_driver_sql(
                "BEGIN" if conn.get_execution_options().get(READ_ONLY) else "BEGIN IMMEDIATE"
            )

        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    return create_engine(url, **{**POSTGRES_POOL, **options})


def make_sessionmaker(engine: Engine) -> sessionmaker:
    return sessionmaker(engine, expire_on_commit=False)


def read_only(engine: Engine) -> Engine:
    """The engine for reads: it shares the pool; on SQLite its transactions
    begin deferred, so reads never queue behind writes."""
    return engine.execution_options(**{READ_ONLY: True})


def make_hot_reader(url: str) -> Engine:
    """The engine for the hottest read (`rgrid_api.executionread`), with a
    pool of its own. On SQLite that read runs on the event loop, which must
    never wait for a connection a request thread holds: that thread may
    need the loop to give it back. On PostgreSQL the pool is in autocommit:
    the read is one statement, so one snapshot, and no BEGIN and ROLLBACK
    round trips surround it (they were two of its five)."""
    if url.startswith("sqlite"):
        return read_only(make_engine(url))
    return make_engine(url, isolation_level="AUTOCOMMIT")


def make_readers(engine: Engine) -> sessionmaker:
    """Sessions for reading only, on `read_only(engine)`."""
    return sessionmaker(read_only(engine), class_=ReadOnlySession)


def is_postgres(engine: Engine | Connection) -> bool:
    return engine.dialect.name == "postgresql"
