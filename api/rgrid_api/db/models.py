"""Tables of the control plane. The database is the source of truth.

The one rule the schema itself guards: an execution has at most one row per
attempt number (unique constraint), so two dispatchers racing on the same
execution cannot both open attempt n.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy import false as sa_false
from sqlalchemy import true as sa_true
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from rgrid.wire import InstanceState, Status, WorkerStatus


def _one_of(column: str, states: type[StrEnum]) -> str:
    return f"{column} IN (" + ",".join(f"'{s}'" for s in states) + ")"


_STATE_CHECK = _one_of("status", Status)


class Base(DeclarativeBase):
    pass


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    owner: Mapped[str] = mapped_column(String(128), index=True)
    name: Mapped[str] = mapped_column(String(128))
    # sha256 of the key: keys are 256-bit random, so a fast hash is enough.
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    role: Mapped[str] = mapped_column(String(16), default="user", server_default="user")
    # The key's own caps; NULL takes the server's default (settings).
    max_running_cpus: Mapped[float | None] = mapped_column(Float)
    max_queued: Mapped[int | None] = mapped_column(Integer)


class StoredObject(Base):
    """A blob uploaded by one owner. Objects are per owner on purpose:
    a shared index would tell one tenant what another has uploaded."""

    __tablename__ = "objects"
    __table_args__ = (UniqueConstraint("owner", "sha256"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    owner: Mapped[str] = mapped_column(String(128))
    sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(BigInteger)
    complete: Mapped[bool] = mapped_column(Boolean, default=False)
    upload_id: Mapped[str | None] = mapped_column(String(512))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Batch(Base):
    """One script over many inputs: an execution per input, at most
    `parallel` of them dispatched or running at once."""

    __tablename__ = "batches"
    __table_args__ = (Index("ix_batches_owner_created", "owner", "created_at"),)

    id: Mapped[str] = mapped_column(String(16), primary_key=True)
    owner: Mapped[str] = mapped_column(String(128))
    script_name: Mapped[str] = mapped_column(String(1024))
    total: Mapped[int] = mapped_column(Integer)
    parallel: Mapped[int | None] = mapped_column(Integer)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False, server_default=sa_false())
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Execution(Base):
    __tablename__ = "executions"
    __table_args__ = (
        CheckConstraint(_STATE_CHECK, name="ck_executions_status"),
        Index("ix_executions_owner_created", "owner", "created_at"),
        Index("ix_executions_status", "status"),
        # The queue, per owner, oldest first (the dispatcher's fair share).
        Index("ix_executions_status_owner_created", "status", "owner", "created_at"),
        Index("ix_executions_batch_status", "batch_id", "status"),
        Index("ix_executions_owner_cache_key", "owner", "cache_key"),
        # The console's runs list filtered by script, newest first.
        Index("ix_executions_owner_script_created", "owner", "script_name", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(16), primary_key=True)
    owner: Mapped[str] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(16))
    script_name: Mapped[str] = mapped_column(String(1024))
    script_sha256: Mapped[str] = mapped_column(String(64))
    args: Mapped[list] = mapped_column(JSON)
    inputs: Mapped[list] = mapped_column(JSON)
    env: Mapped[dict] = mapped_column(JSON)
    runtime: Mapped[str] = mapped_column(String(64))
    requirements: Mapped[str | None] = mapped_column(Text)
    network: Mapped[bool] = mapped_column(Boolean, default=True, server_default=sa_true())
    verbose: Mapped[bool] = mapped_column(Boolean, default=False, server_default=sa_false())
    cpu: Mapped[float] = mapped_column(Float)
    memory_mb: Mapped[int] = mapped_column(Integer)
    timeout_s: Mapped[float] = mapped_column(Float)
    retries: Mapped[int] = mapped_column(Integer)
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    # Attempts lost to infrastructure (worker death, expired lease); --retries bounds it.
    lost_attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    exit_code: Mapped[int | None] = mapped_column(Integer)
    failure_reason: Mapped[str | None] = mapped_column(String(32))
    failure_detail: Mapped[str | None] = mapped_column(Text)
    duration_s: Mapped[float | None] = mapped_column(Float)
    retry_of: Mapped[str | None] = mapped_column(String(16))
    batch_id: Mapped[str | None] = mapped_column(ForeignKey("batches.id", name="fk_executions_batch"))
    # The input this execution runs on, as the user named it (relative path).
    batch_input: Mapped[str | None] = mapped_column(String(1024))
    # sha256 of what it runs (rgrid_api.resultcache), and for a cached
    # result the execution whose result it reuses.
    cache_key: Mapped[str | None] = mapped_column(String(64))
    cached_from: Mapped[str | None] = mapped_column(String(16))
    # The package set (`PackageLock`) its result was made with.
    lock_sha256: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    attempts: Mapped[list[Attempt]] = relationship(
        back_populates="execution", order_by="Attempt.number", lazy="selectin"
    )


class Attempt(Base):
    __tablename__ = "attempts"
    __table_args__ = (
        UniqueConstraint("execution_id", "number", name="uq_attempts_execution_number"),
        CheckConstraint(_STATE_CHECK, name="ck_attempts_status"),
        # The monitor's pass every second reads the open attempts' leases.
        Index("ix_attempts_status_lease", "status", "lease_expires_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    execution_id: Mapped[str] = mapped_column(ForeignKey("executions.id", ondelete="CASCADE"))
    number: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))
    worker: Mapped[str | None] = mapped_column(String(256))
    worker_id: Mapped[str | None] = mapped_column(ForeignKey("workers.id"), index=True)
    ray_node_id: Mapped[str | None] = mapped_column(String(64))
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    dispatched_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    exit_code: Mapped[int | None] = mapped_column(Integer)
    failure_reason: Mapped[str | None] = mapped_column(String(32))
    # What it used (`rgrid.wire.Usage`), as its runner reported it.
    cpu_seconds: Mapped[float | None] = mapped_column(Float)
    peak_memory_bytes: Mapped[int | None] = mapped_column(BigInteger)
    wall_seconds: Mapped[float | None] = mapped_column(Float)
    output_bytes: Mapped[int | None] = mapped_column(BigInteger)
    # What it ran with (`rgrid.wire.RunnerEnvironment`).
    interpreter: Mapped[str | None] = mapped_column(String(128))
    rgrid_version: Mapped[str | None] = mapped_column(String(64))
    lock_sha256: Mapped[str | None] = mapped_column(String(64))

    execution: Mapped[Execution] = relationship(back_populates="attempts")


class PackageLock(Base):
    """An exact package set, stored once however many runs share it: the
    interpreter and `name==version` of every installed distribution."""

    __tablename__ = "package_locks"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    interpreter: Mapped[str] = mapped_column(String(128))
    packages: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class CurrentLock(Base):
    """What an owner's requirements (for one runtime) last installed as: the
    package set the result cache's key takes for a new run of them."""

    __tablename__ = "current_locks"

    owner: Mapped[str] = mapped_column(String(128), primary_key=True)
    environment_key: Mapped[str] = mapped_column(String(64), primary_key=True)
    lock_sha256: Mapped[str] = mapped_column(String(64))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Worker(Base):
    """A node that runs attempts: registered and kept alive by its agent."""

    __tablename__ = "workers"
    __table_args__ = (CheckConstraint(_one_of("status", WorkerStatus), name="ck_workers_status"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    host_name: Mapped[str] = mapped_column(String(256))
    ray_node_id: Mapped[str | None] = mapped_column(String(64))
    # Set by a head node's agent only: the GCS address other nodes and the
    # dispatcher join. It moves when the head restarts elsewhere.
    ray_address: Mapped[str | None] = mapped_column(String(256))
    # Registered by the head's token: only that token speaks for it again.
    is_head: Mapped[bool] = mapped_column(Boolean, default=False, server_default=sa_false())
    resources: Mapped[dict] = mapped_column(JSON)
    runtimes: Mapped[list] = mapped_column(JSON)
    sandbox: Mapped[str] = mapped_column(String(32))
    provider: Mapped[str] = mapped_column(String(32))
    server_id: Mapped[str | None] = mapped_column(String(64))
    pid: Mapped[int | None] = mapped_column(Integer)
    version: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16))
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Which Ray token its raylet runs with (rgrid_api.raytoken.fingerprint):
    # a rotation is done once every live node is on the new one.
    ray_token_fp: Mapped[str | None] = mapped_column(String(16))


