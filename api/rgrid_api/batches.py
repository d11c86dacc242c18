"""Batches: one script over many inputs, created in one transaction, read
and cancelled as one. Every query is scoped by owner; another owner's batch
is a 404. How many of a batch run at once is the dispatcher's business
(`attempts.claim_queued`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import CursorResult, func, select, update
from sqlalchemy.orm import Session

from rgrid.wire import (
    OPEN_STATES,
    UNFINISHED_STATES,
    BatchCreate,
    BatchExecution,
    BatchStatus,
    BatchView,
    ExecutionCreate,
    FailureReason,
    OutputFile,
    Status,
)
from rgrid_api.auth import Caps
from rgrid_api.db.models import Batch, Execution, Output
from rgrid_api.db.times import aware
from rgrid_api.errors import Conflict
from rgrid_api.executions import admit, cancel_open, new_execution, output_file, spec_of
from rgrid_api.ids import BATCH_ID_LENGTH, BATCH_PREFIX, new_batch_id
from rgrid_api.lookup import find_by_prefix
from rgrid_api.metrics import note_finished
from rgrid_api.provenance import current_package_set
from rgrid_api.resultcache import copy_results, previous_results, reuse
from rgrid_api.storage import ObjectStore
from rgrid_api.uploads import require_complete
from rgrid_api.usage import batch_usage


def create_batch(session: Session, owner: str, body: BatchCreate, runtime: str) -> Batch:
    """The batch and all its executions, queued in input order, or nothing."""
    files = [body.script, *body.shared, *(f for item in body.items for f in item.inputs)]
    require_complete(session, owner, {f.sha256 for f in files})
    now = datetime.now(UTC)
    batch = Batch(
        id=new_batch_id(),
        owner=owner,
        script_name=body.script.path,
        total=len(body.items),
        parallel=body.parallel,
        cancel_requested=False,
        created_at=now,
    )
    session.add(batch)
    known_set = current_package_set(session, owner, runtime, body.requirements)
    rows = []
    for n, item in enumerate(body.items):
        spec = ExecutionCreate(
            **dict(body.job()), script=body.script, args=item.args, inputs=[*body.shared, *item.inputs]
        )
        row = new_execution(owner, spec, runtime, known_set, batch_id=batch.id, batch_input=item.input)
        row.created_at = now + timedelta(microseconds=n)  # the queue keeps input order
        rows.append(row)
    pairs = (
        reuse(rows, previous_results(session, owner, {str(r.cache_key) for r in rows})) if body.cache else []
    )
    session.add_all(rows)
    session.flush()
    copy_results(session, pairs)
    return batch


def retry_batch(session: Session, owner: str, id_or_prefix: str, failed_only: bool, caps: Caps) -> Batch:
    """A new batch of the same inputs (with failed_only: of the failed ones),
    each execution linked to the one it repeats, within the queued cap."""
    old = find_batch(session, owner, id_or_prefix)
    query = select(Execution).where(Execution.batch_id == old.id).order_by(Execution.created_at)
    if failed_only:
        query = query.where(Execution.status == Status.FAILED)
    previous = list(session.scalars(query))
    if not previous:
        raise Conflict(f"nothing of {old.id} failed" if failed_only else f"{old.id} has no inputs")
    admit(session, owner, len(previous), max(e.cpu for e in previous), caps)
    now = datetime.now(UTC)
    batch = Batch(
        id=new_batch_id(),
        owner=owner,
        script_name=old.script_name,
        total=len(previous),
        parallel=old.parallel,
        cancel_requested=False,
        created_at=now,
    )
    session.add(batch)
    # A batch's runs share their runtime and requirements.
    known_set = current_package_set(session, owner, previous[0].runtime, previous[0].requirements)
    for n, e in enumerate(previous):
        row = new_execution(
            owner,
            spec_of(e),
            e.runtime,
            known_set,
            retry_of=e.id,
            batch_id=batch.id,
            batch_input=e.batch_input,
        )
        row.created_at = now + timedelta(microseconds=n)
        session.add(row)
    return batch


def find_batch(session: Session, owner: str | None, id_or_prefix: str) -> Batch:
    return find_by_prefix(session, Batch, owner, id_or_prefix, BATCH_PREFIX, BATCH_ID_LENGTH, "batch")


def batch_counts(session: Session, batch_ids: list[str]) -> dict[str, dict[str, int]]:
    """Executions by state, per batch."""
    counts: dict[str, dict[str, int]] = {b: {} for b in batch_ids}
    rows = session.execute(
        select(Execution.batch_id, Execution.status, func.count())
        .where(Execution.batch_id.in_(batch_ids))
        .group_by(Execution.batch_id, Execution.status)
    )
    for batch_id, status, n in rows:
        counts[str(batch_id)][status] = n
    return counts


def batch_status(batch: Batch, counts: dict[str, int]) -> BatchStatus:
    if any(counts.get(s, 0) for s in UNFINISHED_STATES):
        return BatchStatus.RUNNING
    if batch.cancel_requested:
        return BatchStatus.CANCELLED
    return BatchStatus.SUCCEEDED if counts.get(Status.SUCCEEDED, 0) == batch.total else BatchStatus.FAILED


@dataclass(frozen=True)
class Progress:
    """How far a batch got: counts by status, how many ended, and when the
    rest should have ended at the pace so far (None before one ended)."""

    total: int
    ended: int
    counts: dict[str, int]
    eta_s: float | None


def batch_progress(batch: Batch, counts: dict[str, int], now: datetime) -> Progress:
    ended = sum(n for s, n in counts.items() if Status(s).final)
    elapsed = (now - aware(batch.created_at)).total_seconds()
    eta_s = elapsed / ended * (batch.total - ended) if 0 < ended < batch.total else None
    return Progress(total=batch.total, ended=ended, counts=counts, eta_s=eta_s)


def _summary(batch: Batch, counts: dict[str, int]) -> BatchView:
    """The batch and its counts, without its executions."""
    return BatchView(
        id=batch.id,
        status=batch_status(batch, counts),
        script=batch.script_name,
        total=batch.total,
        parallel=batch.parallel,
        counts=counts,
        created_at=aware(batch.created_at),
    )


def batch_view(
    session: Session,
    batch: Batch,
    with_executions: bool = True,
    notable: bool = False,
    limit: int | None = None,
) -> BatchView:
    """The batch, its counts, what its runs used, and its executions in
    input order; `notable`: only those running or ended other than
    succeeded (what `rgrid status` shows of a large batch), at most `limit`
    of them. Without executions, only the counts (a progress bar's poll)."""
    view = _summary(batch, batch_counts(session, [batch.id])[batch.id])
    executions = []
    if with_executions:
        query = (
            select(
                Execution.id,
                Execution.batch_input,
                Execution.status,
                Execution.exit_code,
                Execution.failure_reason,
                Execution.cached_from,
            )
            .where(Execution.batch_id == batch.id)
            .order_by(Execution.created_at)
            .limit(limit)
        )
        if notable:
            query = query.where(Execution.status.not_in((Status.SUCCEEDED, Status.QUEUED)))
        rows = session.execute(query)
        executions = [
            BatchExecution(
                id=i,
                input=inp or "",
                status=Status(st),
                exit_code=code,
                failure_reason=FailureReason(reason) if reason else None,
                cached_from=cached,
            )
            for i, inp, st, code, reason, cached in rows
        ]
    finished_at = None
    if view.status != BatchStatus.RUNNING:
        finished_at = session.scalar(
            select(func.max(Execution.finished_at)).where(Execution.batch_id == batch.id)
        )
    return view.model_copy(
        update={
            "finished_at": aware(finished_at) if finished_at else None,
            "executions": executions,
            "usage": batch_usage(session, batch.id) if with_executions else None,
        }
    )


def list_batches(session: Session, owner: str, limit: int) -> list[BatchView]:
    batches = list(
        session.scalars(
            select(Batch).where(Batch.owner == owner).order_by(Batch.created_at.desc()).limit(limit)
        )
    )
    counts = batch_counts(session, [b.id for b in batches])
    return [_summary(b, counts[b.id]) for b in batches]


def cancel_batch(
    session: Session, owner: str | None, id_or_prefix: str
) -> tuple[Batch, list[str], list[tuple[str, int]]]:
    """The owner's batch (owner None: anyone's). Everything not yet final:
    queued executions, and dispatched ones whose runner never started, end
    at once; running ones are told on their runner's next call. Returns
    the ids whose followers should hear of it, and the attempts whose Ray
    tasks are to be cancelled."""
    batch = find_batch(session, owner, id_or_prefix)
    batch.cancel_requested = True
    now = datetime.now(UTC)
    touched = list(
        session.scalars(
            select(Execution.id).where(
                Execution.batch_id == batch.id, Execution.status.in_(UNFINISHED_STATES)
            )
        )
    )
    # One statement for every queued one (EXECUTION's queued -> cancelled;
    # the database's trigger checks each row as `move` would).
    cancelled: CursorResult[Any] = session.execute(  # type: ignore[assignment]
        update(Execution)
        .where(Execution.batch_id == batch.id, Execution.status == Status.QUEUED)
        .values(status=Status.CANCELLED, failure_reason=FailureReason.CANCELLED, finished_at=now)
    )
    note_finished(session, Status.CANCELLED, FailureReason.CANCELLED, cancelled.rowcount)
    # Only as many as the grid could start are dispatched at a time: each is
    # cancelled as a single run is, its attempt locked against a late start.
    unstarted = []
    for execution in session.scalars(
        select(Execution).where(Execution.batch_id == batch.id, Execution.status == Status.DISPATCHED)
    ).all():
        attempt = cancel_open(session, execution)
        if attempt is not None:
            unstarted.append((execution.id, attempt))
    session.execute(
        update(Execution)
        .where(Execution.batch_id == batch.id, Execution.status.in_(OPEN_STATES))
        .values(cancel_requested=True)
    )
    return batch, touched, unstarted


def batch_outputs(session: Session, storage: ObjectStore, batch: Batch) -> dict[str, list[OutputFile]]:
    """Every output of the batch's executions, with download URLs."""
    found: dict[str, list[OutputFile]] = {}
    rows = session.scalars(
        select(Output)
        .join(Execution, Execution.id == Output.execution_id)
        .where(Execution.batch_id == batch.id)
        .order_by(Output.execution_id, Output.path)
    )
    for r in rows:
        found.setdefault(r.execution_id, []).append(output_file(storage, r))
    return found
