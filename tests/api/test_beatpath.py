"""The heartbeat's fast path answers only what the route would answer the
same way, and hands every other beat to the route: another node's id, a
credential the server has not checked, the head, the worker token, a node
not read yet, another method or path. The server's own credential cache and
heartbeat view, on a real migrated database."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest
from sqlalchemy.orm import Session, sessionmaker
from starlette.types import Message

from rgrid.wire import WorkerAck, WorkerStatus
from rgrid_api.auth import SecretCache
from rgrid_api.beatpath import BeatFastPath
from rgrid_api.beats import Beats
from rgrid_api.credentials import join, revoke, worker_for
from rgrid_api.deps import AppState
from rgrid_api.metrics import ROUTE_KEY
from tests.api.conftest import add_worker

CREDENTIALS = {"cred-a": "node-a", "cred-head": "head-node"}


class Grid:
    """What the fast path reads of the server: its credential cache and its
    heartbeat view."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.node_credentials = SecretCache(sessions, 60.0, lambda _s, secret: CREDENTIALS.get(secret))
        self.beats = Beats(sessions)


def _call(path: BeatFastPath, method: str, url: str, authorization: bytes | None) -> tuple[int, bytes, dict]:
    scope: dict[str, Any] = {
        "type": "http",
        "method": method,
        "path": url,
        "headers": [(b"authorization", authorization)] if authorization else [],
    }
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b""}

    async def send(message: Message) -> None:
        sent.append(message)

    asyncio.run(path(scope, receive, send))
    return sent[0]["status"], sent[1]["body"], scope


async def _route(scope: Any, _receive: Any, send: Any) -> None:
    """Stands for the app: whatever reaches it answers 599."""
    await send({"type": "http.response.start", "status": 599, "headers": []})
    await send({"type": "http.response.body", "body": b"route"})


@pytest.fixture
def grid(sessions: sessionmaker[Session]) -> Grid:
    grid = Grid(sessions)
    grid.beats.note("node-a", WorkerStatus.ACTIVE, is_head=False)
    grid.beats.note("head-node", WorkerStatus.ACTIVE, is_head=True)
    for secret in CREDENTIALS:
        grid.node_credentials.get(secret)  # checked once, as the route does
    return grid


def test_a_known_nodes_beat_is_answered_before_routing(grid: Grid) -> None:
    path = BeatFastPath(_route, cast(AppState, grid))
    status, body, scope = _call(path, "POST", "/v1/workers/node-a/heartbeat", b"Bearer cred-a")
    assert status == 200 and WorkerAck.model_validate_json(body).status == WorkerStatus.ACTIVE
    assert scope[ROUTE_KEY] == "/v1/workers/{worker_id}/heartbeat"
    assert "node-a" in grid.beats._pending  # its time is kept, as the route keeps it


@pytest.mark.parametrize(
    ("method", "url", "authorization"),
    [
        ("POST", "/v1/workers/node-b/heartbeat", b"Bearer cred-a"),  # another node's id
        ("POST", "/v1/workers/node-a/heartbeat", b"Bearer never-checked"),  # not in the cache
        ("POST", "/v1/workers/node-a/heartbeat", None),  # no credential
        ("POST", "/v1/workers/node-a/heartbeat", b"Basic cred-a"),  # another scheme
        ("POST", "/v1/workers/head-node/heartbeat", b"Bearer cred-head"),  # the head: the route decides
        ("GET", "/v1/workers/node-a/heartbeat", b"Bearer cred-a"),  # another method
        ("POST", "/v1/workers/node-a/heartbeat/", b"Bearer cred-a"),  # another path
        ("POST", "/v1/workers/node-a/drain", b"Bearer cred-a"),
    ],
)
def test_every_other_beat_goes_to_the_route(
    grid: Grid, method: str, url: str, authorization: bytes | None
) -> None:
    path = BeatFastPath(_route, cast(AppState, grid))
    assert _call(path, method, url, authorization)[0] == 599


def test_a_node_not_read_yet_goes_to_the_route(sessions: sessionmaker[Session]) -> None:
    grid = Grid(sessions)
    grid.node_credentials.get("cred-a")
    assert (
        _call(
            BeatFastPath(_route, cast(AppState, grid)),
            "POST",
            "/v1/workers/node-a/heartbeat",
            b"Bearer cred-a",
        )[0]
        == 599
    )


def test_credentials_are_rechecked_at_once_and_a_revoked_one_stops_within_a_flush(
    sessions: sessionmaker[Session],
) -> None:
    """Each flush re-checks every node credential in one read: a live one
    is answered with no lookup of its own, a revoked one goes to the route
    (which refuses it) from the next flush."""
    cache = SecretCache(sessions, 5.0, worker_for)
    beats = Beats(sessions, cache)
    grid = Grid(sessions)
    grid.node_credentials, grid.beats = cache, beats
    with sessions() as session:
        credential = join(session, "node-a")
        session.commit()
        add_worker(session, "node-a")
    path = BeatFastPath(_route, cast(AppState, grid))
    beat = ("POST", "/v1/workers/node-a/heartbeat", f"Bearer {credential}".encode())
    assert _call(path, *beat)[0] == 599  # neither read nor checked here yet: the route decides
    beats.flush()
    assert cache.cached(credential) == (True, "node-a")
    assert _call(path, *beat)[0] == 200
    with sessions() as session:
        assert revoke(session, "node-a") == 1
        session.commit()
    beats.flush()
    assert cache.cached(credential) == (True, None)
    assert _call(path, *beat)[0] == 599
