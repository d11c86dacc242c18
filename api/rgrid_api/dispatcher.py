"""The dispatcher: queued executions become Ray tasks.

It wakes the moment an execution is queued, an attempt ends or a node
registers in this process (ChangeFeed), and otherwise polls the database
every `dispatch_poll_s` for what other servers changed. The queue stays in
the database: each round hands Ray only what the grid can start now (plus
`dispatch_margin`), in the fair order of `rgrid_api.fairshare`, so another
owner's run never waits behind a large batch already inside Ray. Each
claimed attempt goes to the transport (`rgrid_api.transport`; in production
the Ray driver process, `DriverProcess`, which runs it as one Ray task asking
for the execution's CPU and memory, so Ray only places it where it fits).

The dispatcher is the transport's listener and claims nothing while no
transport is connected: executions wait in the database, and the API keeps
serving. It renews the leases of the attempts a transport generation holds
for it; when a task ends without its runner reporting, or the generation
itself ends, those attempts are given back at once.
"""

from __future__ import annotations

import logging
import threading

from sqlalchemy import or_, select
from sqlalchemy.orm import sessionmaker

from rgrid.wire import AttemptTicket, Status
from rgrid_api.attempts import Claimed, Sharing, attempt_open, claim_queued, renew_dispatched
from rgrid_api.auth import default_caps, runner_token
from rgrid_api.db.models import Execution
from rgrid_api.fairshare import RecentUse
from rgrid_api.giveback import give_back
from rgrid_api.notify import ChangeFeed
from rgrid_api.settings import Settings
from rgrid_api.transport import Transport
from rgrid_api.waiting import fail_where_no_node_fits
from rgrid_runner.driver_messages import Capacity, Settled, Submit

log = logging.getLogger(__name__)

Key = tuple[str, int]


