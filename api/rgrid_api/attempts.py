"""Attempts: opened by the dispatcher, driven by one runner, fenced by number.

Every runner write names (execution_id, attempt). It is accepted only while
that attempt is the execution's current one and has not ended; otherwise the
runner gets StaleAttempt and must kill its script. This is what keeps a
runner that was presumed dead from overwriting the result of its successor.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import Connection, Select, and_, bindparam, func, or_, select, text, update
from sqlalchemy.orm import Session, aliased, lazyload

from rgrid.errors import StaleAttempt
from rgrid.states import ATTEMPT, EXECUTION
from rgrid.wire import (
    OPEN_STATES,
    WAITING_STATES,
    FailureReason,
    OutputFile,
    RunnerFile,
    RunnerLogLine,
    RunnerResult,
    RunnerSpec,
    RunnerStart,
    Status,
    WorkerStatus,
    relative_path,
)
from rgrid_api import dispatchlock, jobspec
from rgrid_api.auth import Caps, owner_caps
from rgrid_api.db.engine import is_postgres
from rgrid_api.db.models import Attempt, Batch, Execution, LogChunkRow, Output, Worker
from rgrid_api.db.times import utcnow
from rgrid_api.errors import Invalid
from rgrid_api.executions import last_log_seq, spec_of
from rgrid_api.fairshare import Candidate, RecentUse, fair_order
from rgrid_api.provenance import record_environment
from rgrid_api.raytoken import may_claim
from rgrid_api.resultcache import content_key
from rgrid_api.storage import ObjectStore, object_key, output_key
from rgrid_api.usage import plausible
from rgrid_api.workers import set_ray_node
from rgrid_runner.driver_messages import Capacity


@dataclass(frozen=True)
class Claimed:
    """A freshly opened attempt, ready to hand to Ray."""

    execution_id: str
    attempt: int
    cpu: float
    memory_mb: int
    runtime: str


# An execution loads its attempt list eagerly (a second SELECT), which the
# views want; the dispatcher's claim and the runner's fence never read it.
NO_ATTEMPT_LIST = lazyload(Execution.attempts)


@dataclass(frozen=True)
class Sharing:
    """How one dispatch round shares the grid (`rgrid_api.fairshare`).

    `margin` is the share of the grid's CPUs handed to Ray beyond what it
    can start now, so a slot that frees finds its next attempt waiting.
    `caps` are the server's default caps (`auth.owner_caps`)."""

    margin: float = 0.0
    caps: Caps = field(default_factory=Caps)


def claim_queued(
    session: Session,
    lease_s: float,
    limit: int = 32,
    sharing: Sharing = Sharing(),
    grid: Capacity | None = None,
    recent: RecentUse | None = None,
    ray_token_fp: str | None = None,
) -> list[Claimed]:
    """Move up to `limit` queued executions to dispatched and open their next
    attempt, in the fair order (`fairshare.fair_order`), never taking a batch
    past its `parallel` cap nor an owner past its running-CPU cap. Rounds
    are serialised across servers on PostgreSQL (an advisory lock), so
    together they keep every cap; the chosen rows are taken with SKIP LOCKED
    as well, as a cancel may hold one. `grid` is what the grid's job nodes
    offer (as Ray counts them, so it includes nodes another control plane
    registered); None hands out regardless of capacity. `recent`,
    the dispatcher's memory of each owner's recent use, is sampled here.
    `ray_token_fp`: the Ray token the transport's cluster runs with; nothing
    is claimed while a new token waits for running work, nor for a cluster
    whose token is no longer in force (`rgrid_api.raytoken.may_claim`).
    Holds the dispatch lock until the caller's commit: commit promptly."""
    postgres = is_postgres(session.get_bind())
    dispatchlock.hold(session)
    if not may_claim(session, ray_token_fp):
        return []
    running = running_cpus(session)
    if recent is not None:
        recent.observe(running)
    room = math.inf
    if grid is not None:
        room = grid.cpus * (1 + sharing.margin) - sum(running.values())
        if room <= 0:
            return []
    owners = queued_owners(session)
    caps = {
        owner: c.running_cpus
        for owner, c in owner_caps(session, owners, sharing.caps).items()
        if c.running_cpus is not None
    }
    queues = _queue_heads(session, owners, caps, grid, limit)
    if not queues:
        return []
    chosen = fair_order(
        queues,
        running,
        room,
        caps,
        _batch_room(session, {c.batch_id for q in queues.values() for c in q if c.batch_id}),
        limit,
        recent.cpu_seconds() if recent is not None else None,
        grid,
    )
    if not chosen:
        return []
    query = still_queued([c.execution_id for c in chosen])
    if postgres:
        query = query.with_for_update(skip_locked=True, of=Execution)
    taken = {e.id: e for e in session.scalars(query)}
    claimed = []
    now = utcnow()
    for c in chosen:
        execution = taken.get(c.execution_id)
        if execution is None:
            continue
        execution.attempt += 1
        EXECUTION.move(execution, Status.DISPATCHED)
        session.add(
            Attempt(
                execution_id=execution.id,
                number=execution.attempt,
                status=Status.DISPATCHED,
                dispatched_at=now,
                lease_expires_at=now + timedelta(seconds=lease_s),
            )
        )
        claimed.append(
            Claimed(
                execution.id,
                execution.attempt,
                execution.cpu,
                execution.memory_mb,
                execution.runtime,
            )
        )
    return claimed


