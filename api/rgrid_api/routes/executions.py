"""Executions as their owner sees them."""

from __future__ import annotations

import asyncio

from anyio import to_thread
from fastapi import APIRouter, Query, Response
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from rgrid.wire import (
    ExecutionCreate,
    ExecutionList,
    ExecutionView,
    LogPage,
    OutputList,
    Status,
)
from rgrid_api.db.engine import is_postgres
from rgrid_api.deps import DB, AppState, Owner, ReadDB, State, User
from rgrid_api.errors import NotFound
from rgrid_api.executionread import read_execution
from rgrid_api.executions import (
    admit,
    cancel_execution,
    create_execution,
    exact_spec,
    find_execution,
    list_executions,
    list_outputs,
    log_page,
    resolve_runtime,
    spec_of,
)
from rgrid_api.ids import ID_LENGTH
from rgrid_api.views import execution_view
from rgrid_api.waiting import fail_where_no_node_fits, why_waiting
from rgrid_api.workers import offered_runtimes

router = APIRouter(prefix="/v1/executions", tags=["executions"])

RECHECK_S = 0.5


@router.post("", response_model=ExecutionView, status_code=201)
def create(body: ExecutionCreate, caller: User, session: DB, state: State) -> ExecutionView:
    admit(session, caller.owner, 1, body.resources.cpu, state.caps)
    execution = create_execution(session, caller.owner, body, runtime_for(state, session, body.runtime))
    fail_if_no_node_fits(state, session, [execution.id], body.resources.cpu, body.resources.memory_mb)
    session.commit()
    state.feed.work_queued()
    session.refresh(execution)
    return execution_view(execution, execution.attempts)


def fail_if_no_node_fits(
    state: AppState, session: Session, ids: list[str], cpu: float, memory_mb: int
) -> None:
    """Without an autoscaler, runs that fit none of the grid's nodes could
    wait forever: they fail at once, unschedulable, saying why (a Ray task
    handed out meanwhile is cancelled). With one, the autoscaler decides:
    it may add a node that fits."""
    if state.autoscaler is not None or state.dispatcher is None:
        return
    transport = state.dispatcher.transport
    for execution_id, attempt in fail_where_no_node_fits(session, ids, cpu, memory_mb, transport.capacity()):
        transport.cancel_task(execution_id, attempt)


def runtime_for(state: AppState, session: Session, requested: str) -> str:
    """The runtime an execution gets; one that no live worker offers, and no
    node the autoscaler may create would, is refused."""
    offered = offered_runtimes(session)
    if offered is not None and state.autoscaler is not None:
        offered |= state.autoscaler.config.runtimes
    return resolve_runtime(requested, state.settings.default_runtime, offered)


@router.get("", response_model=ExecutionList)
def index(owner: Owner, session: ReadDB, limit: int = Query(50, ge=1, le=1000)) -> ExecutionList:
    return ExecutionList(
        executions=[execution_view(e, e.attempts) for e in list_executions(session, owner, limit)]
    )


@router.get("/{execution_id}", response_model=ExecutionView)
async def get(execution_id: str, owner: Owner, state: State, provenance: bool = False) -> Response:
    """A final execution's answer comes from memory (`FinalViews`); the
    encoded view is returned as it is, with no second validation.

    Its provenance (two more reads) only when asked for: followers poll
    this read, `rgrid status` asks for provenance.

    Another is read on the event loop itself on SQLite: an embedded
    database answers a one-statement read from its page cache sooner than
    a hand-off to a worker thread takes, and worker threads contending for
    the GIL halved this read's throughput. On PostgreSQL the read is a
    network round trip, so it waits in one of a few worker threads."""
    body = None if provenance else state.final_views.get(owner, execution_id)
    if body is None:
        if is_postgres(state.read_engine):
            body = await to_thread.run_sync(
                _read_view, state, owner, execution_id, provenance, limiter=state.hot_reads
            )
        else:
            body = _read_view(state, owner, execution_id, provenance)
    return Response(body, media_type="application/json")


