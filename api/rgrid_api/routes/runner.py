"""Calls from runners. Authenticated by a per-attempt token and the
credential of the node that runs it, and fenced by attempt number: a stale
runner gets 409 and must stop its script. An attempt is bound to the node
that started it: no other node speaks for it (403)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException
from sqlalchemy import select
from sqlalchemy.orm import Session

from rgrid.errors import StaleAttempt
from rgrid.wire import (
    RunnerAck,
    RunnerLogBatch,
    RunnerOutputRequest,
    RunnerOutputUrls,
    RunnerResult,
    RunnerSpec,
    RunnerStart,
)
from rgrid_api.attempts import (
    NotStarted,
    append_logs,
    check_current,
    check_outputs,
    complete_attempt,
    lease_for_outputs,
    output_upload_urls,
    renew_lease,
    runner_spec,
    start_attempt,
)
from rgrid_api.db.models import Attempt as AttemptRow
from rgrid_api.deps import DB, RunnerNode, State, WorkerCaller

router = APIRouter(prefix="/v1/runner/{execution_id}/{attempt}", tags=["runner"])
Attempt = Annotated[int, "attempt number"]


def _holds(session: Session, execution_id: str, attempt: int, node: WorkerCaller) -> None:
    """Only the node that started the attempt speaks for it; the head's
    token (the control plane's own node) is trusted for any."""
    if node.head:
        return
    holder = session.scalar(
        select(AttemptRow.worker_id).where(
            AttemptRow.execution_id == execution_id, AttemptRow.number == attempt
        )
    )
    if holder is None or holder != node.worker_id:
        raise HTTPException(403, f"attempt {attempt} of {execution_id} is not this node's")


@router.post("/start", response_model=RunnerSpec)
def start(
    execution_id: str, attempt: Attempt, body: RunnerStart, node: RunnerNode, session: DB, state: State
) -> RunnerSpec:
    if not node.head and body.worker_id != node.worker_id:
        raise HTTPException(403, f"this node's credential speaks for {node.worker_id}, not {body.worker_id}")
    started = start_attempt(session, execution_id, attempt, body, state.settings.lease_s, trusted=node.head)
    session.commit()
    state.feed.changed(execution_id)
    if isinstance(started, NotStarted):
        state.feed.work_queued()  # it may be back in the queue
        raise StaleAttempt(started.why)
    return runner_spec(state.runner_storage, started, attempt)


@router.post("/renew", response_model=RunnerAck)
def renew(execution_id: str, attempt: Attempt, node: RunnerNode, session: DB, state: State) -> RunnerAck:
    _holds(session, execution_id, attempt, node)
    cancel = renew_lease(session, execution_id, attempt, state.settings.lease_s)
    session.commit()
    return RunnerAck(cancel=cancel)


@router.post("/logs", response_model=RunnerAck)
def logs(
    execution_id: str, attempt: Attempt, body: RunnerLogBatch, node: RunnerNode, session: DB, state: State
) -> RunnerAck:
    _holds(session, execution_id, attempt, node)
    cancel = append_logs(session, execution_id, attempt, body.lines, state.settings.lease_s)
    session.commit()
    state.feed.changed(execution_id)
    return RunnerAck(cancel=cancel)


@router.post("/outputs", response_model=RunnerOutputUrls)
def outputs(
    execution_id: str,
    attempt: Attempt,
    body: RunnerOutputRequest,
    node: RunnerNode,
    session: DB,
    state: State,
) -> RunnerOutputUrls:
    _holds(session, execution_id, attempt, node)
    check_current(session, execution_id, attempt)
    session.rollback()  # only checked: the write lock goes before any URL is signed
    return RunnerOutputUrls(urls=output_upload_urls(state.runner_storage, execution_id, attempt, body.paths))


@router.post("/complete", status_code=204)
def complete(
    execution_id: str, attempt: Attempt, body: RunnerResult, node: RunnerNode, session: DB, state: State
) -> None:
    _holds(session, execution_id, attempt, node)
    # The lease outlives the check of its outputs, which holds no lock.
    renew_lease(session, execution_id, attempt, lease_for_outputs(state.settings.lease_s, body))
    session.commit()
    checked = check_outputs(state.runner_storage, execution_id, attempt, body)
    complete_attempt(session, execution_id, attempt, checked)
    session.commit()
    state.feed.changed(execution_id)
    state.feed.work_queued()  # its CPUs are free for the next in the queue