def still_queued(execution_ids: list[str]) -> Select[Execution]:
    """Those of the chosen that are still queued, read by their key: the
    status is an expression so that SQLite, without statistics, does not
    read every queued row's entry of the status index instead (83 ms at
    100,000 queued)."""
    return (
        select(Execution)
        .where(Execution.id.in_(execution_ids), Execution.status.concat("") == Status.QUEUED)
        .options(NO_ATTEMPT_LIST)
    )


# The owners with queued work, one index probe each (a loose index scan):
# DISTINCT read every queued row's index entry, 9 ms at 100,000 queued.
_QUEUED_OWNERS = text(
    """
    WITH RECURSIVE owners(owner) AS (
        SELECT min(owner) FROM executions WHERE status = :queued
        UNION ALL
        SELECT (SELECT min(e.owner) FROM executions e WHERE e.status = :queued AND e.owner > owners.owner)
        FROM owners WHERE owners.owner IS NOT NULL
    )
    SELECT owner FROM owners WHERE owner IS NOT NULL
    """
)


def queued_owners(session: Session) -> set[str]:
    """Who has queued work (through `ix_executions_status_owner_created`)."""
    return set(session.scalars(_QUEUED_OWNERS, {"queued": Status.QUEUED.value}))


def _queue_heads(
    session: Session, owners: set[str], caps: dict[str, float], grid: Capacity | None, per_owner: int
) -> dict[str, list[Candidate]]:
    """The oldest queued executions of each owner, leaving out batches at
    their cap and runs that could not start whatever the room: more CPUs
    than the owner's cap, or more CPUs or memory than any node has
    (`fair_order` checks the finer fit), so a few such runs never hide the
    owner's others (one indexed range read per owner)."""
    other = aliased(Execution)
    in_flight = (
        select(func.count())
        .select_from(other)
        .where(other.batch_id == Execution.batch_id, other.status.in_(OPEN_STATES))
        .scalar_subquery()
    )
    queues: dict[str, list[Candidate]] = {}
    for owner in sorted(owners):
        query = (
            select(Execution.id, Execution.cpu, Execution.memory_mb, Execution.created_at, Execution.batch_id)
            .outerjoin(Batch, Batch.id == Execution.batch_id)
            .where(
                Execution.status == Status.QUEUED,
                Execution.owner == owner,
                or_(Batch.parallel.is_(None), in_flight < Batch.parallel),
            )
            .order_by(Execution.created_at)
            .limit(per_owner)
        )
        largest = min(caps.get(owner, math.inf), grid.largest_cpus if grid is not None else math.inf)
        if largest < math.inf:
            query = query.where(Execution.cpu <= largest)
        if grid is not None:
            query = query.where(Execution.memory_mb <= grid.largest_memory_mb)
        rows = session.execute(query).all()
        if rows:
            queues[owner] = [
                Candidate(i, owner, cpu, created, batch, memory) for i, cpu, memory, created, batch in rows
            ]
    return queues


