"""Rolling the grid's Ray token (rgrid_api.raytoken), on a real SQLite
database: the new token waits while any attempt is open, then is in force
and the old one is gone; what each node runs with is counted. The whole
roll on a live grid is tests/chaos/test_chaos.py's."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from rgrid.wire import RunnerResult, RunnerStart, WorkerRegistration, ray_token_fingerprint
from rgrid_api import raytoken
from rgrid_api.attempts import check_outputs, claim_queued, complete_attempt, start_attempt
from rgrid_api.db.models import RayToken
from rgrid_api.workers import register
from rgrid_runner.nodetoken import NodeRayToken
from tests.api.conftest import LEASE_S, add_worker, submit
from tests.support.memstorage import MemoryStorage

CONFIGURED = "c" * 64


@pytest.fixture(autouse=True)
def configured_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAY_AUTH_TOKEN_PATH", raising=False)
    monkeypatch.setenv("RAY_AUTH_TOKEN", CONFIGURED)


def test_before_any_rotation_the_configured_token_is_in_force(session: Session) -> None:
    state = raytoken.current(session)
    assert state.token == CONFIGURED and state.pending is None
    assert state.fingerprint == ray_token_fingerprint(CONFIGURED)
    assert not raytoken.rotation_waits(session)


def test_a_new_token_waits_for_every_open_attempt(session: Session, storage: MemoryStorage) -> None:
    add_worker(session, "w1")
    running = submit(session, storage)
    claim_queued(session, LEASE_S)
    session.commit()
    start_attempt(session, running.id, 1, RunnerStart(worker="h", worker_id="w1"), LEASE_S, trusted=True)
    session.commit()
    generation = raytoken.rotate(session)
    session.commit()
    state = raytoken.current(session)
    assert state.pending == generation and state.token == CONFIGURED  # nodes stay on the old one
    assert raytoken.rotation_waits(session)
    waiting = submit(session, storage)
    assert claim_queued(session, LEASE_S) == []  # nothing new starts meanwhile
    session.commit()
    assert not raytoken.advance(session)
    complete_attempt(
        session, running.id, 1, check_outputs(storage, running.id, 1, RunnerResult(exit_code=0, duration_s=1))
    )
    session.commit()
    assert raytoken.advance(session)
    session.commit()
    state = raytoken.current(session)
    assert state.pending is None and state.token not in (None, CONFIGURED)
    assert len(state.token or "") == 64
    assert not raytoken.rotation_waits(session)
    assert [c.execution_id for c in claim_queued(session, LEASE_S)] == [waiting.id]
    session.commit()


def test_a_second_rotation_replaces_the_first_and_old_tokens_are_deleted(session: Session) -> None:
    raytoken.rotate(session)
    assert raytoken.advance(session)
    first = raytoken.current(session).token
    raytoken.rotate(session)
    raytoken.rotate(session)  # asked twice while waiting: the newest wins
    assert raytoken.current(session).token == first
    assert raytoken.advance(session)
    session.commit()
    tokens = session.scalars(select(RayToken.token)).all()
    assert tokens == [raytoken.current(session).token] and first not in tokens


def test_abandoning_keeps_the_token_in_force(session: Session) -> None:
    raytoken.rotate(session)
    raytoken.advance(session)
    in_force = raytoken.current(session).token
    raytoken.rotate(session)
    assert raytoken.abandon(session) == 1
    assert raytoken.current(session) == raytoken.TokenState(in_force, None)
    assert raytoken.abandon(session) == 0


def test_progress_counts_the_live_nodes_on_the_token_in_force(session: Session) -> None:
    def node(worker_id: str, token: str) -> None:
        register(
            session,
            WorkerRegistration(id=worker_id, host_name="h", ray_token_fp=ray_token_fingerprint(token)),
        )
        session.commit()

    node("w1", CONFIGURED)
    node("w2", CONFIGURED)
    raytoken.rotate(session)
    assert raytoken.progress(session) == raytoken.Progress(pending=True, open_attempts=0, nodes=2, switched=2)
    raytoken.advance(session)
    new = raytoken.current(session).token
    assert new is not None
    node("w1", new)
    assert raytoken.progress(session) == raytoken.Progress(
        pending=False, open_attempts=0, nodes=2, switched=1
    )


def test_a_node_keeps_a_new_token_where_it_keeps_its_token(tmp_path: Path) -> None:
    path = tmp_path / "ray-token"
    path.write_text(CONFIGURED + "\n")
    path.chmod(0o640)  # shared with a server's group, as on a control server
    on_file = NodeRayToken({"RAY_AUTH_TOKEN_PATH": str(path)})
    assert on_file.fingerprint == ray_token_fingerprint(CONFIGURED)
    on_file.replace("d" * 64)
    assert path.read_text().strip() == "d" * 64 and path.stat().st_mode & 0o777 == 0o640
    assert NodeRayToken({"RAY_AUTH_TOKEN_PATH": str(path)}).value == "d" * 64  # a restarted agent
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")  # the token's folder cannot be made: it may not be written
    in_memory = NodeRayToken(
        {"RAY_AUTH_TOKEN_PATH": str(blocker / "ray-token"), "RAY_AUTH_TOKEN": CONFIGURED}
    )
    in_memory.replace("f" * 64)
    assert in_memory.value == "f" * 64
    environ = {"RAY_AUTH_TOKEN": CONFIGURED}
    by_value = NodeRayToken(environ)
    by_value.replace("e" * 64)
    assert environ["RAY_AUTH_TOKEN"] == "e" * 64 and by_value.value == "e" * 64


def test_nothing_goes_to_a_cluster_whose_token_is_no_longer_in_force(
    session: Session, storage: MemoryStorage
) -> None:
    """After the new token is in force, the old cluster (its driver still
    connected for a moment) is handed nothing; the new one is."""
    raytoken.rotate(session)
    assert raytoken.advance(session)
    session.commit()
    waiting = submit(session, storage)
    old = ray_token_fingerprint(CONFIGURED)
    assert claim_queued(session, LEASE_S, ray_token_fp=old) == []
    session.commit()
    new = raytoken.current(session).fingerprint
    assert [c.execution_id for c in claim_queued(session, LEASE_S, ray_token_fp=new)] == [waiting.id]
    session.commit()
