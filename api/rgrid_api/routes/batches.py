"""Batches as their owner sees them."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from sqlalchemy import select

from rgrid.wire import MAX_BATCH_ITEMS, BatchCreate, BatchList, BatchOutputs, BatchView
from rgrid_api.batches import (
    batch_outputs,
    batch_view,
    cancel_batch,
    create_batch,
    find_batch,
    list_batches,
    retry_batch,
)
from rgrid_api.db.models import Execution
from rgrid_api.deps import DB, Owner, ReadDB, State, User
from rgrid_api.errors import NotFound
from rgrid_api.executions import admit
from rgrid_api.ids import BATCH_ID_LENGTH
from rgrid_api.routes.executions import fail_if_no_node_fits, runtime_for

router = APIRouter(prefix="/v1/batches", tags=["batches"])


@router.post("", response_model=BatchView, status_code=201)
def create(body: BatchCreate, caller: User, session: DB, state: State) -> BatchView:
    """Every execution of the batch in one transaction: all queued, or none."""
    admit(session, caller.owner, len(body.items), body.resources.cpu, state.caps)
    batch = create_batch(session, caller.owner, body, runtime_for(state, session, body.runtime))
    ids = list(session.scalars(select(Execution.id).where(Execution.batch_id == batch.id)))
    fail_if_no_node_fits(state, session, ids, body.resources.cpu, body.resources.memory_mb)
    session.commit()
    state.feed.work_queued()
    return batch_view(session, batch)


@router.get("", response_model=BatchList)
def index(owner: Owner, session: ReadDB, limit: int = Query(50, ge=1, le=1000)) -> BatchList:
    return BatchList(batches=list_batches(session, owner, limit))


@router.get("/{batch_id}", response_model=BatchView)
def get(
    batch_id: str,
    owner: Owner,
    session: ReadDB,
    executions: bool = True,
    notable: bool = False,
    limit: Annotated[int | None, Query(ge=1, le=MAX_BATCH_ITEMS)] = None,
) -> BatchView:
    """With executions=false, only the counts (what a progress bar polls);
    notable=true, only the executions running or ended other than
    succeeded, at most `limit` of them (what `rgrid status` shows)."""
    return batch_view(
        session,
        find_batch(session, owner, batch_id),
        with_executions=executions,
        notable=notable,
        limit=limit,
    )


@router.get("/{batch_id}/outputs", response_model=BatchOutputs)
def outputs(batch_id: str, owner: Owner, session: ReadDB, state: State) -> BatchOutputs:
    return BatchOutputs(outputs=batch_outputs(session, state.storage, find_batch(session, owner, batch_id)))


@router.post("/{batch_id}/retry", response_model=BatchView, status_code=201)
def retry(batch_id: str, caller: User, session: DB, state: State, failed: bool = False) -> BatchView:
    """A new batch of the same inputs; with failed=true, of the failed ones only."""
    batch = retry_batch(session, caller.owner, batch_id, failed, state.caps)
    session.commit()
    state.feed.work_queued()
    return batch_view(session, batch)


@router.post("/{batch_id}/cancel", response_model=BatchView)
def cancel(batch_id: str, caller: User, session: DB, state: State) -> BatchView:
    """The caller's own batch; an admin may cancel anyone's, by its whole
    id (a prefix finds only the admin's own)."""
    try:
        batch, touched, unstarted = cancel_batch(session, caller.owner, batch_id)
    except NotFound:
        if not (caller.admin and len(batch_id.strip()) == BATCH_ID_LENGTH):
            raise
        session.rollback()
        batch, touched, unstarted = cancel_batch(session, None, batch_id)
    session.commit()
    if state.dispatcher is not None:
        for execution_id, attempt in unstarted:
            state.dispatcher.transport.cancel_task(execution_id, attempt)
    for execution_id in touched:
        state.feed.changed(execution_id)
    return batch_view(session, batch)