def running_cpus(session: Session | Connection) -> dict[str, float]:
    """CPUs each owner has dispatched or running now."""
    return {
        owner: float(cpus or 0.0)
        for owner, cpus in session.execute(
            select(Execution.owner, func.sum(Execution.cpu))
            .where(Execution.status.in_(OPEN_STATES))
            .group_by(Execution.owner)
        )
    }


def _batch_room(session: Session, batch_ids: set[str]) -> dict[str, int]:
    """How many more of each capped batch may be dispatched now (its row is
    locked on PostgreSQL while counted)."""
    if not batch_ids:
        return {}
    query = select(Batch.id, Batch.parallel).where(Batch.id.in_(batch_ids), Batch.parallel.is_not(None))
    if is_postgres(session.get_bind()):
        query = query.with_for_update()
    caps: dict[str, int | None] = {b: cap for b, cap in session.execute(query)}
    if not caps:
        return {}
    busy: dict[str | None, int] = {
        b: n
        for b, n in session.execute(
            select(Execution.batch_id, func.count())
            .where(Execution.batch_id.in_(list(caps)), Execution.status.in_(OPEN_STATES))
            .group_by(Execution.batch_id)
        )
    }
    return {b: (cap or 0) - busy.get(b, 0) for b, cap in caps.items()}


# The fence's statement, built once: building it cost about as much as
# running it on SQLite.
_FENCE = (
    select(Execution, Attempt)
    .join(Attempt, and_(Attempt.execution_id == Execution.id, Attempt.number == Execution.attempt))
    .where(Execution.id == bindparam("execution_id"), Execution.attempt == bindparam("attempt"))
    .options(NO_ATTEMPT_LIST)
)
_FENCE_FOR_UPDATE = _FENCE.with_for_update(of=Execution)


def _current(session: Session, execution_id: str, attempt: int) -> tuple[Execution, Attempt]:
    """The execution and its attempt, if that attempt is still the one in
    play: the fence every runner call passes. One query for both (this runs
    several times per attempt); on Postgres the execution's row is locked."""
    query = _FENCE_FOR_UPDATE if is_postgres(session.get_bind()) else _FENCE
    found = session.execute(query, {"execution_id": execution_id, "attempt": attempt}).one_or_none()
    if found is None or Status(found[0].status).final or Status(found[1].status).final:
        raise StaleAttempt(f"attempt {attempt} of {execution_id} is not current")
    return found[0], found[1]


@dataclass(frozen=True)
class NotStarted:
    """The attempt ended, or went back to the queue, instead of starting:
    the caller commits that, then refuses the runner (StaleAttempt)."""

    why: str


def start_attempt(
    session: Session,
    execution_id: str,
    attempt: int,
    start: RunnerStart,
    lease_s: float,
    trusted: bool = False,
) -> Execution | NotStarted:
    """Start the attempt on the worker `start` names; the execution, whose
    `runner_spec` the caller hands out once it committed (presigning its
    files is no work for a held write lock). An attempt already started is
    started again only by the same worker (its runner retrying a call whose
    answer it lost): no other node takes it over. A node's credential
    (`trusted` False; the head's token is trusted) must name a worker
    registered here. Refusals that change nothing raise StaleAttempt; those
    that end or requeue the attempt return NotStarted, for the caller to
    commit before it refuses."""
    execution, row = _current(session, execution_id, attempt)
    if row.status != Status.DISPATCHED and row.worker_id != start.worker_id:
        raise StaleAttempt(f"attempt {attempt} of {execution_id} was started by another node")
    if not trusted and (start.worker_id is None or session.get(Worker, start.worker_id) is None):
        raise StaleAttempt(f"worker {start.worker_id} is not registered here")
    now = utcnow()
    if execution.cancel_requested:
        _finish(execution, row, Status.CANCELLED, FailureReason.CANCELLED, now)
        return NotStarted(f"{execution_id} was cancelled before it started")
    worker = session.get(Worker, start.worker_id) if start.worker_id else None
    if worker is not None:
        if worker.status != WorkerStatus.ACTIVE:
            # A draining or dead node takes no new work; this is no fault of
            # the execution, so it does not count against its retries.
            _requeue(execution, row, now, reason=FailureReason.WORKER_LOST, counted=False)
            return NotStarted(f"worker {start.worker_id} takes no new work")
        if worker.ray_node_id and start.ray_node_id and start.ray_node_id != worker.ray_node_id:
            # A runner of the node's previous raylet, starting late: that
            # raylet is gone, and what it held was given back.
            _requeue(execution, row, now, reason=FailureReason.WORKER_LOST, counted=False)
            return NotStarted(f"worker {start.worker_id} restarted its Ray node")
        if start.ray_node_id and worker.ray_node_id is None:
            set_ray_node(session, worker.id, start.ray_node_id)
    ATTEMPT.move(row, Status.RUNNING)
    row.ray_node_id = start.ray_node_id
    row.worker = start.worker
    # A node registered elsewhere (another control plane) is only covered by
    # the lease; one registered here is also watched through its heartbeats.
    row.worker_id = worker.id if worker is not None else None
    row.started_at = now
    row.lease_expires_at = now + timedelta(seconds=lease_s)
    EXECUTION.move(execution, Status.RUNNING)
    execution.started_at = execution.started_at or now
    return execution


