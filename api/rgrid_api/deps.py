"""FastAPI dependencies: the per-request session and the caller's identity.

They are `async` on purpose: FastAPI runs every sync dependency in its
thread pool, and those hops (four or five per request) cost more CPU than
a cached read itself. Nothing here blocks the event loop: a session does
no I/O until the endpoint (in the thread pool) uses it, a key usually comes
from the cache, and what does wait on the database is sent to the pool.
"""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated

from anyio import CapacityLimiter
from fastapi import Depends, Header, HTTPException, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CollectorRegistry
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from rgrid_api.auth import Caller, Caps, SecretCache, check_runner_token
from rgrid_api.autoscaler.loop import Autoscaler
from rgrid_api.beats import Beats
from rgrid_api.dispatcher import Dispatcher
from rgrid_api.finalviews import FinalViews
from rgrid_api.monitor import Monitor
from rgrid_api.notify import ChangeFeed
from rgrid_api.settings import Settings
from rgrid_api.storage import Storage
from rgrid_api.throttle import LongPolls, RateLimit


@dataclass
class AppState:
    settings: Settings
    sessions: sessionmaker
    readers: sessionmaker  # read-only sessions (no write lock on SQLite)
    read_engine: Engine  # for Core reads on the hottest path (`make_hot_reader`)
    # Threads for that read on PostgreSQL. It holds the GIL for most of its
    # time, so threads beyond a few only queue for the GIL (with anyio's 40,
    # p99 was 130 ms under `wrk`); a few still overlap the round trips.
    hot_reads: CapacityLimiter
    callers: SecretCache[Caller]
    # Which worker a node's credential speaks for.
    node_credentials: SecretCache[str]
    beats: Beats
    caps: Caps  # an owner's caps where none of its keys sets its own
    rate_limit: RateLimit
    long_polls: LongPolls
    final_views: FinalViews
    storage: Storage  # signs URLs for clients
    runner_storage: Storage  # signs URLs for workers
    feed: ChangeFeed
    dispatcher: Dispatcher | None
    monitor: Monitor
    # This server's metrics (`rgrid_api.metrics`).
    metrics: CollectorRegistry
    autoscaler: Autoscaler | None = None


async def app_state(request: Request) -> AppState:
    return request.app.state.rgrid


async def _closed(session: Session) -> None:
    """Close a request's session; one still in a transaction ends it with a
    database call, made in the thread pool."""
    if session.in_transaction():
        await run_in_threadpool(session.close)
    else:
        session.close()


async def db_session(state: Annotated[AppState, Depends(app_state)]) -> AsyncIterator[Session]:
    session = state.sessions()
    try:
        yield session
    finally:
        await _closed(session)


async def read_session(state: Annotated[AppState, Depends(app_state)]) -> AsyncIterator[Session]:
    session = state.readers()
    try:
        yield session
    finally:
        await _closed(session)


# The three kinds of bearer a route may take, named so the API's schema
# says which (its securitySchemes).
_API_KEY = HTTPBearer(
    auto_error=False, scheme_name="apiKey", description="An API key (`rgrid server create-key`)."
)
_NODE = HTTPBearer(
    auto_error=False,
    scheme_name="node",
    description="A node's own credential or the head's token; to join, the worker token or a bootstrap token.",
)
_ATTEMPT = HTTPBearer(
    auto_error=False,
    scheme_name="attempt",
    description="An attempt's token; its node's credential goes in X-Rgrid-Node.",
)
ApiKeyBearer = Annotated[HTTPAuthorizationCredentials | None, Security(_API_KEY)]
NodeBearer = Annotated[HTTPAuthorizationCredentials | None, Security(_NODE)]
AttemptBearer = Annotated[HTTPAuthorizationCredentials | None, Security(_ATTEMPT)]


def bearer(credentials: HTTPAuthorizationCredentials | None) -> str:
    if credentials is None:
        raise HTTPException(401, "missing API key", headers={"WWW-Authenticate": "Bearer"})
    return credentials.credentials.strip()


