"""Node agents register, heartbeat, drain and leave; users list workers."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query
from sqlalchemy.orm import Session

from rgrid.wire import WorkerAck, WorkerList, WorkerRegistration, WorkerStatus
from rgrid_api.attempts import attempts_left_by_old_nodes
from rgrid_api.deps import DB, Owner, State, worker_auth
from rgrid_api.giveback import give_back
from rgrid_api.workers import current_head, heartbeat, list_workers, open_attempts, register, set_status

router = APIRouter(prefix="/v1/workers", tags=["workers"])
agents = APIRouter(prefix="/v1/workers", tags=["workers"], dependencies=[Depends(worker_auth)])


@router.get("", response_model=WorkerList)
def index(_owner: Owner, session: DB, all_: bool = Query(False, alias="all")) -> WorkerList:
    return WorkerList(workers=list_workers(session, include_ended=all_))


def _ack(session: Session, status: WorkerStatus) -> WorkerAck:
    """Every answer to an agent says where the Ray head is now."""
    head = current_head(session)
    session.rollback()
    return WorkerAck(status=status, ray_address=head.address if head else None)


@agents.post("/register", response_model=WorkerAck)
def register_worker(body: WorkerRegistration, session: DB, state: State) -> WorkerAck:
    register(session, body)
    if body.ray_node_id:
        # The node runs this Ray node now: what its earlier ones ran is gone.
        left = attempts_left_by_old_nodes(session, body.id, body.ray_node_id)
        transport = state.dispatcher.transport if state.dispatcher else None
        give_back(session, left, state.feed, transport, "its node restarted")
    return _ack(session, WorkerStatus.ACTIVE)


@agents.post("/{worker_id}/heartbeat", response_model=WorkerAck)
def beat(worker_id: str, session: DB) -> WorkerAck:
    return _ack(session, heartbeat(session, worker_id))


@agents.post("/{worker_id}/drain", response_model=WorkerAck)
def drain(worker_id: str, session: DB) -> WorkerAck:
    set_status(session, worker_id, WorkerStatus.DRAINING)
    return WorkerAck(status=WorkerStatus.DRAINING)


@agents.post("/{worker_id}/leave", response_model=WorkerAck)
def leave(worker_id: str, session: DB) -> WorkerAck:
    set_status(session, worker_id, WorkerStatus.LEFT)
    return WorkerAck(status=WorkerStatus.LEFT)


@agents.get("/{worker_id}/running", response_model=int)
def running(worker_id: str, session: DB) -> int:
    """How many attempts are still open on this worker (drain waits for 0)."""
    return open_attempts(session, worker_id)