def runner_spec(storage: ObjectStore, execution: Execution, attempt: int) -> RunnerSpec:
    """What a started attempt's runner is told: its script, inputs and
    arguments as fresh presigned URLs, and the job's options."""
    owner = execution.owner
    return RunnerSpec(
        execution_id=execution.id,
        attempt=attempt,
        script=RunnerFile(
            path=execution.script_name,
            url=storage.presign_get(object_key(owner, execution.script_sha256)),
            sha256=execution.script_sha256,
        ),
        inputs=[
            RunnerFile(
                path=i["path"], url=storage.presign_get(object_key(owner, i["sha256"])), sha256=i["sha256"]
            )
            for i in execution.inputs
        ],
        args=execution.args,
        **dict(jobspec.of(execution)),
    )


def renew_lease(session: Session, execution_id: str, attempt: int, lease_s: float) -> bool:
    """Extend the lease; the answer says whether the user asked to cancel."""
    execution, row = _current(session, execution_id, attempt)
    row.lease_expires_at = utcnow() + timedelta(seconds=lease_s)
    return execution.cancel_requested


def append_logs(
    session: Session, execution_id: str, attempt: int, lines: list[RunnerLogLine], lease_s: float
) -> bool:
    execution, row = _current(session, execution_id, attempt)
    now = utcnow()
    _add_lines(session, execution_id, attempt, lines, now)
    row.lease_expires_at = now + timedelta(seconds=lease_s)
    return execution.cancel_requested


def _add_lines(
    session: Session, execution_id: str, attempt: int, lines: list[RunnerLogLine], now: datetime
) -> None:
    if not lines:
        return
    seq = last_log_seq(session, execution_id)
    for line in lines:
        seq += 1
        session.add(
            LogChunkRow(
                execution_id=execution_id,
                seq=seq,
                attempt=attempt,
                stream=line.stream,
                data=line.data,
                created_at=now,
            )
        )


def check_current(session: Session, execution_id: str, attempt: int) -> None:
    """Raise StaleAttempt unless the attempt is still the one in play."""
    _current(session, execution_id, attempt)


def output_upload_urls(
    storage: ObjectStore, execution_id: str, attempt: int, paths: list[str]
) -> dict[str, str]:
    """Where a runner puts its outputs (asked once the fence let it by)."""
    return {p: storage.presign_put(output_key(execution_id, attempt, p)) for p in paths}


def _final_status(result: RunnerResult) -> tuple[Status, str | None]:
    if result.failure_reason == FailureReason.CANCELLED:
        return Status.CANCELLED, FailureReason.CANCELLED
    if result.failure_reason is not None:
        return Status.FAILED, result.failure_reason
    if result.exit_code == 0:
        return Status.SUCCEEDED, None
    return Status.FAILED, FailureReason.EXIT_CODE


@dataclass(frozen=True)
class CheckedResult:
    """A runner's result whose outputs were found whole in storage
    (`check_outputs`): only such a result is recorded, so a half-uploaded
    file is never presented as an output."""

    result: RunnerResult


# What checking one output in storage may take (its share of a listing of
# 1,000, generously): the lease covers the check of all of them
# (`lease_for_outputs`).
OUTPUT_CHECK_S = 0.01


def lease_for_outputs(lease_s: float, result: RunnerResult) -> float:
    """A lease that outlives checking a result's outputs, so that the
    monitor gives back no attempt whose outputs are being checked."""
    return lease_s + OUTPUT_CHECK_S * len(result.outputs)