async def current_caller(
    state: Annotated[AppState, Depends(app_state)], authorization: ApiKeyBearer
) -> Caller:
    """The key's caller, once the key's rate limit let the request in."""
    key = bearer(authorization)
    known, caller = state.callers.cached(key)
    if not known:
        caller = await run_in_threadpool(state.callers.get, key)
    if caller is None:
        raise HTTPException(401, "API key refused", headers={"WWW-Authenticate": "Bearer"})
    state.rate_limit.take(caller.key_id)
    return caller


async def current_owner(caller: Annotated[Caller, Depends(current_caller)]) -> str:
    return caller.owner


async def admin_caller(caller: Annotated[Caller, Depends(current_caller)]) -> Caller:
    if not caller.admin:
        raise HTTPException(403, "this needs an admin API key (ask the grid's operator)")
    return caller


async def runner_auth(
    execution_id: str,
    attempt: int,
    state: Annotated[AppState, Depends(app_state)],
    authorization: AttemptBearer,
    x_rgrid_node: Annotated[str | None, Header()] = None,
) -> WorkerCaller:
    """The attempt's token, and the node that speaks with it: its agent's
    credential (`X-Rgrid-Node`), which the attempt service holds. A ticket
    read off a raylet or the GCS is no use without it, and once an attempt
    started only the node that started it speaks for it."""
    secret = state.settings.runner_secret.get_secret_value()
    if not check_runner_token(secret, execution_id, attempt, bearer(authorization)):
        raise HTTPException(401, "runner token refused")
    node = await _node_of(state, x_rgrid_node or "")
    if node is None:
        raise HTTPException(401, "a runner speaks with its node's credential (X-Rgrid-Node)")
    return node


def _same(presented: str, secret: str) -> bool:
    """Constant-time equality on bytes (on str it refuses non-ASCII with a
    TypeError: a hostile header must be a 401, never a 500)."""
    return hmac.compare_digest(presented.encode(), secret.encode())


@dataclass(frozen=True)
class WorkerCaller:
    """A node agent: with the head token (the head's agent: the only caller
    that may say where the Ray head is) or its own credential (only for its
    own worker id). The shared worker token is no such caller: it only
    buys a credential (`enrolling`)."""

    worker_id: str | None
    head: bool = False

    def check(self, worker_id: str) -> None:
        if self.worker_id is not None and self.worker_id != worker_id:
            raise HTTPException(403, f"this credential speaks for {self.worker_id}, not {worker_id}")


async def worker_auth(
    state: Annotated[AppState, Depends(app_state)], authorization: NodeBearer
) -> WorkerCaller:
    presented = bearer(authorization)
    if _same(presented, state.settings.worker_token.get_secret_value()):
        raise HTTPException(
            403,
            "the worker token only joins a node (POST /v1/workers/join): speak with the credential it gave",
        )
    node = await _node_of(state, presented)
    if node is None:
        raise HTTPException(401, "worker credential refused")
    return node


async def _node_of(state: AppState, presented: str) -> WorkerCaller | None:
    """The node a credential speaks for: the head (its token), a node (its
    own credential), or none."""
    if not presented:
        return None
    if _same(presented, state.settings.head_token.get_secret_value()):
        return WorkerCaller(None, head=True)
    known, worker_id = state.node_credentials.cached(presented)
    if not known:
        worker_id = await run_in_threadpool(state.node_credentials.get, presented)
    return WorkerCaller(worker_id) if worker_id is not None else None


async def enrolling(state: Annotated[AppState, Depends(app_state)], authorization: NodeBearer) -> None:
    """The shared worker token, which only joins a node to the grid."""
    if not _same(bearer(authorization), state.settings.worker_token.get_secret_value()):
        raise HTTPException(401, "worker token refused")


Owner = Annotated[str, Depends(current_owner)]
User = Annotated[Caller, Depends(current_caller)]
Admin = Annotated[Caller, Depends(admin_caller)]
DB = Annotated[Session, Depends(db_session)]
ReadDB = Annotated[Session, Depends(read_session)]
State = Annotated[AppState, Depends(app_state)]
Agent = Annotated[WorkerCaller, Depends(worker_auth)]
Enrolling = Annotated[None, Depends(enrolling)]
RunnerNode = Annotated[WorkerCaller, Depends(runner_auth)]
