"""Giving lost attempts back to the queue: the one path for every way the
control plane learns that attempts died (a worker missed its heartbeats, a
lease ran out, a node restarted its raylet or its server was deleted, the
Ray driver process died, a task ended in Ray without its runner).

Each attempt is ended as lost and its execution requeued while retries are
left; fencing by attempt number makes a late report of the old attempt
harmless. The transport is asked to cancel what it may still hold.

A step that owns its transactions, one per attempt: one execution row is
locked at a time (so it never deadlocks with a cancel that locks many), a
failure leaves the rest to their leases, and the change feed hears of each
once it is committed. Callers end their own transaction first: on SQLite a
writing session holds the database's write lock.
"""

from __future__ import annotations

import logging

from sqlalchemy.orm import Session, sessionmaker

from rgrid.wire import FailureReason
from rgrid_api.attempts import attempt_lost, attempt_open
from rgrid_api.notify import ChangeFeed
from rgrid_api.transport import Transport

log = logging.getLogger(__name__)


def give_back(
    sessions: sessionmaker[Session],
    keys: list[tuple[str, int]],
    feed: ChangeFeed,
    transport: Transport | None,
    why: str,
    counted: bool = True,
    unstarted_only: bool = False,
) -> None:
    """`unstarted_only`: leave an attempt whose runner started meanwhile
    (see `attempts.attempt_lost`), and its task."""
    for execution_id, number in keys:
        with sessions() as session:
            requeued = attempt_lost(
                session, execution_id, number, FailureReason.WORKER_LOST, counted, unstarted_only
            )
            cancel = not unstarted_only or not attempt_open(session, execution_id, number)
            session.commit()
        if transport is not None and cancel:
            transport.cancel_task(execution_id, number)
        if requeued:
            log.warning("requeued %s: attempt %d was lost (%s)", execution_id, number, why)
            feed.work_queued()
        feed.changed(execution_id)
