"""Node heartbeats, coalesced.

Every node beats every 2 s: a thousand nodes send 500 beats a second. A beat
went through the thread pool and the database (four queries and a commit,
about 5 ms of the server's CPU), so the heartbeats alone took the server
past a core. Now a beat of a node this server knows is answered from
memory: the node's status, where the Ray head is and which Ray token is in
force, as the server last read them; its credential is re-checked for all
nodes at once, once a second (`SecretCache.renew`), not one lookup per node
each time its cache entry runs out (a third of the server's CPU at 300
nodes). Its time waits in memory too, and once a second one statement
writes every beat of that second and the registry is read again. So a
beat costs no database round trip, and what a beat is told is at most a
second old: a drain, a death or a moved head reaches a node one beat later
at most. The monitor declares a node dead after `heartbeat_timeout_s`
(10 s): a second's delay in writing its beats is well inside that.

A node this server has not read yet (it registered a moment ago, here or
on another server) is answered through the database, once; the routes that
change a node here tell the view at once (`note`).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import sessionmaker

from rgrid.wire import LIVE_WORKER_STATES, WorkerAck, WorkerStatus
from rgrid_api.auth import SecretCache
from rgrid_api.credentials import live_node_credentials
from rgrid_api.db.times import utcnow
from rgrid_api.raytoken import current
from rgrid_api.workers import current_head, record_beats, registry

log = logging.getLogger(__name__)

FLUSH_S = 1.0


@dataclass(frozen=True)
class Known:
    """A node as the server last read it."""

    status: WorkerStatus
    is_head: bool


class Beats:
    def __init__(
        self, sessions: sessionmaker, credentials: SecretCache[str] | None = None, flush_s: float = FLUSH_S
    ) -> None:
        self._sessions = sessions
        self._credentials = credentials
        self._flush_s = flush_s
        self._lock = threading.Lock()
        self._pending: dict[str, datetime] = {}
        self._known: dict[str, Known] = {}
        self._head: str | None = None
        self._token_fp: str | None = None
        self._answers: dict[WorkerStatus, bytes] = {}  # by the node's status
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rgrid-beats", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Write what is pending before the server goes."""
        self._stop.set()
        self._thread.join(timeout=10)
        self.flush()

    def known(self, worker_id: str) -> Known | None:
        with self._lock:
            return self._known.get(worker_id)

    def beat(self, worker_id: str) -> bytes | None:
        """Answer a known node's beat (a WorkerAck, as JSON), keeping its
        time if it is live (a dead node's beat is not recorded: it must
        register anew); None if the node is not known here yet. The answer
        is encoded once per status until the next reading: most beats get
        the same bytes."""
        with self._lock:
            known = self._known.get(worker_id)
            if known is None:
                return None
            if known.status in LIVE_WORKER_STATES:
                self._pending[worker_id] = utcnow()
            answer = self._answers.get(known.status)
            if answer is None:
                ack = WorkerAck(status=known.status, ray_address=self._head, ray_token_fp=self._token_fp)
                answer = self._answers[known.status] = ack.model_dump_json().encode()
            return answer

    def note(self, worker_id: str, status: WorkerStatus, is_head: bool) -> None:
        """A node changed here (registered, drained, left): answer its next
        beat with that, not with the last reading."""
        with self._lock:
            self._known[worker_id] = Known(status, is_head)

    def flush(self) -> None:
        """Write the pending beats in one statement, and read the registry."""
        with self._lock:
            pending, self._pending = self._pending, {}
        try:
            with self._sessions() as session:
                if pending:
                    record_beats(session, pending)
                known = {
                    worker_id: Known(status, is_head)
                    for worker_id, (status, is_head) in registry(session).items()
                }
                head = current_head(session)
                token = current(session)
                live = live_node_credentials(session) if self._credentials is not None else {}
                session.commit()
        except Exception:
            with self._lock:  # kept for the next flush; newer beats win
                self._pending = {**pending, **self._pending}
            raise
        with self._lock:
            self._known = known
            self._head = head.address if head else None
            self._token_fp = token.fingerprint
            self._answers = {}
        if self._credentials is not None:
            self._credentials.renew(live)

    def _run(self) -> None:
        while not self._stop.wait(self._flush_s):
            try:
                self.flush()
            except Exception:
                log.exception("writing heartbeats failed; they are kept for the next round")
