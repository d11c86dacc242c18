"""Per-worker credentials. A provisioned server's user data carries one
bootstrap token: single use, short expiry, bound to the server's worker id.
Its agent exchanges it at first contact for the node's own credential,
bound to the same worker id and revoked when the node is deleted. A node an
operator set up (compose, systemd) joins with the shared worker token,
which buys a credential for an id no live node holds and nothing else. Both
kinds are stored only as sha256 (256-bit random secrets: a fast hash is
enough)."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta

from sqlalchemy import CursorResult, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from rgrid.wire import LIVE_WORKER_STATES
from rgrid_api.auth import hash_key
from rgrid_api.db.models import Worker, WorkerCredential

BOOTSTRAP = "bootstrap"
NODE = "node"


def _issue(session: Session, worker_id: str, kind: str, expires_at: datetime | None) -> str:
    secret = f"rgw_{kind[0]}_" + secrets.token_urlsafe(32)
    session.add(
        WorkerCredential(
            worker_id=worker_id,
            kind=kind,
            secret_hash=hash_key(secret),
            created_at=datetime.now(UTC),
            expires_at=expires_at,
        )
    )
    return secret


def issue_bootstrap(session: Session, worker_id: str, ttl_s: float) -> str:
    """A token for one server's user data."""
    return _issue(session, worker_id, BOOTSTRAP, datetime.now(UTC) + timedelta(seconds=ttl_s))


def exchange(session: Session, token: str) -> tuple[str, str] | None:
    """Spend a bootstrap token: (worker id, the node's credential), or None
    if the token is unknown, spent, expired or revoked. Spending is one
    conditional UPDATE, so two agents racing with one token get one credential."""
    now = datetime.now(UTC)
    row = session.scalar(
        select(WorkerCredential).where(
            WorkerCredential.secret_hash == hash_key(token), WorkerCredential.kind == BOOTSTRAP
        )
    )
    if row is None:
        return None
    spent: CursorResult = session.execute(  # type: ignore[assignment]
        update(WorkerCredential)
        .where(
            WorkerCredential.id == row.id,
            WorkerCredential.used_at.is_(None),
            WorkerCredential.revoked_at.is_(None),
            WorkerCredential.expires_at > now,
        )
        .values(used_at=now)
        .execution_options(synchronize_session=False)
    )
    if spent.rowcount != 1:
        return None
    return row.worker_id, _issue(session, row.worker_id, NODE, None)


class Taken(Exception):
    """The worker id belongs to a live node, or to the Ray head."""


def join(session: Session, worker_id: str) -> str:
    """A credential for a node an operator set up, bound to `worker_id`.
    Refused (Taken) for the head's id, for a live node's, and for any id
    that still has a credential that works: the worker token cannot take
    over, or lock out, a node that exists, even one that left or died (it
    comes back with its kept credential). An operator frees an id with
    `rgrid server forget-node`; a database that forgot the node (reset) has
    no credential for it. A unique index keeps two racing joins from both
    getting one (the insert is flushed in a savepoint here, so the caller
    hears Taken, not the database's error at its commit)."""
    worker = session.get(Worker, worker_id)
    if worker is not None and (worker.is_head or worker.status in LIVE_WORKER_STATES):
        raise Taken(
            f"worker {worker_id} is {'the Ray head' if worker.is_head else worker.status}: "
            "only its own credential speaks for it"
        )
    held = select(WorkerCredential.id).where(
        WorkerCredential.worker_id == worker_id,
        WorkerCredential.kind == NODE,
        WorkerCredential.revoked_at.is_(None),
    )
    if session.scalar(held) is not None:
        raise Taken(
            f"worker {worker_id} has a credential: `rgrid server forget-node {worker_id}` frees the id"
        )
    try:
        with session.begin_nested():
            credential = _issue(session, worker_id, NODE, None)
    except IntegrityError:
        raise Taken(f"worker {worker_id} was joined a moment ago by another node") from None
    return credential


def worker_for(session: Session, credential: str) -> str | None:
    """The worker id a node credential speaks for, while it is not revoked."""
    row = session.scalar(
        select(WorkerCredential).where(
            WorkerCredential.secret_hash == hash_key(credential), WorkerCredential.kind == NODE
        )
    )
    if row is None or row.revoked_at is not None:
        return None
    return row.worker_id


def live_node_credentials(session: Session) -> dict[str, str]:
    """Every node credential that works now: its sha256 -> its worker id
    (one indexed read, for the servers' once-a-second re-check)."""
    rows = session.execute(
        select(WorkerCredential.secret_hash, WorkerCredential.worker_id).where(
            WorkerCredential.kind == NODE, WorkerCredential.revoked_at.is_(None)
        )
    )
    return {secret_hash: worker_id for secret_hash, worker_id in rows}


def revoke(session: Session, worker_id: str) -> int:
    """Every credential of a worker stops working (its node is being
    deleted, or forgotten); how many did."""
    revoked: CursorResult = session.execute(  # type: ignore[assignment]
        update(WorkerCredential)
        .where(WorkerCredential.worker_id == worker_id, WorkerCredential.revoked_at.is_(None))
        .values(revoked_at=datetime.now(UTC))
    )
    return int(revoked.rowcount)