def _read_view(state: AppState, owner: str, execution_id: str, with_provenance: bool) -> bytes:
    with state.read_engine.connect() as conn:
        view = read_execution(conn, owner, execution_id, with_provenance)
        if view.status == Status.QUEUED:
            grid = state.dispatcher.transport.capacity() if state.dispatcher else None
            view.waiting = why_waiting(conn, owner, view, state.caps, grid)
    body = view.model_dump_json().encode()
    if view.status.final and not with_provenance:
        state.final_views.put(owner, view.id, body)
    return body


@router.post("/{execution_id}/cancel", response_model=ExecutionView)
def cancel(execution_id: str, caller: User, session: DB, state: State) -> ExecutionView:
    """The caller's own execution; an admin may cancel anyone's, by its
    whole id (a prefix finds only the admin's own)."""
    try:
        execution, unstarted = cancel_execution(session, caller.owner, execution_id)
    except NotFound:
        if not (caller.admin and len(execution_id.strip()) == ID_LENGTH):
            raise
        session.rollback()
        execution, unstarted = cancel_execution(session, None, execution_id)
    session.commit()
    if unstarted is not None and state.dispatcher is not None:
        state.dispatcher.transport.cancel_task(execution.id, unstarted)
    state.feed.changed(execution.id)
    return execution_view(execution, execution.attempts)


@router.post("/{execution_id}/retry", response_model=ExecutionView, status_code=201)
def retry(execution_id: str, caller: User, session: DB, state: State, exact: bool = False) -> ExecutionView:
    """The same execution again. With `exact`, its requirements are the
    exact package set it ran with, whatever they resolve to now."""
    old = find_execution(session, caller.owner, execution_id)
    spec = exact_spec(session, old) if exact else spec_of(old)
    admit(session, caller.owner, 1, old.cpu, state.caps)
    execution = create_execution(
        session, caller.owner, spec, runtime_for(state, session, old.runtime), retry_of=old.id
    )
    fail_if_no_node_fits(state, session, [execution.id], old.cpu, old.memory_mb)
    session.commit()
    state.feed.work_queued()
    session.refresh(execution)
    return execution_view(execution, execution.attempts)


@router.get("/{execution_id}/outputs", response_model=OutputList)
def outputs(execution_id: str, owner: Owner, session: ReadDB, state: State) -> OutputList:
    execution = find_execution(session, owner, execution_id)
    return OutputList(outputs=list_outputs(session, state.storage, execution))


@router.get("/{execution_id}/logs", response_model=LogPage)
async def logs(
    execution_id: str,
    caller: User,
    state: State,
    after: int = Query(0, ge=0, le=2**31 - 1),
    wait: float = Query(0.0, ge=0.0),
) -> LogPage:
    """Log chunks after `after`. With `wait`, hold the request until a chunk
    arrives or the execution ends (long poll), so followers see output as it
    is written without hammering the server. The database is re-read at
    least every RECHECK_S, which covers writes made by another server."""
    if wait <= 0:
        return (await run_in_threadpool(_read_page, state, caller.owner, execution_id, after))[1]
    with state.long_polls.hold(caller.key_id):
        loop = asyncio.get_running_loop()
        deadline = loop.time() + min(wait, state.settings.log_wait_max_s)
        full_id = execution_id
        while True:
            seen = state.feed.version(full_id)
            full_id, page = await run_in_threadpool(_read_page, state, caller.owner, execution_id, after)
            remaining = deadline - loop.time()
            if page.chunks or page.final or remaining <= 0:
                return page
            await state.feed.wait(full_id, seen, min(RECHECK_S, remaining))


def _read_page(state: AppState, owner: str, execution_id: str, after: int) -> tuple[str, LogPage]:
    with state.readers() as session:
        return log_page(session, owner, execution_id, after)
