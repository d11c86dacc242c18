"""The monitor: finds dead workers and expired leases and gives their
attempts back to the queue (or fails them as worker_lost); puts a new
Ray token in force once no attempt is open (`rgrid_api.raytoken`); every
few minutes it also cleans up abandoned uploads (`rgrid_api.uploadsweep`).

One monitor is active per database (`rgrid_api.leader`: a Postgres advisory
lock, or a file lock beside a SQLite database); another server takes over
when the active one dies. After it becomes active, and after
any database error, it waits one heartbeat timeout before declaring a worker
dead, since heartbeats may not have been recorded meanwhile.
"""

from __future__ import annotations

import logging
import threading
import time

from sqlalchemy.orm import sessionmaker

from rgrid.wire import WorkerStatus
from rgrid_api import raytoken
from rgrid_api.attempts import attempts_on_workers, expired_attempts, unstarted_attempts
from rgrid_api.giveback import give_back
from rgrid_api.leader import LeaderLock
from rgrid_api.notify import ChangeFeed
from rgrid_api.settings import Settings
from rgrid_api.storage import Storage
from rgrid_api.transport import Transport
from rgrid_api.uploadsweep import sweep_abandoned
from rgrid_api.workers import ray_node_ids, set_status, stale_workers

log = logging.getLogger(__name__)


ADVISORY_LOCK_KEY = 0x726772696401  # "rgrid" + 1
UPLOAD_SWEEP_S = 300.0


class Monitor:
    def __init__(
        self,
        settings: Settings,
        sessions: sessionmaker,
        feed: ChangeFeed,
        transport: Transport | None,
        storage: Storage | None = None,
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.feed = feed
        self.transport = transport
        self.storage = storage  # whose abandoned uploads it cleans up
        self._swept_uploads_at = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rgrid-monitor", daemon=True)
        self._leader = LeaderLock(sessions.kw["bind"], ADVISORY_LOCK_KEY, "monitor")
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
        was_active = self.active.is_set()
        if not self._leader.hold():
            self.active.clear()
            return False
        if not was_active:
            self.active.set()
            self._trusted_since = None
            log.info("monitor active")
        return True

    def _release(self) -> None:
        self.active.clear()
        self._leader.release()

    def _sweep(self) -> None:
        now = time.monotonic()
        if self._trusted_since is None:
            self._trusted_since = now
        dead: list[str] = []
        transport = self.transport
        with self.sessions() as session:
            if now - self._trusted_since >= self.settings.heartbeat_timeout_s:
                dead = stale_workers(session, self.settings.heartbeat_timeout_s)
                for worker_id in dead:
                    log.warning("worker %s missed its heartbeats: marking it dead", worker_id)
                    set_status(session, worker_id, WorkerStatus.DEAD)
            fenced = ray_node_ids(session, dead) if dead and transport is not None else []
            on_dead = attempts_on_workers(session, dead) if dead else []
            session.commit()
        # A node that stopped heartbeating may still run its raylet (a hung
        # agent, a partition): Ray must place nothing more there, or each
        # attempt it gets would be refused and requeued back onto it,
        # forever. Ray may already hold attempts it has not started for such
        # a node (a frozen raylet keeps them until Ray's own health checks
        # give up on it, about a minute): submitted again, they avoid it.
        # That is no fault of theirs, so it spends none of their retries.
        if transport is not None and fenced:
            for node, worker_id in fenced:
                transport.fence_node(node, worker_id)
            with self.sessions() as session:
                unstarted = unstarted_attempts(session)  # read once the fence is up
            give_back(
                self.sessions,
                unstarted,
                self.feed,
                transport,
                "resubmitted around a fenced node",
                counted=False,
                unstarted_only=True,
            )
        give_back(self.sessions, on_dead, self.feed, transport, "worker dead")
        with self.sessions() as session:
            expired = expired_attempts(session)
        give_back(self.sessions, expired, self.feed, transport, "lease expired")
        with self.sessions() as session:
            if raytoken.advance(session):
                session.commit()
                log.info("the new Ray token is in force: every node restarts Ray with it")
        if self.storage is not None and now - self._swept_uploads_at >= UPLOAD_SWEEP_S:
            self._swept_uploads_at = now
            try:
                sweep_abandoned(self.sessions, self.storage, self.settings.upload_grace_s)
            except Exception:  # storage away: the next sweep does it; the monitor goes on
                log.exception("cleaning up abandoned uploads failed")
