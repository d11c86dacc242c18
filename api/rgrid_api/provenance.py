"""What exactly an execution ran: its files' hashes, its arguments, the
interpreter and the exact package set of each attempt, where each attempt
ran, and the rgrid that ran it.

Package sets are stored once (`package_locks`, by the sha256 of the
interpreter and the sorted `name==version` lines), whatever the number of
runs that share one. `current_locks` keeps, per owner and requirements,
the set they last installed as: the result cache's key takes it
(`rgrid_api.resultcache`), so a result made with other packages than the
requirements now install is not reused. `rgrid retry --exact` installs an
execution's set again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from typing import Any

from sqlalchemy import Connection, Row, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from rgrid.wire import AttemptRecord, InputRecord, Provenance, RunnerEnvironment
from rgrid_api.db.engine import is_postgres
from rgrid_api.db.models import Attempt, CurrentLock, Execution, PackageLock, StoredObject
from rgrid_api.db.times import utcnow
from rgrid_api.views import AttemptColumns


def environment_key(runtime: str, requirements: str | None) -> str:
    """One key per (runtime, requirements text): what installs the same."""
    return hashlib.sha256(f"{runtime}\n{requirements or ''}".encode()).hexdigest()


def package_set_sha256(environment: RunnerEnvironment) -> str:
    """A package set's identity: its interpreter and sorted lines, encoded
    so that no interpreter text can pass for lines (JSON)."""
    text = json.dumps([environment.interpreter, sorted(environment.packages)])
    return hashlib.sha256(text.encode()).hexdigest()


def current_package_set(session: Session, owner: str, runtime: str, requirements: str | None) -> str | None:
    """The package set (its sha256) these requirements last installed as
    for this owner; None before any run of them reported one."""
    return session.scalar(
        select(CurrentLock.lock_sha256).where(
            CurrentLock.owner == owner, CurrentLock.environment_key == environment_key(runtime, requirements)
        )
    )


def _insert(session: Session, table: type[PackageLock] | type[CurrentLock], values: dict[str, Any]) -> Any:
    dialect_insert = pg_insert if is_postgres(session.get_bind()) else sqlite_insert
    return dialect_insert(table).values(**values)


def record_environment(
    session: Session, execution: Execution, attempt: Attempt, environment: RunnerEnvironment
) -> str:
    """Keep what an attempt ran with, in the caller's transaction; returns
    the package set's sha256."""
    sha = package_set_sha256(environment)
    now = utcnow()
    stored = _insert(
        session,
        PackageLock,
        {
            "sha256": sha,
            "interpreter": environment.interpreter,
            "packages": "\n".join(sorted(environment.packages)),
            "created_at": now,
        },
    )
    session.execute(stored.on_conflict_do_nothing(index_elements=["sha256"]))
    current = _insert(
        session,
        CurrentLock,
        {
            "owner": execution.owner,
            "environment_key": environment_key(execution.runtime, execution.requirements),
            "lock_sha256": sha,
            "updated_at": now,
        },
    )
    session.execute(
        current.on_conflict_do_update(
            index_elements=["owner", "environment_key"], set_={"lock_sha256": sha, "updated_at": now}
        )
    )
    attempt.interpreter = environment.interpreter
    attempt.rgrid_version = environment.rgrid_version
    attempt.lock_sha256 = sha
    execution.lock_sha256 = sha
    return sha


def package_set(session: Session, sha: str | None) -> PackageLock | None:
    """The stored package set of this sha256, if any."""
    return session.get(PackageLock, sha) if sha else None


def provenance(
    conn: Connection, execution: Execution | Row[Any], attempts: Iterable[Attempt | AttemptColumns]
) -> Provenance:
    """An execution's provenance: two small reads beside the execution's own
    (the sizes of its files, its package set)."""
    files = [{"path": execution.script_name, "sha256": execution.script_sha256}, *execution.inputs]
    sizes = dict(
        conn.execute(
            select(StoredObject.sha256, StoredObject.size).where(
                StoredObject.owner == execution.owner,
                StoredObject.sha256.in_({str(f["sha256"]) for f in files}),
            )
        ).all()
    )
    records = [InputRecord(path=f["path"], sha256=f["sha256"], size=sizes.get(f["sha256"])) for f in files]
    lock = conn.execute(
        select(PackageLock.interpreter, PackageLock.packages).where(
            PackageLock.sha256 == execution.lock_sha256
        )
    ).first()
    return Provenance(
        script=records[0],
        inputs=records[1:],
        args=execution.args,
        runtime=execution.runtime,
        requirements=execution.requirements,
        interpreter=lock.interpreter if lock else None,
        packages=lock.packages.split("\n") if lock and lock.packages else ([] if lock else None),
        attempts=[
            AttemptRecord(
                number=a.number,
                worker=a.worker,
                worker_id=a.worker_id,
                ray_node_id=a.ray_node_id,
                interpreter=a.interpreter,
                rgrid_version=a.rgrid_version,
            )
            for a in attempts
        ],
    )
