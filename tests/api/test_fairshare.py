"""Sharing the grid between owners: the fair order itself, the dispatcher's
claim that hands out only what the grid can start, and each owner's caps."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy.orm import Session

from rgrid.wire import Status
from rgrid_api.attempts import Sharing, claim_queued
from rgrid_api.auth import Caps, create_key, owner_caps, set_caps
from rgrid_api.db.engine import make_hot_reader
from rgrid_api.db.models import Execution
from rgrid_api.errors import Invalid, OverCap
from rgrid_api.executionread import read_execution
from rgrid_api.executions import admit, cancel_execution
from rgrid_api.fairshare import Candidate, RecentUse, fair_order
from rgrid_api.waiting import why_waiting
from rgrid_runner.driver_messages import Capacity
from tests.api.conftest import LEASE_S, submit
from tests.api.test_batches import finish, make_batch
from tests.support.memstorage import MemoryStorage

T0 = datetime(2026, 12, 6, tzinfo=UTC)


def grid(cpus: float, largest: float | None = None, memory_mb: float = 65536) -> Capacity:
    """Job nodes with `cpus` in all: one node, or the largest with `largest`
    and another with the rest; each with `memory_mb`."""
    if largest is None or largest >= cpus:
        return Capacity(nodes=[(cpus, memory_mb)])
    return Capacity(nodes=[(largest, memory_mb), (cpus - largest, memory_mb)])


def queue(owner: str, n: int, start: int = 0, cpu: float = 1.0, batch: str | None = None) -> list[Candidate]:
    return [Candidate(f"{owner}{i}", owner, cpu, T0 + timedelta(seconds=start + i), batch) for i in range(n)]


def ids(picked: list[Candidate]) -> list[str]:
    return [c.execution_id for c in picked]


def test_the_owner_with_the_least_running_goes_first_then_oldest_first() -> None:
    # alice's batch came first and runs on 4 CPUs; bob and carol run nothing.
    queues = {"alice": queue("a", 10), "bob": queue("b", 2, start=100), "carol": queue("c", 1, start=50)}
    picked = fair_order(queues, {"alice": 4.0}, room_cpus=4, caps={}, batch_room={}, limit=32)
    assert ids(picked) == ["c0", "b0", "b1", "a0"]


def test_running_work_is_weighed_in_cpus() -> None:
    queues = {"alice": queue("a", 3, cpu=4.0), "bob": queue("b", 3, start=10)}
    picked = fair_order(queues, {}, room_cpus=100, caps={}, batch_room={}, limit=5)
    # alice's first takes 4 CPUs: bob catches up with three 1-CPU runs first.
    assert ids(picked) == ["a0", "b0", "b1", "b2", "a1"]


def test_a_large_run_keeps_its_place_and_is_not_overtaken_by_the_owners_smaller_ones() -> None:
    queues = {"alice": [*queue("big", 1, cpu=8.0), *queue("a", 3, start=1)]}
    assert fair_order(queues, {}, room_cpus=4, caps={}, batch_room={}, limit=32) == []
    queues["bob"] = queue("b", 2, start=5)
    assert ids(fair_order(queues, {}, room_cpus=4, caps={}, batch_room={}, limit=32)) == ["b0", "b1"]


def test_a_cap_stops_its_owner_only_and_a_full_batch_lets_the_owners_other_work_go() -> None:
    queues = {
        "alice": [*queue("x", 2, batch="b-full"), *queue("a", 3, start=5)],
        "bob": queue("b", 4, start=9),
    }
    picked = fair_order(
        queues, {"alice": 1.0}, room_cpus=10, caps={"alice": 2.0}, batch_room={"b-full": 0}, limit=32
    )
    assert ids(picked) == ["b0", "a0", "b1", "b2", "b3"]


def test_an_owner_who_just_arrived_gets_each_of_its_runs_before_a_batch_that_holds_the_grid() -> None:
    # alice's batch has run on both slots for two seconds, and both just
    # freed; bob's first run took the one. By running CPUs alone (0 < 1)
    # alice would take the other back; what she used says she had her share.
    queues = {"alice": queue("a", 10), "bob": queue("b", 1, start=100)}
    picked = fair_order(queues, {"alice": 0.0, "bob": 1.0}, 1, {}, {}, 32, recent_cpu_s={"alice": 4.0})
    assert ids(picked) == ["b0"]
    # Without that history the same moment goes to alice.
    assert ids(fair_order(queues, {"alice": 0.0, "bob": 1.0}, 1, {}, {}, 32)) == ["a0"]


def test_owners_with_no_history_share_one_rounds_slots() -> None:
    queues = {"alice": queue("a", 5), "bob": queue("b", 5, start=10)}
    assert ids(fair_order(queues, {}, 4, {}, {}, 32, recent_cpu_s={})) == ["a0", "b0", "a1", "b1"]


def test_recent_use_counts_cpu_seconds_and_forgets_them() -> None:
    now = [0.0]
    recent = RecentUse(half_life_s=60, clock=lambda: now[0])
    recent.observe({"alice": 2.0})  # nothing used yet: running from now on
    assert recent.cpu_seconds() == {}
    now[0] = 3.0
    recent.observe({"bob": 1.0})  # alice's ran 2 CPUs for 3 s, and ended; bob's began
    assert recent.cpu_seconds() == pytest.approx({"alice": 6.0})
    now[0] = 63.0
    recent.observe({"bob": 1.0})  # a half-life later: alice's halves, bob ran 60 s
    assert recent.cpu_seconds() == pytest.approx({"alice": 3.0, "bob": 60.0})
    for step in range(2, 40):
        now[0] = 3.0 + 60.0 * step
        recent.observe({"bob": 1.0})
    assert "alice" not in recent.cpu_seconds()  # forgotten once negligible
    assert recent.cpu_seconds()["bob"] == pytest.approx(60 / (1 - 0.5), rel=0.01)


def test_the_claim_hands_out_only_what_the_grid_can_start(session: Session, storage: MemoryStorage) -> None:
    for _ in range(5):
        submit(session, storage)
    sharing = Sharing(margin=0.0)
    assert len(claim_queued(session, LEASE_S, sharing=sharing, grid=grid(2.0))) == 2
    session.commit()
    assert claim_queued(session, LEASE_S, sharing=sharing, grid=grid(2.0)) == []
    session.commit()
    assert len(claim_queued(session, LEASE_S, sharing=Sharing(margin=0.5), grid=grid(2.0))) == 1
    session.commit()
    assert claim_queued(session, LEASE_S, sharing=sharing, grid=grid(0.0)) == []
    session.commit()
    counts = {s: 0 for s in Status}
    for row in session.query(Execution):
        counts[Status(row.status)] += 1
    assert counts[Status.DISPATCHED] == 3 and counts[Status.QUEUED] == 2


def test_another_owners_run_goes_next_when_a_slot_frees_behind_a_large_batch(
    session: Session, storage: MemoryStorage
) -> None:
    make_batch(session, storage, 40, owner="alice")
    sharing = Sharing(margin=0.0)
    running = claim_queued(session, LEASE_S, sharing=sharing, grid=grid(2.0))
    session.commit()
    assert len(running) == 2
    late = [submit(session, storage, owner="bob") for _ in range(2)]
    finish(session, storage, running[0].execution_id, 1, 0)
    (next_one,) = claim_queued(session, LEASE_S, sharing=sharing, grid=grid(2.0))
    session.commit()
    assert next_one.execution_id == late[0].id
    finish(session, storage, running[1].execution_id, 1, 0)
    # bob runs 1 CPU and alice none now: alice's batch gets its turn.
    (then,) = claim_queued(session, LEASE_S, sharing=sharing, grid=grid(2.0))
    session.commit()
    assert then.execution_id not in {e.id for e in late}
    finish(session, storage, next_one.execution_id, 1, 0)
    (last,) = claim_queued(session, LEASE_S, sharing=sharing, grid=grid(2.0))
    session.commit()
    assert last.execution_id == late[1].id


def test_an_owner_runs_up_to_its_cap_and_the_rest_waits_queued(
    session: Session, storage: MemoryStorage
) -> None:
    create_key(session, "alice", caps=Caps(running_cpus=2.0))
    session.commit()
    for _ in range(4):
        submit(session, storage)
    bob = submit(session, storage, owner="bob")
    claimed = claim_queued(session, LEASE_S, sharing=Sharing(), grid=grid(100.0))
    session.commit()
    assert len(claimed) == 3 and bob.id in {c.execution_id for c in claimed}
    assert claim_queued(session, LEASE_S, sharing=Sharing(), grid=grid(100.0)) == []
    session.commit()


def test_an_owners_cap_is_the_largest_its_keys_set_and_the_default_where_none_does(session: Session) -> None:
    create_key(session, "alice", "small", caps=Caps(running_cpus=1.0, queued=10))
    session.commit()
    create_key(session, "alice", "large", caps=Caps(running_cpus=3.0))
    session.commit()
    create_key(session, "alice", "plain")  # a key without caps neither lifts nor lowers them
    session.commit()
    create_key(session, "bob")
    session.commit()
    caps = owner_caps(session, {"alice", "bob", "carol"}, Caps(running_cpus=None, queued=500))
    assert caps == {
        "alice": Caps(running_cpus=3.0, queued=10),
        "bob": Caps(running_cpus=None, queued=500),
        "carol": Caps(running_cpus=None, queued=500),
    }
    # An operator changes them later, for the owner's keys called "small".
    assert set_caps(session, "alice", Caps(running_cpus=8.0), name="small") == 1
    session.commit()
    assert owner_caps(session, {"alice"}, Caps(queued=500))["alice"] == Caps(running_cpus=8.0, queued=500)
    assert set_caps(session, "nobody", Caps(running_cpus=1.0)) == 0
    session.commit()


def test_the_queued_cap_refuses_a_submission_and_keeps_what_was_accepted(
    session: Session, storage: MemoryStorage
) -> None:
    kept = [submit(session, storage) for _ in range(3)]
    three = Caps(queued=3)
    admit(session, "alice", 0, 1.0, three)
    with pytest.raises(OverCap, match=r"queued cap reached: alice has 3 executions queued, this adds 1"):
        admit(session, "alice", 1, 1.0, three)
    admit(session, "bob", 3, 1.0, three)  # another owner's queue is its own
    cancel_execution(session, "alice", kept[0].id)
    session.commit()
    admit(session, "alice", 1, 1.0, three)
    session.expire_all()
    assert [session.get(Execution, e.id).status for e in kept[1:]] == [Status.QUEUED] * 2  # type: ignore[union-attr]


def test_status_says_why_a_queued_run_waits(session: Session, storage: MemoryStorage, db_path: Path) -> None:
    create_key(session, "alice", caps=Caps(running_cpus=1.0))
    session.commit()
    first, second = submit(session, storage), submit(session, storage)
    submit(session, storage, owner="bob")  # runs: the grid is full
    claim_queued(session, LEASE_S, sharing=Sharing(), grid=grid(2.0))
    session.commit()
    engine = make_hot_reader(f"sqlite:///{db_path}")

    def why(execution: Execution, cpus: float | None, owner: str = "alice") -> str | None:
        with engine.connect() as conn:
            view = read_execution(conn, owner, execution.id)
            return why_waiting(conn, owner, view, Caps(), None if cpus is None else grid(cpus))

    assert why(first, 2.0) is None  # it runs
    assert why(second, 2.0) == "alice runs its cap of 1 CPUs at once; this starts when some of its runs end"
    bob_late = submit(session, storage, owner="bob")
    assert why(bob_late, 2.0, "bob") == "the grid's 2 CPUs are in use; this starts in turn as they free"
    assert why(bob_late, 0.0, "bob") == "no node is taking jobs yet"
    assert why(bob_late, 0.5, "bob") == (
        "needs 1 CPUs and 256 MiB on one node; no node that takes jobs has both "
        "(the most CPUs: 0.5; the most memory: 65536 MiB)"
    )
    assert why(bob_late, None, "bob") is None
    batch = make_batch(session, storage, 3, parallel=1, owner="carol")
    claim_queued(session, LEASE_S, sharing=Sharing(), grid=grid(100.0))
    session.commit()
    waiting = [e for e in session.query(Execution).filter_by(batch_id=batch.id, status=Status.QUEUED)]
    assert why(waiting[0], 100.0, "carol") == "its batch runs at most 1 at once (--parallel)"


def test_a_run_larger_than_its_owners_cap_is_refused_and_one_larger_than_the_grid_holds_up_nothing(
    session: Session, storage: MemoryStorage
) -> None:
    create_key(session, "alice", caps=Caps(running_cpus=2.0))
    session.commit()
    with pytest.raises(
        Invalid, match=r"asks for 4 CPUs, more than alice may run at once \(2\): it could never start"
    ):
        admit(session, "alice", 1, 4.0, Caps())
    admit(session, "alice", 1, 2.0, Caps())
    # On a grid of 2 CPUs, a queued 8-CPU run of bob's (the grid shrank, or
    # no autoscaler) does not hold up bob's other runs behind it.
    big = [Candidate("huge", "bob", 8.0, T0), *queue("b", 2, start=1)]
    assert ids(fair_order({"bob": big}, {}, room_cpus=2, caps={}, batch_room={}, limit=32, grid=grid(2))) == [
        "b0",
        "b1",
    ]
    over_cap = [Candidate("wide", "alice", 3.0, T0), *queue("a", 1, start=1)]
    picked = fair_order({"alice": over_cap}, {}, room_cpus=10, caps={"alice": 2.0}, batch_room={}, limit=32)
    assert ids(picked) == ["a0"]


def test_a_run_no_node_can_hold_takes_no_room_from_anyone() -> None:
    """A run asking for more memory (or CPUs) than the largest node has
    would sit in Ray forever, counting against the room of every owner: it
    is passed over, and everyone's work goes on."""
    nodes = grid(4, largest=2, memory_mb=1024)
    huge = [Candidate("mem", "mallory", 1.0, T0, memory_mb=1_000_000), Candidate("cpu", "mallory", 3.0, T0)]
    queues = {"mallory": huge, "alice": queue("a", 3, start=5)}
    picked = fair_order(queues, {}, room_cpus=4, caps={}, batch_room={}, limit=32, grid=nodes)
    assert ids(picked) == ["a0", "a1", "a2"]


