"""The shared worker token only joins: a credential per node, for an id no
live node holds (rgrid_api.credentials.join), on a real SQLite database."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from rgrid.wire import WorkerRegistration, WorkerStatus
from rgrid_api.credentials import NODE, Taken, join, revoke, worker_for
from rgrid_api.db.models import WorkerCredential
from rgrid_api.workers import register, set_status
from tests.api.conftest import add_worker


def test_a_new_id_gets_a_credential_that_speaks_for_it_alone(session: Session) -> None:
    credential = join(session, "node-a")
    session.commit()
    assert worker_for(session, credential) == "node-a"
    assert worker_for(session, credential + "x") is None


def test_a_live_node_keeps_its_id(session: Session) -> None:
    first = join(session, "node-a")
    session.commit()
    add_worker(session, "node-a")
    with pytest.raises(Taken, match="node-a is active"):
        join(session, "node-a")
    set_status(session, "node-a", WorkerStatus.DRAINING)
    session.commit()
    with pytest.raises(Taken, match="draining"):
        join(session, "node-a")
    assert worker_for(session, first) == "node-a"  # the refused join took nothing from it


def test_the_heads_id_is_never_joined(session: Session) -> None:
    register(session, WorkerRegistration(id="the-head", host_name="h"), head=True)
    session.commit()
    set_status(session, "the-head", WorkerStatus.LEFT)
    session.commit()
    with pytest.raises(Taken, match="Ray head"):
        join(session, "the-head")


@pytest.mark.parametrize("ended", [WorkerStatus.LEFT, WorkerStatus.DEAD])
def test_an_ended_nodes_id_is_its_own_until_an_operator_forgets_it(
    session: Session, ended: WorkerStatus
) -> None:
    old = join(session, "node-a")
    session.commit()
    add_worker(session, "node-a")
    set_status(session, "node-a", ended)
    session.commit()
    with pytest.raises(Taken, match="forget-node node-a"):
        join(session, "node-a")  # it comes back with the credential it kept
    assert worker_for(session, old) == "node-a"
    assert revoke(session, "node-a") == 1  # `rgrid server forget-node node-a`
    session.commit()
    new = join(session, "node-a")
    session.commit()
    assert worker_for(session, new) == "node-a" and worker_for(session, old) is None


def test_an_id_never_holds_two_working_node_credentials(session: Session) -> None:
    join(session, "node-a")
    session.commit()
    session.add(
        WorkerCredential(worker_id="node-a", kind=NODE, secret_hash="0" * 64, created_at=datetime.now(UTC))
    )
    with pytest.raises(IntegrityError):  # what a join racing the first would have hit
        session.commit()
