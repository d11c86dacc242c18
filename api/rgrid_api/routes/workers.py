"""Node agents register, heartbeat, drain and leave; users list workers."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query

from rgrid.wire import WorkerAck, WorkerList, WorkerRegistration, WorkerStatus
from rgrid_api.deps import DB, Owner, worker_auth
from rgrid_api.workers import heartbeat, list_workers, open_attempts, register, set_status

router = APIRouter(prefix="/v1/workers", tags=["workers"])
agents = APIRouter(prefix="/v1/workers", tags=["workers"], dependencies=[Depends(worker_auth)])


@router.get("", response_model=WorkerList)
def index(_owner: Owner, session: DB, all_: bool = Query(False, alias="all")) -> WorkerList:
    return WorkerList(workers=list_workers(session, include_ended=all_))


@agents.post("/register", response_model=WorkerAck)
def register_worker(body: WorkerRegistration, session: DB) -> WorkerAck:
    register(session, body)
    return WorkerAck(status=WorkerStatus.ACTIVE)


@agents.post("/{worker_id}/heartbeat", response_model=WorkerAck)
def beat(worker_id: str, session: DB) -> WorkerAck:
    return WorkerAck(status=heartbeat(session, worker_id))


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