def check_outputs(
    storage: ObjectStore, execution_id: str, attempt: int, result: RunnerResult
) -> CheckedResult:
    """Each output's path is a plain relative one, named once, and storage
    holds exactly its size. The paths are all checked before storage is
    asked; storage is listed under the attempt's outputs (a call per 1,000)
    with no transaction open, as a node may report thousands."""
    seen: set[str] = set()
    for out in result.outputs:
        try:
            relative_path(out.path)
        except ValueError as exc:
            raise Invalid(str(exc)) from None
        if out.path in seen:
            raise Invalid(f"output {out.path!r} is reported twice")
        seen.add(out.path)
    stored = storage.sizes(output_key(execution_id, attempt, "")) if result.outputs else {}
    for out in result.outputs:
        if stored.get(output_key(execution_id, attempt, out.path)) != out.size:
            raise Invalid(f"output {out.path!r} is missing or incomplete in storage")
    return CheckedResult(result)


def complete_attempt(session: Session, execution_id: str, attempt: int, checked: CheckedResult) -> None:
    """Record the last output lines, the final result and the outputs in
    the caller's one transaction."""
    execution, row = _current(session, execution_id, attempt)
    result = checked.result
    outputs: list[OutputFile] = result.outputs
    status, reason = _final_status(result)
    now = utcnow()
    _add_lines(session, execution_id, attempt, result.logs, now)
    _finish(execution, row, status, reason, now, result.exit_code)
    execution.duration_s = result.duration_s
    if result.usage is not None:
        used = plausible(result.usage, execution)
        row.cpu_seconds, row.peak_memory_bytes, row.wall_seconds = (
            used.cpu_seconds,
            used.peak_memory_bytes,
            used.wall_seconds,
        )
        row.output_bytes = sum(out.size for out in outputs)  # what the API checked, not what was said
    if result.environment is not None:
        lock = record_environment(session, execution, row, result.environment)
        if status == Status.SUCCEEDED:
            # Its result is keyed by the packages it was made with.
            execution.cache_key = content_key(spec_of(execution), execution.runtime, lock)
    for out in outputs:
        session.add(
            Output(
                execution_id=execution_id,
                attempt=attempt,
                path=out.path,
                size=out.size,
                sha256=out.sha256,
                object_key=output_key(execution_id, attempt, out.path),
                mode=out.mode,
            )
        )


def _finish(
    execution: Execution,
    row: Attempt,
    status: Status,
    reason: str | None,
    now: datetime,
    exit_code: int | None = None,
) -> None:
    """End an attempt and its execution together."""
    ATTEMPT.move(row, status)
    EXECUTION.move(execution, status)
    row.finished_at = execution.finished_at = now
    row.exit_code = execution.exit_code = exit_code
    row.failure_reason = execution.failure_reason = reason


def _requeue(execution: Execution, row: Attempt, now: datetime, reason: str, counted: bool = True) -> bool:
    """End the attempt as lost; requeue the execution while infrastructure
    retries are left, else fail it as worker_lost. True when requeued."""
    ATTEMPT.move(row, Status.FAILED)
    row.finished_at = now
    row.failure_reason = reason
    if counted:
        execution.lost_attempts += 1
    if execution.cancel_requested:
        EXECUTION.move(execution, Status.CANCELLED)
        execution.failure_reason = FailureReason.CANCELLED
        execution.finished_at = now
        return False
    if execution.lost_attempts <= execution.retries:
        EXECUTION.move(execution, Status.QUEUED)
        return True
    EXECUTION.move(execution, Status.FAILED)
    execution.failure_reason = FailureReason.WORKER_LOST
    execution.finished_at = now
    return False


def attempt_lost(
    session: Session,
    execution_id: str,
    attempt: int,
    reason: str,
    counted: bool = True,
    unstarted_only: bool = False,
) -> bool:
    """The transport lost an attempt (task crashed, worker died, lease ran
    out), or gave it up itself (`counted=False`: no fault of the execution,
    no retry spent; `unstarted_only`: only while its runner has not
    started). Returns True when the execution went back to the queue; a
    no-op (False) when the attempt had already ended, been superseded, or
    started where only an unstarted one was to go."""
    try:
        execution, row = _current(session, execution_id, attempt)
    except StaleAttempt:
        return False
    if unstarted_only and row.status != Status.DISPATCHED:
        return False
    return _requeue(execution, row, utcnow(), reason, counted)


