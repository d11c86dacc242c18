"""Node agents bootstrap, register, heartbeat, drain and leave; users list workers."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Query, Response
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from rgrid.wire import (
    RayTokenGrant,
    WorkerAck,
    WorkerGrant,
    WorkerJoin,
    WorkerList,
    WorkerRegistration,
    WorkerStatus,
)
from rgrid_api import raytoken
from rgrid_api.attempts import attempts_left_by_old_nodes
from rgrid_api.credentials import Taken, exchange, join, worker_for
from rgrid_api.db.models import Worker
from rgrid_api.deps import (
    DB,
    Admin,
    Agent,
    AppState,
    Enrolling,
    NodeBearer,
    ReadDB,
    State,
    WorkerCaller,
    bearer,
)
from rgrid_api.giveback import give_back
from rgrid_api.workers import current_head, heartbeat, list_workers, open_attempts, register, set_status

router = APIRouter(prefix="/v1/workers", tags=["workers"])


@router.get("", response_model=WorkerList)
def index(_admin: Admin, session: ReadDB, all_: bool = Query(False, alias="all")) -> WorkerList:
    return WorkerList(workers=list_workers(session, include_ended=all_))


@router.post("/bootstrap", response_model=WorkerGrant)
def bootstrap(session: DB, authorization: NodeBearer) -> WorkerGrant:
    """Spend a provisioned node's single-use bootstrap token."""
    granted = exchange(session, bearer(authorization))
    if granted is None:
        raise HTTPException(401, "bootstrap token refused (unknown, used, expired or revoked)")
    session.commit()
    worker_id, credential = granted
    return WorkerGrant(worker_id=worker_id, credential=credential, ray_token=raytoken.current(session).token)


@router.get("/ray-token", response_model=RayTokenGrant)
def ray_token(agent: Agent, session: ReadDB, authorization: NodeBearer) -> RayTokenGrant:
    """The grid's Ray token in force, for a node whose raylet runs with
    another (a rotation). Only a node's working credential or the head's
    token gets it: a deleted or forgotten node stays out of the cluster. The
    credential is checked in the database here, not in the servers' cache of
    credentials: a node forgotten a moment ago gets nothing."""
    if not agent.head and worker_for(session, bearer(authorization)) is None:
        raise HTTPException(401, "worker credential refused")
    token = raytoken.current(session).token
    if token is None:
        raise HTTPException(404, "this grid's server has no Ray token")
    return RayTokenGrant(token=token)


@router.post("/join", response_model=WorkerGrant)
def join_grid(body: WorkerJoin, _token: Enrolling, session: DB) -> WorkerGrant:
    """A node an operator set up trades the shared worker token for a
    credential of its own (no Ray token: its operator gave it that)."""
    try:
        credential = join(session, body.id)
    except Taken as exc:
        raise HTTPException(409, str(exc)) from None
    session.commit()
    return WorkerGrant(worker_id=body.id, credential=credential)


def _ack(session: Session, status: WorkerStatus) -> WorkerAck:
    """Every answer to an agent says where the Ray head is now, and which
    Ray token is in force."""
    head = current_head(session)
    token = raytoken.current(session)
    session.rollback()
    return WorkerAck(
        status=status, ray_address=head.address if head else None, ray_token_fp=token.fingerprint
    )


def _speaks_for(agent: WorkerCaller, session: Session, worker_id: str) -> None:
    """The caller may speak for this worker id; the head's id is the head
    token's alone, so no other node can take its place or drain it."""
    agent.check(worker_id)
    if not agent.head and session.scalar(select(Worker.is_head).where(Worker.id == worker_id)):
        _not_the_heads(worker_id)


def _not_the_heads(worker_id: str) -> None:
    raise HTTPException(403, f"{worker_id} is the Ray head: only the head's token speaks for it")


