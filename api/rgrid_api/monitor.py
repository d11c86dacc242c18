"""The monitor: finds dead workers and expired leases and gives their
attempts back to the queue (or fails them as worker_lost).

One monitor is active per database: on Postgres it holds a session advisory
lock on a dedicated connection (another server takes over when it dies); on
SQLite, a file lock beside the database. After it becomes active, and after
any database error, it waits one heartbeat timeout before declaring a worker
dead, since heartbeats may not have been recorded meanwhile.
"""

from __future__ import annotations

import fcntl
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import Connection, text
from sqlalchemy.orm import sessionmaker

from rgrid.wire import FailureReason
from rgrid_api.attempts import attempt_lost, attempts_on_workers, expired_attempts
from rgrid_api.db.engine import is_postgres
from rgrid_api.notify import ChangeFeed
from rgrid_api.settings import Settings
from rgrid_api.workers import set_status, stale_workers

log = logging.getLogger(__name__)

ADVISORY_LOCK_KEY = 0x726772696401  # "rgrid" + 1


class Monitor:
    def __init__(
        self,
        settings: Settings,
        sessions: sessionmaker,
        feed: ChangeFeed,
        cancel_task: Callable[[str, int], None],
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.feed = feed
        self.cancel_task = cancel_task
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rgrid-monitor", daemon=True)
        self._lock_conn: Connection | None = None
        self._lock_file = None
        self._trusted_since: float | None = None
        self.active = threading.Event()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._release()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                if self._lead():
                    self._sweep()
            except Exception:
                log.exception("monitor round failed; retrying")
                self._release()
                self._trusted_since = None
            self._stop.wait(self.settings.monitor_interval_s)

    def _lead(self) -> bool:
        """Hold the single-monitor lock; True while this process holds it."""
        if self.active.is_set() and self._holds_lock():
            return True
        engine = self.sessions.kw["bind"]
        if is_postgres(engine):
            conn = engine.connect()
            got = conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": ADVISORY_LOCK_KEY}).scalar()
            conn.commit()
            if not got:
                conn.close()
                return False
            self._lock_conn = conn
        else:
            path = Path(engine.url.database or "rgrid.db").with_suffix(".monitor.lock")
            fh = open(path, "w")
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                fh.close()
                return False
            self._lock_file = fh
        self.active.set()
        self._trusted_since = None
        log.info("monitor active")
        return True

    def _holds_lock(self) -> bool:
        if self._lock_conn is None:
            return self._lock_file is not None
        try:
            self._lock_conn.execute(text("SELECT 1"))
            self._lock_conn.commit()
            return True
        except Exception:  # noqa: BLE001 - a broken lock connection means the lock is gone
            self._release()
            return False

    def _release(self) -> None:
        self.active.clear()
        if self._lock_conn is not None:
            try:
                self._lock_conn.close()
            except Exception:  # noqa: BLE001 - closing a dead connection
                pass
            self._lock_conn = None
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    def _sweep(self) -> None:
        now = time.monotonic()
        if self._trusted_since is None:
            self._trusted_since = now
        with self.sessions() as session:
            if now - self._trusted_since >= self.settings.heartbeat_timeout_s:
                dead = stale_workers(session, self.settings.heartbeat_timeout_s)
                for worker_id in dead:
                    log.warning("worker %s missed its heartbeats: marking it dead", worker_id)
                    set_status(session, worker_id, "dead")
                self._give_back(session, attempts_on_workers(session, dead) if dead else [])
            self._give_back(session, expired_attempts(session))

    def _give_back(self, session, keys: list[tuple[str, int]]) -> None:  # type: ignore[no-untyped-def]
        requeued = False
        for execution_id, number in keys:
            self.cancel_task(execution_id, number)
            if attempt_lost(session, execution_id, number, FailureReason.WORKER_LOST):
                requeued = True
                log.warning("requeued %s after attempt %d was lost", execution_id, number)
            self.feed.changed(execution_id)
        if requeued:
            self.feed.work_queued()
