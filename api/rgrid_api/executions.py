"""What an owner can do with executions: create, find, list, cancel, read logs
and outputs. Every query is scoped by owner; another owner's id is a 404."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import cast

from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from rgrid.states import ATTEMPT, EXECUTION
from rgrid.wire import (
    ALLOWED_RUNTIMES,
    ExecutionCreate,
    FailureReason,
    InputFile,
    LogChunk,
    LogPage,
    OutputFile,
    Status,
    Stream,
)
from rgrid_api import jobspec
from rgrid_api.auth import Caps, owner_caps
from rgrid_api.db.engine import is_postgres
from rgrid_api.db.models import Attempt, Execution, LogChunkRow, Output
from rgrid_api.errors import Conflict, Invalid, OverCap
from rgrid_api.ids import ID_LENGTH, new_execution_id
from rgrid_api.lookup import find_by_prefix
from rgrid_api.provenance import current_package_set, package_set
from rgrid_api.resultcache import content_key, copy_results, previous_results, reuse
from rgrid_api.storage import ObjectStore
from rgrid_api.uploads import require_complete


def resolve_runtime(requested: str, default: str, available: set[str] | None) -> str:
    """`python` means the default; anything else must be on the allowlist and,
    when the cluster's offer is known, offered by at least one worker."""
    runtime = default if requested == "python" else requested
    if runtime not in ALLOWED_RUNTIMES:
        raise Invalid(f"unknown runtime {requested!r}; choose one of: {', '.join(ALLOWED_RUNTIMES)}")
    if available is not None and runtime not in available:
        offered = ", ".join(sorted(available)) or "none"
        raise Conflict(f"runtime_unavailable: no worker offers {runtime}; available: {offered}")
    return runtime


def create_execution(
    session: Session, owner: str, body: ExecutionCreate, runtime: str, retry_of: str | None = None
) -> Execution:
    require_complete(session, owner, {f.sha256 for f in [body.script, *body.inputs]})
    known_set = current_package_set(session, owner, runtime, body.requirements)
    execution = new_execution(owner, body, runtime, known_set, retry_of=retry_of)
    # Before the row is added: a query would flush it as queued, and queued
    # -> succeeded is no transition the database allows.
    previous = previous_results(session, owner, {str(execution.cache_key)}) if body.cache else {}
    pairs = reuse([execution], previous)
    session.add(execution)
    session.flush()
    copy_results(session, pairs)
    return execution


def spec_of(execution: Execution) -> ExecutionCreate:
    """What an execution was asked to run, to run it again."""
    return ExecutionCreate(
        **dict(jobspec.of(execution)),
        script=InputFile(sha256=execution.script_sha256, path=execution.script_name),
        args=execution.args,
        inputs=[InputFile.model_validate(i) for i in execution.inputs],
    )


def exact_spec(session: Session, execution: Execution) -> ExecutionCreate:
    """An execution's spec with its requirements pinned to the package set
    it ran with, checked as any submitted spec is. Refused (409, saying
    why) where pinning cannot mean "the same": no requirements (the
    interpreter's packages are the node's), no recorded set, a requirement
    fetched from a URL (its name on the index may be anyone's package)."""
    if not execution.requirements:
        raise Conflict(f"{execution.id} ran without requirements: nothing to pin; retry it without --exact")
    if any("@" in line.split("#")[0] for line in execution.requirements.splitlines()):
        raise Conflict(
            f"{execution.id} installs a package from a URL, which a version pin cannot name; "
            "retry it without --exact"
        )
    recorded = package_set(session, execution.lock_sha256)
    if recorded is None or not recorded.packages:
        raise Conflict(
            f"no package set was recorded for {execution.id} (it ran before rgrid recorded them, "
            "or its requirements never installed): retry it without --exact"
        )
    try:
        return ExecutionCreate.model_validate(
            {**spec_of(execution).model_dump(), "requirements": recorded.packages}
        )
    except ValidationError:
        raise Conflict(
            f"the package set {execution.id} ran with cannot be submitted as requirements; retry it without --exact"
        ) from None


def new_execution(
    owner: str,
    body: ExecutionCreate,
    runtime: str,
    lock_sha256: str | None,
    retry_of: str | None = None,
    batch_id: str | None = None,
    batch_input: str | None = None,
) -> Execution:
    """A queued execution row (not added): its files must not share a path.
    `lock_sha256`: the package set its requirements now install as, if
    known (its cache key takes it)."""
    paths = [f.path for f in [body.script, *body.inputs]]
    if len(set(paths)) != len(paths):
        raise Invalid("two inputs would land on the same path in the work dir")
    return Execution(
        id=new_execution_id(),
        owner=owner,
        status=Status.QUEUED,
        script_name=paths[0],
        script_sha256=body.script.sha256,
        args=body.args,
        inputs=[f.model_dump() for f in body.inputs],
        **jobspec.columns(body, runtime),
        attempt=0,
        lost_attempts=0,
        cancel_requested=False,
        retry_of=retry_of,
        batch_id=batch_id,
        batch_input=batch_input,
        cache_key=content_key(body, runtime, lock_sha256),
        created_at=datetime.now(UTC),
    )


def find_execution(session: Session, owner: str | None, id_or_prefix: str) -> Execution:
    return find_by_prefix(session, Execution, owner, id_or_prefix, "", ID_LENGTH, "execution")