def attempt_open(session: Session, execution_id: str, attempt: int) -> bool:
    """Whether this attempt is still the execution's current, unfinished one
    (a plain read: nothing is locked)."""
    status = session.scalar(
        select(Attempt.status)
        .join(Execution, Execution.id == Attempt.execution_id)
        .where(Attempt.execution_id == execution_id, Attempt.number == attempt, Execution.attempt == attempt)
    )
    return status is not None and not Status(status).final


def attempts_left_by_old_nodes(session: Session, worker_id: str, ray_node_id: str) -> list[tuple[str, int]]:
    """Open attempts a worker's earlier Ray nodes ran: the worker now runs
    `ray_node_id`, so they died with the raylet that held them."""
    rows = session.execute(
        select(Attempt.execution_id, Attempt.number).where(
            Attempt.worker_id == worker_id,
            Attempt.status.in_(OPEN_STATES),
            Attempt.ray_node_id.is_not(None),
            Attempt.ray_node_id != ray_node_id,
        )
    )
    return [(execution_id, number) for execution_id, number in rows]


def unstarted_attempts(session: Session) -> list[tuple[str, int]]:
    """Attempts handed to Ray whose runner has not started yet: Ray may
    hold them for any node, a dead one included."""
    rows = session.execute(
        select(Attempt.execution_id, Attempt.number).where(Attempt.status == Status.DISPATCHED)
    )
    return [(execution_id, number) for execution_id, number in rows]


def attempts_on_workers(session: Session, worker_ids: list[str]) -> list[tuple[str, int]]:
    """Open attempts placed on these workers."""
    rows = session.execute(
        select(Attempt.execution_id, Attempt.number).where(
            Attempt.worker_id.in_(worker_ids), Attempt.status.in_(OPEN_STATES)
        )
    )
    return [(execution_id, number) for execution_id, number in rows]


def expired_attempts(session: Session) -> list[tuple[str, int]]:
    """Open attempts whose lease ran out: their runner or dispatcher is gone."""
    rows = session.execute(
        select(Attempt.execution_id, Attempt.number).where(
            Attempt.status.in_(OPEN_STATES), Attempt.lease_expires_at < utcnow()
        )
    )
    return [(execution_id, number) for execution_id, number in rows]


def renew_dispatched(session: Session, keys: list[tuple[str, int]], lease_s: float) -> None:
    """The dispatcher vouches for attempts Ray still holds for it (waiting for
    a node, or starting), so their lease runs only while it is alive. One
    statement for all (executemany): the write lock is held for one round
    trip, not one per attempt."""
    if not keys:
        return
    until = utcnow() + timedelta(seconds=lease_s)
    session.connection().execute(
        update(Attempt)
        .where(
            Attempt.execution_id == bindparam("renewed_execution"),
            Attempt.number == bindparam("renewed_number"),
            Attempt.status == Status.DISPATCHED,
        )
        .values(lease_expires_at=until),
        [{"renewed_execution": execution_id, "renewed_number": number} for execution_id, number in keys],
    )


def fail_unschedulable(session: Session, execution_id: str, detail: str) -> int | None:
    """Fail an execution no server could ever run, while it still waits
    (queued, or dispatched and not started). Returns the attempt whose Ray
    task is to be cancelled, if one was open."""
    execution = session.get(Execution, execution_id)
    if execution is None or execution.status not in WAITING_STATES:
        return None
    now = utcnow()
    open_attempt = None
    if execution.status == Status.DISPATCHED:
        row = session.scalar(
            select(Attempt).where(Attempt.execution_id == execution_id, Attempt.number == execution.attempt)
        )
        if row is not None and row.status == Status.DISPATCHED:
            ATTEMPT.move(row, Status.FAILED)
            row.finished_at, row.failure_reason = now, FailureReason.UNSCHEDULABLE
            open_attempt = row.number
    EXECUTION.move(execution, Status.FAILED)
    execution.failure_reason = FailureReason.UNSCHEDULABLE
    execution.failure_detail = detail
    execution.finished_at = now
    return open_attempt
