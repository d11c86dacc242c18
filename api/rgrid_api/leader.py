"""One active instance per database: the lock a background loop (the
monitor, later the autoscaler) holds while it acts, so that several servers
on one database never act twice.

On Postgres it is a session advisory lock held on a dedicated connection:
if the holder dies, its connection closes and another server takes over.
On SQLite (one machine) it is a file lock beside the database.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from sqlalchemy import Connection, Engine, text

from rgrid.filelock import FileLock
from rgrid_api.db.engine import is_postgres


class LeaderLock:
    def __init__(self, engine: Engine, key: int, name: str) -> None:
        self.engine = engine
        self.key = key
        self._conn: Connection | None = None
        self._file: FileLock | None = None
        if not is_postgres(engine):
            db = Path(engine.url.database or "rgrid.db")
            self._file = FileLock(db.with_suffix(f".{name}.lock"))

    def hold(self) -> bool:
        """Take the lock, or confirm it is still held; False while another
        instance leads."""
        if self._file is not None:
            return self._file.held or self._file.acquire(wait=False)
        if self._conn is not None:
            try:
                self._conn.execute(text("SELECT 1"))
                self._conn.commit()
                return True
            except Exception:  # noqa: BLE001 - a broken lock connection means the lock is gone
                self.release()
        conn = self.engine.connect()
        got = conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": self.key}).scalar()
        conn.commit()
        if not got:
            conn.close()
            return False
        self._conn = conn
        return True

    def release(self) -> None:
        if self._file is not None:
            self._file.release()
        if self._conn is not None:
            with contextlib.suppress(Exception):  # closing a dead connection
                self._conn.close()
            self._conn = None
