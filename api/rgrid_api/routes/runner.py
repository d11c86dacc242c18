"""Calls from runners. Authenticated by a per-attempt token and fenced by
attempt number: a stale runner gets 409 and must stop its script."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

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
    append_logs,
    complete_attempt,
    output_upload_urls,
    renew_lease,
    start_attempt,
)
from rgrid_api.deps import DB, State, runner_auth

router = APIRouter(
    prefix="/v1/runner/{execution_id}/{attempt}", tags=["runner"], dependencies=[Depends(runner_auth)]
)
Attempt = Annotated[int, "attempt number"]


@router.post("/start", response_model=RunnerSpec)
def start(execution_id: str, attempt: Attempt, body: RunnerStart, session: DB, state: State) -> RunnerSpec:
    spec = start_attempt(session, state.runner_storage, execution_id, attempt, body, state.settings.lease_s)
    state.feed.changed(execution_id)
    return spec


@router.post("/renew", response_model=RunnerAck)
def renew(execution_id: str, attempt: Attempt, session: DB, state: State) -> RunnerAck:
    return RunnerAck(cancel=renew_lease(session, execution_id, attempt, state.settings.lease_s))


@router.post("/logs", response_model=RunnerAck)
def logs(execution_id: str, attempt: Attempt, body: RunnerLogBatch, session: DB, state: State) -> RunnerAck:
    cancel = append_logs(session, execution_id, attempt, body.lines, state.settings.lease_s)
    state.feed.changed(execution_id)
    return RunnerAck(cancel=cancel)


@router.post("/outputs", response_model=RunnerOutputUrls)
def outputs(
    execution_id: str, attempt: Attempt, body: RunnerOutputRequest, session: DB, state: State
) -> RunnerOutputUrls:
    return RunnerOutputUrls(
        urls=output_upload_urls(session, state.runner_storage, execution_id, attempt, body.paths)
    )


@router.post("/complete", status_code=204)
def complete(execution_id: str, attempt: Attempt, body: RunnerResult, session: DB, state: State) -> None:
    complete_attempt(session, state.runner_storage, execution_id, attempt, body)
    state.feed.changed(execution_id)
    state.feed.work_queued()  # its CPUs are free for the next in the queue
