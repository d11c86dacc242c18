"""Giving lost attempts back to the queue: the one path for every way the
control plane learns that attempts died (a worker missed its heartbeats, a
lease ran out, a node restarted its raylet, the Ray driver process died).

Each attempt is ended as lost and its execution requeued while retries are
left; fencing by attempt number makes a late report of the old attempt
harmless. The transport is asked to cancel what it may still hold.
"""

from __future__ import annotations

import logging

from sqlalchemy.orm import Session

from rgrid.wire import FailureReason
from rgrid_api.attempts import attempt_lost
from rgrid_api.notify import ChangeFeed
from rgrid_api.transport import Transport

log = logging.getLogger(__name__)


def give_back(
    session: Session,
    keys: list[tuple[str, int]],
    feed: ChangeFeed,
    transport: Transport | None,
    why: str,
    counted: bool = True,
) -> None:
    requeued = False
    for execution_id, number in keys:
        if transport is not None:
            transport.cancel_task(execution_id, number)
        if attempt_lost(session, execution_id, number, FailureReason.WORKER_LOST, counted):
            requeued = True
            log.warning("requeued %s: attempt %d was lost (%s)", execution_id, number, why)
        feed.changed(execution_id)
    if requeued:
        feed.work_queued()
