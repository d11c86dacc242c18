"""The shared worker token only joins: a credential per node, for an id no
live node holds (rgrid_api.credentials.join), on a real SQLite database."""

from __future__ import annotations

import pytest
from sqlalchemy.orm import Session

from rgrid.wire import WorkerRegistration, WorkerStatus
from rgrid_api.credentials import Taken, join, worker_for
from rgrid_api.workers import register, set_status
from tests.api.conftest import add_worker


def test_a_new_id_gets_a_credential_that_speaks_for_it_alone(session: Session) -> None:
    credential = join(session, "node-a")
    assert worker_for(session, credential) == "node-a"
    assert worker_for(session, credential + "x") is None


def test_a_live_node_keeps_its_id(session: Session) -> None:
    first = join(session, "node-a")
    add_worker(session, "node-a")
    with pytest.raises(Taken, match="node-a is active"):
        join(session, "node-a")
    set_status(session, "node-a", WorkerStatus.DRAINING)
    with pytest.raises(Taken, match="draining"):
        join(session, "node-a")
    assert worker_for(session, first) == "node-a"  # the refused join took nothing from it


def test_the_heads_id_is_never_joined(session: Session) -> None:
    register(session, WorkerRegistration(id="the-head", host_name="h"), head=True)
    session.commit()
    set_status(session, "the-head", WorkerStatus.LEFT)
    with pytest.raises(Taken, match="Ray head"):
        join(session, "the-head")


@pytest.mark.parametrize("ended", [WorkerStatus.LEFT, WorkerStatus.DEAD])
def test_an_ended_nodes_id_may_be_joined_again_and_its_old_credential_dies(
    session: Session, ended: WorkerStatus
) -> None:
    old = join(session, "node-a")
    add_worker(session, "node-a")
    set_status(session, "node-a", ended)
    new = join(session, "node-a")
    assert worker_for(session, new) == "node-a"
    assert worker_for(session, old) is None