class WorkerHeartbeat(Base):
    """One row per worker, updated in place: the hot write stays small."""

    __tablename__ = "worker_heartbeats"

    worker_id: Mapped[str] = mapped_column(ForeignKey("workers.id", ondelete="CASCADE"), primary_key=True)
    last_heartbeat_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)


class Output(Base):
    __tablename__ = "outputs"
    __table_args__ = (UniqueConstraint("execution_id", "path"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    execution_id: Mapped[str] = mapped_column(ForeignKey("executions.id", ondelete="CASCADE"))
    attempt: Mapped[int] = mapped_column(Integer)
    path: Mapped[str] = mapped_column(String(1024))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    object_key: Mapped[str] = mapped_column(String(1200))
    # The permission bits the job gave the file (NULL before migration 0008).
    mode: Mapped[int | None] = mapped_column(Integer, nullable=True)


class LogChunkRow(Base):
    __tablename__ = "log_chunks"
    __table_args__ = (UniqueConstraint("execution_id", "seq"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    execution_id: Mapped[str] = mapped_column(ForeignKey("executions.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(Integer)
    attempt: Mapped[int] = mapped_column(Integer)
    stream: Mapped[str] = mapped_column(String(8))
    data: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Instance(Base):
    """One server the autoscaler asked a provider for. Its name is chosen
    (and this row written) before the create call, so a call whose answer
    was lost is recognised by name and adopted, never made twice."""

    __tablename__ = "instances"
    __table_args__ = (
        CheckConstraint(_one_of("state", InstanceState), name="ck_instances_state"),
        Index("ix_instances_state", "state"),
    )

    name: Mapped[str] = mapped_column(String(63), primary_key=True)
    provider: Mapped[str] = mapped_column(String(32))
    server_id: Mapped[str | None] = mapped_column(String(64))
    server_type: Mapped[str] = mapped_column(String(64))
    location: Mapped[str] = mapped_column(String(64))
    price_eur_per_hour: Mapped[float] = mapped_column(Float)
    cpus: Mapped[float] = mapped_column(Float)
    memory_mb: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(24))
    reason: Mapped[str | None] = mapped_column(Text)
    action_id: Mapped[str | None] = mapped_column(String(64))
    requested_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    state_since: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class InstanceTransition(Base):
    """Every state change of an instance: when, from what, and why."""

    __tablename__ = "instance_transitions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    instance: Mapped[str] = mapped_column(ForeignKey("instances.name", ondelete="CASCADE"), index=True)
    from_state: Mapped[str | None] = mapped_column(String(24))
    to_state: Mapped[str] = mapped_column(String(24))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    reason: Mapped[str] = mapped_column(Text)


class WorkerCredential(Base):
    """A secret a node agent presents, bound to one worker id: a bootstrap
    token (single use, short expiry, in user data) or the node's own
    credential it was exchanged for (revoked when the node is deleted).
    Stored only as sha256."""

    __tablename__ = "worker_credentials"
    __table_args__ = (
        CheckConstraint("kind IN ('bootstrap','node')", name="ck_worker_credentials_kind"),
        # At most one node credential that works per worker id.
        Index(
            "ux_worker_credentials_live_node",
            "worker_id",
            unique=True,
            sqlite_where=text("kind = 'node' AND revoked_at IS NULL"),
            postgresql_where=text("kind = 'node' AND revoked_at IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    worker_id: Mapped[str] = mapped_column(String(64), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    secret_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class AutoscalerReport(Base):
    """What the active autoscaler last concluded (one row), so any server can
    answer `rgrid autoscaler status`."""

    __tablename__ = "autoscaler_report"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    report: Mapped[dict] = mapped_column(JSON)


class RayToken(Base):
    """The grid's Ray token once it was rotated (`rgrid server
    rotate-ray-token`); before that, the one the server is configured with.
    The newest row is pending until no attempt is open, then in force; older
    rows are deleted. Kept in clear: nodes fetch it with their credential,
    and whoever reads this database controls the grid anyway."""

    __tablename__ = "ray_tokens"

    generation: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    token: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    in_force_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class ConsoleSession(Base):
    """A browser logged in to the console (`rgrid_api.console`): the
    cookie's sha256, never the cookie; it dies with its key (the key's row
    is checked on every request) and at `expires_at`."""

    __tablename__ = "console_sessions"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    key_id: Mapped[int] = mapped_column(ForeignKey("api_keys.id", ondelete="CASCADE"), index=True)
    # What the session's forms carry back (a POST without it is refused).
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)


class ConsoleLink(Base):
    """A one-time login link (`rgrid console`), by its token's sha256:
    deleted when used, useless after `expires_at`."""

    __tablename__ = "console_links"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    key_id: Mapped[int] = mapped_column(ForeignKey("api_keys.id", ondelete="CASCADE"), index=True)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