def _noted(state: AppState, session: Session, worker_id: str) -> None:
    """Tell the heartbeat view what changed here, so the node's next beat
    hears it (rgrid_api.beats)."""
    worker = session.get(Worker, worker_id)
    if worker is not None:
        state.beats.note(worker_id, WorkerStatus(worker.status), worker.is_head)
    session.rollback()


@router.post("/register", response_model=WorkerAck)
def register_worker(body: WorkerRegistration, agent: Agent, session: DB, state: State) -> WorkerAck:
    _speaks_for(agent, session, body.id)
    if body.ray_address is not None and not agent.head:
        raise HTTPException(403, "only the head's token may announce the Ray head")
    if body.ray_node_id and not agent.head and state.dispatcher is not None:
        # A node id is taken only once the GCS vouches for it; while no
        # driver can ask, the driver still checks before fencing on it. The
        # head is trusted (and a new head is a cluster the driver has not
        # joined yet). No transaction stays open while the driver asks.
        session.rollback()
        verdict = state.dispatcher.transport.verify_node(body.ray_node_id, body.id)
        if verdict is False:
            raise HTTPException(403, f"Ray node {body.ray_node_id} is not worker {body.id}'s node")
    register(session, body, head=agent.head)
    session.commit()
    _noted(state, session, body.id)
    if body.ray_node_id:
        # The node runs this Ray node now: what its earlier ones ran is gone.
        left = attempts_left_by_old_nodes(session, body.id, body.ray_node_id)
        session.rollback()  # each is given back in a transaction of its own
        transport = state.dispatcher.transport if state.dispatcher else None
        give_back(state.sessions, left, state.feed, transport, "its node restarted")
    state.feed.work_queued()  # the grid may have room for more now
    return _ack(session, WorkerStatus.ACTIVE)


@router.post("/{worker_id}/heartbeat", response_model=WorkerAck)
async def beat(worker_id: str, agent: Agent, state: State) -> Response:
    """Answered from memory for a node this server knows, on the event
    loop, with bytes encoded once (rgrid_api.beats); a node it has not read
    yet, through the database. Most beats never reach here: a known node's
    beat with a credential already checked is answered before routing
    (rgrid_api.beatpath), exactly as here."""
    agent.check(worker_id)
    known = state.beats.known(worker_id)
    if known is not None and known.is_head and not agent.head:
        _not_the_heads(worker_id)
    answer = state.beats.beat(worker_id)
    if answer is None:
        ack = await run_in_threadpool(_beat_through_the_database, worker_id, agent, state)
        answer = ack.model_dump_json().encode()
    return Response(answer, media_type="application/json")


def _beat_through_the_database(worker_id: str, agent: WorkerCaller, state: AppState) -> WorkerAck:
    with state.sessions() as session:
        _speaks_for(agent, session, worker_id)
        status = heartbeat(session, worker_id)
        session.commit()
        ack = _ack(session, status)
        _noted(state, session, worker_id)
    return ack


@router.post("/{worker_id}/drain", response_model=WorkerAck)
def drain(worker_id: str, agent: Agent, session: DB, state: State) -> WorkerAck:
    _speaks_for(agent, session, worker_id)
    set_status(session, worker_id, WorkerStatus.DRAINING)
    session.commit()
    _noted(state, session, worker_id)
    return WorkerAck(status=WorkerStatus.DRAINING)


@router.post("/{worker_id}/leave", response_model=WorkerAck)
def leave(worker_id: str, agent: Agent, session: DB, state: State) -> WorkerAck:
    _speaks_for(agent, session, worker_id)
    set_status(session, worker_id, WorkerStatus.LEFT)
    session.commit()
    _noted(state, session, worker_id)
    return WorkerAck(status=WorkerStatus.LEFT)


@router.get("/{worker_id}/running", response_model=int)
def running(worker_id: str, agent: Agent, session: ReadDB) -> int:
    """How many attempts are still open on this worker (drain waits for 0)."""
    agent.check(worker_id)
    return open_attempts(session, worker_id)
