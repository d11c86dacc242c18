"""Giving lost attempts back to the queue: the one path for every way the
control plane learns that attempts died (a worker missed its heartbeats, a
lease ran out, a node restarted its raylet or its server was deleted, the
Ray driver process died, a task ended in Ray without its runner).

Each attempt is ended as lost and its execution requeued while retries are
left; fencing by attempt number makes a late report of the old attempt
harmless. The transport is asked to cancel what it may still hold. The
caller commits, then tells the change feed (`GivenBack.tell`): a follower
woken before the commit would read the old state and sleep on.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from sqlalchemy.orm import Session

from rgrid.wire import FailureReason
from rgrid_api.attempts import attempt_lost
from rgrid_api.notify import ChangeFeed
from rgrid_api.transport import Transport

log = logging.getLogger(__name__)


@dataclass
class GivenBack:
    """What giving back changed, to be told once it is committed."""

    executions: list[str] = field(default_factory=list)
    requeued: bool = False

    def add(self, other: GivenBack) -> GivenBack:
        return GivenBack(self.executions + other.executions, self.requeued or other.requeued)

    def tell(self, feed: ChangeFeed) -> None:
        for execution_id in self.executions:
            feed.changed(execution_id)
        if self.requeued:
            feed.work_queued()


def give_back(
    session: Session,
    keys: list[tuple[str, int]],
    transport: Transport | None,
    why: str,
    counted: bool = True,
) -> GivenBack:
    given = GivenBack()
    for execution_id, number in keys:
        if transport is not None:
            transport.cancel_task(execution_id, number)
        if attempt_lost(session, execution_id, number, FailureReason.WORKER_LOST, counted):
            given.requeued = True
            log.warning("requeued %s: attempt %d was lost (%s)", execution_id, number, why)
        given.executions.append(execution_id)
    return given