def list_executions(session: Session, owner: str, limit: int) -> list[Execution]:
    return list(
        session.scalars(
            select(Execution)
            .where(Execution.owner == owner)
            .order_by(Execution.created_at.desc())
            .limit(limit)
        )
    )


def cancel_execution(session: Session, owner: str | None, id_or_prefix: str) -> tuple[Execution, int | None]:
    """The owner's execution (owner None: anyone's), and the attempt whose
    Ray task is to be cancelled, if one was handed out and never started.
    Queued, or dispatched and not started: cancelled at once (a runner that
    starts late is fenced off). Running: the runner is told on its next
    call and kills the script; the runner's report ends it."""
    execution = find_execution(session, owner, id_or_prefix)
    unstarted = cancel_open(session, execution)
    return execution, unstarted


def cancel_open(session: Session, execution: Execution) -> int | None:
    """Cancel one execution that has not ended, in the caller's
    transaction; the attempt whose Ray task is to be cancelled, if it was
    handed out and never started."""
    if is_postgres(session.get_bind()):
        # As the runner's fence does: no start or requeue between the read
        # of its attempt and the write.
        session.refresh(execution, with_for_update=True)
    if Status(execution.status).final:
        return None
    now = datetime.now(UTC)
    unstarted = None
    if execution.status == Status.DISPATCHED:
        row = session.scalar(
            select(Attempt).where(Attempt.execution_id == execution.id, Attempt.number == execution.attempt)
        )
        if row is not None and row.status == Status.DISPATCHED:
            ATTEMPT.move(row, Status.CANCELLED)
            row.finished_at, row.failure_reason = now, FailureReason.CANCELLED
            unstarted = row.number
    if execution.status == Status.QUEUED or unstarted is not None:
        EXECUTION.move(execution, Status.CANCELLED)
        execution.failure_reason = FailureReason.CANCELLED
        execution.finished_at = now
    else:
        execution.cancel_requested = True
    return unstarted


def read_logs(session: Session, execution_id: str, after: int, limit: int = 1000) -> list[LogChunk]:
    rows = session.scalars(
        select(LogChunkRow)
        .where(LogChunkRow.execution_id == execution_id, LogChunkRow.seq > after)
        .order_by(LogChunkRow.seq)
        .limit(limit)
    )
    return [log_chunk(r) for r in rows]


def log_chunk(row: LogChunkRow) -> LogChunk:
    return LogChunk(seq=row.seq, attempt=row.attempt, stream=cast(Stream, row.stream), data=row.data)


def log_page(session: Session, owner: str | None, id_or_prefix: str, after: int) -> tuple[str, LogPage]:
    """The owner's execution's full id and its log chunks after `after`;
    `final` once it has ended and nothing is left to read."""
    execution = find_execution(session, owner, id_or_prefix)
    chunks = read_logs(session, execution.id, after)
    status = Status(execution.status)
    next_seq = chunks[-1].seq if chunks else after
    final = status.final and not read_logs(session, execution.id, next_seq, limit=1)
    return execution.id, LogPage(chunks=chunks, next_seq=next_seq, status=status, final=final)


def last_log_seq(session: Session, execution_id: str) -> int:
    seq = session.scalar(select(func.max(LogChunkRow.seq)).where(LogChunkRow.execution_id == execution_id))
    return seq or 0


def list_outputs(session: Session, storage: ObjectStore, execution: Execution) -> list[OutputFile]:
    rows = session.scalars(select(Output).where(Output.execution_id == execution.id).order_by(Output.path))
    return [output_file(storage, r) for r in rows]


def output_file(storage: ObjectStore, row: Output) -> OutputFile:
    """An output as the client gets it: with a fresh presigned URL."""
    return OutputFile(
        path=row.path,
        size=row.size,
        sha256=row.sha256,
        url=storage.presign_get(row.object_key),
        mode=row.mode,
    )


def admit(session: Session, owner: str, adding: int, cpu: float, default: Caps) -> None:
    """Refuse a submission that its owner's caps would never let run (more
    CPUs than it may run at once), or that would leave more of its
    executions queued than it may have. On PostgreSQL an owner's admissions
    are serialised (an advisory lock held until the caller commits the
    submission); SQLite serialises every writer anyway."""
    if is_postgres(session.get_bind()):
        # One admission at a time per owner, until this transaction (which
        # inserts the submission) ends: racing submissions cannot all pass.
        session.execute(select(func.pg_advisory_xact_lock(func.hashtext(f"rgrid-admit:{owner}"))))
    caps = owner_caps(session, {owner}, default)[owner]
    if caps.running_cpus is not None and cpu > caps.running_cpus:
        raise Invalid(
            f"this run asks for {cpu:g} CPUs, more than {owner} may run at once "
            f"({caps.running_cpus:g}): it could never start"
        )
    if caps.queued is None:
        return
    cap = caps.queued
    queued = session.scalar(
        select(func.count())
        .select_from(Execution)
        .where(Execution.status == Status.QUEUED, Execution.owner == owner)
    )
    queued = queued or 0
    if queued + adding > cap:
        raise OverCap(
            f"queued cap reached: {owner} has {queued} executions queued, this adds {adding}, "
            f"and the cap is {cap} (wait for some to start, or ask the grid's operator to raise it)"
        )