class Dispatcher:
    def __init__(
        self,
        settings: Settings,
        sessions: sessionmaker,
        readers: sessionmaker,
        feed: ChangeFeed,
        transport: Transport,
        fail_unfit: bool = False,
    ) -> None:
        """`fail_unfit`: no autoscaler could add a node, so what fits none of
        the grid's nodes fails (see `_judge_unfit`)."""
        self.settings = settings
        self.fail_unfit = fail_unfit
        self._judged: int | None = None  # the driver generation whose grid judged the queue
        self.sessions = sessions
        self.readers = readers
        self.feed = feed
        self.transport = transport
        self.sharing = Sharing(settings.dispatch_margin, default_caps(settings))
        self.recent = RecentUse()
        self._stop = threading.Event()
        # The attempts each driver generation holds for us.
        self._inflight: dict[Key, int] = {}
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        self.transport.start(self)
        for target in (self._dispatch_loop, self._renew_loop):
            t = threading.Thread(target=target, name=f"rgrid-{target.__name__}", daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self) -> None:
        self._stop.set()
        self.feed.new_work.set()
        for t in self._threads:
            t.join(timeout=5)
        self.transport.stop()

    def _dispatch_loop(self) -> None:
        while not self._stop.is_set():
            self.feed.new_work.wait(self.settings.dispatch_poll_s)
            self.feed.new_work.clear()
            try:
                self.dispatch_round()
            except Exception:
                log.exception("dispatch round failed; retrying on the next wake-up")
                self._stop.wait(self.settings.dispatch_poll_s)

    def dispatch_round(self) -> None:
        """Hand the transport what the grid can start now (the loop runs one
        round on each wake-up)."""
        while not self._stop.is_set() and (generation := self.transport.ready()) is not None:
            capacity = self.transport.capacity()
            if capacity is None:
                return  # the driver says it once it has read the cluster
            if self.fail_unfit and self._judged != generation:
                self._judged = generation
                self._judge_unfit(capacity)
            with self.sessions() as session:
                claimed = claim_queued(
                    session,
                    self.settings.lease_s,
                    sharing=self.sharing,
                    grid=capacity,
                    recent=self.recent,
                    ray_token_fp=self.transport.ray_token_fingerprint(),
                )
                session.commit()
            for c in claimed:
                self._submit(c)
            if not claimed:
                return

    def _judge_unfit(self, grid: Capacity) -> None:
        """Runs submitted before this driver knew the grid were not judged
        when they arrived (`routes.executions.fail_if_no_node_fits`): those
        that fit none of its nodes fail now, once per driver generation (a
        node that restarts later does not fail what waits for it)."""
        with self.sessions() as session:
            queued = session.execute(
                select(Execution.id, Execution.cpu, Execution.memory_mb).where(
                    Execution.status == Status.QUEUED,
                    or_(Execution.cpu > grid.largest_cpus, Execution.memory_mb > grid.largest_memory_mb),
                )
            ).all()
            for execution_id, cpu, memory_mb in queued:
                opened = fail_where_no_node_fits(session, [execution_id], cpu, memory_mb, grid)
                session.commit()
                for key in opened:
                    self.transport.cancel_task(*key)
                self.feed.changed(execution_id)

    def _submit(self, c: Claimed) -> None:
        ticket = AttemptTicket(
            execution_id=c.execution_id,
            attempt=c.attempt,
            api_url=self.settings.runner_api_url,
            token=runner_token(self.settings.runner_secret.get_secret_value(), c.execution_id, c.attempt),
        )
        key = (c.execution_id, c.attempt)
        expected = self.transport.ready()
        if expected is not None:
            # Recorded before it is sent: the driver may settle it at once
            # (Ray refused it), and that answer must find it.
            with self._lock:
                self._inflight[key] = expected
            generation = self.transport.submit(
                Submit(ticket=ticket, cpu=c.cpu, memory_mb=c.memory_mb, runtime=c.runtime)
            )
            if generation is not None:
                if generation != expected:
                    with self._lock:
                        if key in self._inflight:
                            self._inflight[key] = generation
                # The driver may have ended between taking it and now: if so,
                # its loss was reported before we recorded the attempt.
                if self.transport.alive(generation):
                    self.feed.changed(c.execution_id)
                    log.info("dispatched %s attempt %d", c.execution_id, c.attempt)
                    return
        self._give_back_now([key], "the Ray driver went away while taking it")

    # -- the transport's listener -----------------------------------------
    def on_connected(self) -> None:
        self.feed.work_queued()

    def on_settled(self, generation: int, s: Settled) -> None:
        """A task ended. If its runner reported, the attempt is already final
        (a read says so, without the write lock); otherwise it was lost in
        Ray (its worker or node died, or it never started)."""
        with self._lock:
            if self._inflight.get((s.execution_id, s.attempt)) != generation:
                return
            del self._inflight[(s.execution_id, s.attempt)]
        try:
            with self.readers() as session:
                if not attempt_open(session, s.execution_id, s.attempt):
                    return
        except Exception:
            log.exception("reading %s attempt %d failed", s.execution_id, s.attempt)
        log.warning("attempt %d of %s ended in Ray without its runner reporting", s.attempt, s.execution_id)
        self._give_back_now([(s.execution_id, s.attempt)], "its task ended in Ray without its runner")

    def on_lost(self, generation: int, why: str) -> None:
        """A driver process ended: every attempt it held is gone with it."""
        with self._lock:
            keys = [key for key, gen in self._inflight.items() if gen == generation]
        self._give_back_now(keys, why)

    def _give_back_now(self, keys: list[Key], why: str) -> None:
        with self._lock:
            for key in keys:
                self._inflight.pop(key, None)
        if not keys:
            return
        try:
            give_back(self.sessions, keys, self.feed, None, why)
        except Exception:
            # No longer renewed by us, their leases run out and the monitor
            # gives them back: nothing is lost.
            log.exception("giving back %d attempts failed; their leases will expire", len(keys))

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.settings.lease_s / 3):
            try:
                self.renew_round()
            except Exception:
                log.exception("renewing dispatched leases failed")

    def renew_round(self) -> None:
        """Renew the leases of the attempts the transport holds for us (a
        started attempt's runner renews its own)."""
        with self._lock:
            keys = list(self._inflight)
        if keys:
            with self.sessions() as session:
                renew_dispatched(session, keys, self.settings.lease_s)
                session.commit()
