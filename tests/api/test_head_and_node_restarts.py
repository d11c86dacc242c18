"""What the control plane does when nodes restart: the head's announced
address, the leftovers of a worker's earlier Ray node, a late runner of a
dead raylet, and the runtimes live workers offer."""

from __future__ import annotations

from sqlalchemy.orm import Session

from rgrid.wire import RunnerStart, Status, WorkerRegistration, WorkerStatus
from rgrid_api.attempts import NotStarted, attempts_left_by_old_nodes, claim_queued, start_attempt
from rgrid_api.workers import current_head, offered_runtimes, register, set_status
from tests.api.conftest import LEASE_S, add_worker, submit
from tests.support.memstorage import MemoryStorage

NODE_A = "a" * 56
NODE_B = "b" * 56


def registration(
    worker_id: str, ray_node_id: str | None = None, ray_address: str | None = None
) -> WorkerRegistration:
    return WorkerRegistration(
        id=worker_id,
        host_name="h",
        runtimes=["python:3.11"],
        ray_node_id=ray_node_id,
        ray_address=ray_address,
    )


def test_current_head_is_the_live_head_that_announced_itself(session: Session) -> None:
    assert current_head(session) is None
    add_worker(session, "w1", NODE_A)  # a plain worker announces no address
    assert current_head(session) is None
    register(session, registration("head", ray_node_id=NODE_B, ray_address="10.0.0.2:6379"))
    session.commit()
    head = current_head(session)
    assert head is not None and (head.address, head.ray_node_id) == ("10.0.0.2:6379", NODE_B)
    # A restarting head registers before Ray names its node: no head until it does.
    register(session, registration("head"))
    session.commit()
    assert current_head(session) is None
    register(session, registration("head", ray_node_id=NODE_A, ray_address="10.0.0.2:7000"))
    session.commit()
    head = current_head(session)
    assert head is not None and head.address == "10.0.0.2:7000"
    set_status(session, "head", WorkerStatus.DEAD)
    session.commit()
    assert current_head(session) is None


def test_a_new_ray_node_leaves_the_old_nodes_attempts_to_give_back(
    session: Session, storage: MemoryStorage
) -> None:
    add_worker(session, "w1", NODE_A)
    old = submit(session, storage)
    claim_queued(session, LEASE_S)
    session.commit()
    start_attempt(session, old.id, 1, RunnerStart(worker="h", worker_id="w1", ray_node_id=NODE_A), LEASE_S)
    session.commit()
    assert attempts_left_by_old_nodes(session, "w1", NODE_A) == []
    register(session, registration("w1", ray_node_id=NODE_B))
    session.commit()
    assert attempts_left_by_old_nodes(session, "w1", NODE_B) == [(old.id, 1)]


def test_a_late_runner_of_a_dead_raylet_is_refused_without_spending_a_retry(
    session: Session, storage: MemoryStorage
) -> None:
    add_worker(session, "w1", NODE_B)
    e = submit(session, storage)
    claim_queued(session, LEASE_S)
    session.commit()
    refused = start_attempt(
        session, e.id, 1, RunnerStart(worker="h", worker_id="w1", ray_node_id=NODE_A), LEASE_S
    )
    session.commit()
    assert refused == NotStarted("worker w1 restarted its Ray node")
    session.refresh(e)
    assert (e.status, e.lost_attempts) == (Status.QUEUED, 0)


def test_offered_runtimes_come_from_active_workers(session: Session) -> None:
    assert offered_runtimes(session) is None  # nothing live yet: refuse nothing
    register(session, WorkerRegistration(id="w1", host_name="h", runtimes=["python:3.11", "python:3.12"]))
    session.commit()
    register(session, WorkerRegistration(id="w2", host_name="h", runtimes=["python:3.13"]))
    session.commit()
    assert offered_runtimes(session) == {"python:3.11", "python:3.12", "python:3.13"}
    set_status(session, "w2", WorkerStatus.DRAINING)
    session.commit()
    assert offered_runtimes(session) == {"python:3.11", "python:3.12"}
