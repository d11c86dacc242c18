"""Which Ray token the grid is on, and rolling it to a new one.

Ray takes one token per cluster for the cluster's whole life, so a new
token means a new cluster: the head, every raylet and the server's driver
restart with it, and a restarted raylet loses the attempts it held. So a
rotation waits for running work instead of cutting it:

1. `rgrid server rotate-ray-token` stores a new token, *pending*. From then
   on no server hands Ray anything new (`may_claim`, in the claim's own
   transaction); queued runs wait in the database, and attempts already in
   Ray run to their end.
2. Once no attempt is open, the monitor puts the token *in force* (`advance`)
   and deletes the older ones.
3. Every answer to a node names the token in force by its fingerprint. A
   node on another fetches it with its own credential
   (`GET /v1/workers/ray-token`) and restarts its raylet; the head's restart
   is a new cluster, which the server's driver follows, started with the
   new token. A node whose credential was revoked (deleted, forgotten)
   cannot fetch it and is out of the cluster for good.
4. Dispatch resumes once the driver runs with the token in force: a claim
   for a cluster on any other token gets nothing.

Storing, putting in force and claiming take one lock (`dispatchlock`), so
on PostgreSQL no claim round interleaves with either.

Before any rotation the token in force is the one the server is configured
with (`RAY_AUTH_TOKEN_PATH`, or `RAY_AUTH_TOKEN`), as on every node.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Connection, delete, exists, func, select
from sqlalchemy.orm import Session

from rgrid.wire import LIVE_WORKER_STATES, OPEN_STATES, ray_token_fingerprint
from rgrid_api import dispatchlock
from rgrid_api.db.models import Attempt, RayToken, Worker
from rgrid_api.db.times import utcnow


def configured() -> str | None:
    """The token this server was given: the grid's before any rotation."""
    path = os.environ.get("RAY_AUTH_TOKEN_PATH")
    if path and Path(path).is_file():
        return Path(path).read_text().strip()
    return os.environ.get("RAY_AUTH_TOKEN")


@dataclass(frozen=True)
class TokenState:
    """The token nodes and drivers must use now, and whether a newer one
    waits for running work to end (then nothing new is dispatched)."""

    token: str | None
    pending: int | None  # the waiting generation

    @property
    def fingerprint(self) -> str | None:
        return ray_token_fingerprint(self.token) if self.token else None


def current(session: Session) -> TokenState:
    rows = session.execute(
        select(RayToken.generation, RayToken.token, RayToken.in_force_at).order_by(RayToken.generation.desc())
    ).all()
    pending = rows[0].generation if rows and rows[0].in_force_at is None else None
    in_force = next((row.token for row in rows if row.in_force_at is not None), None)
    return TokenState(in_force or configured(), pending)


def rotation_waits(conn: Connection | Session) -> bool:
    """Whether a new token waits for running work (nothing new starts)."""
    return bool(conn.scalar(select(exists().where(RayToken.in_force_at.is_(None)))))


def may_claim(session: Session, ray_token_fp: str | None) -> bool:
    """Whether anything may be handed to a cluster on this token (None: a
    transport without one): not while a new token waits, and never to a
    cluster whose token is no longer in force (it is going away)."""
    state = current(session)
    if state.pending is not None:
        return False
    return ray_token_fp is None or ray_token_fp == state.fingerprint


def rotate(session: Session) -> int:
    """Store a new token, pending; its generation. Holds the dispatch lock
    until the caller's commit: commit promptly."""
    dispatchlock.hold(session)
    latest = session.scalar(select(func.max(RayToken.generation))) or 0
    session.add(RayToken(generation=latest + 1, token=secrets.token_hex(32), created_at=utcnow()))
    session.flush()
    return latest + 1


def abandon(session: Session) -> int:
    """Drop a pending token (the grid stays on the one in force); how many
    were dropped."""
    result = session.execute(delete(RayToken).where(RayToken.in_force_at.is_(None)))
    return int(getattr(result, "rowcount", 0) or 0)


def open_attempts(session: Session) -> int:
    """Attempts anywhere on the grid that a raylet's restart would cut."""
    return (
        session.scalar(select(func.count()).select_from(Attempt).where(Attempt.status.in_(OPEN_STATES))) or 0
    )


def advance(session: Session) -> bool:
    """Put the pending token in force once no attempt is open, and forget
    the older ones; True if it did. Holds the dispatch lock until the
    caller's commit: commit promptly."""
    dispatchlock.hold(session)
    pending = session.scalar(select(func.max(RayToken.generation)).where(RayToken.in_force_at.is_(None)))
    if pending is None or open_attempts(session):
        return False
    session.execute(delete(RayToken).where(RayToken.generation < pending))
    token = session.get(RayToken, pending)
    assert token is not None
    token.in_force_at = utcnow()
    session.flush()
    return True


@dataclass(frozen=True)
class Progress:
    """How far a rotation is, for the operator who started it."""

    pending: bool
    open_attempts: int
    nodes: int  # live nodes
    switched: int  # ... whose raylet runs with the token in force


def progress(session: Session) -> Progress:
    state = current(session)
    fps = session.scalars(select(Worker.ray_token_fp).where(Worker.status.in_(LIVE_WORKER_STATES))).all()
    return Progress(
        pending=state.pending is not None,
        open_attempts=open_attempts(session),
        nodes=len(fps),
        switched=sum(1 for fp in fps if fp is not None and fp == state.fingerprint),
    )