def test_a_run_must_fit_one_node_not_the_largest_of_each() -> None:
    # 32 CPUs with 16 GiB, and 4 CPUs with 128 GiB: 16 CPUs with 64 GiB fits neither.
    nodes = Capacity(nodes=[(32, 16384), (4, 131072)])
    assert not nodes.fits(16, 65536)
    assert nodes.fits(16, 16384) and nodes.fits(4, 131072)
    assert nodes.cpus == 36 and nodes.largest_cpus == 32 and nodes.largest_memory_mb == 131072
    queues = {"mallory": [Candidate("between", "mallory", 16, T0, memory_mb=65536)], "alice": queue("a", 1)}
    assert ids(fair_order(queues, {}, room_cpus=36, caps={}, batch_room={}, limit=32, grid=nodes)) == ["a0"]


def test_the_claim_reads_past_runs_that_could_never_start(session: Session, storage: MemoryStorage) -> None:
    """An owner's oldest runs ask for more memory than any node has: the
    claim's read leaves them out, so its later runs are seen and go."""
    big = [submit(session, storage) for _ in range(40)]
    for e in big:
        row = session.get(Execution, e.id)
        assert row is not None
        row.memory_mb = 1_000_000
    session.commit()
    small = submit(session, storage)
    (claimed,) = claim_queued(session, LEASE_S, sharing=Sharing(), grid=grid(2))
    session.commit()
    assert claimed.execution_id == small.id
