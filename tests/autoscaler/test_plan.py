"""`plan(state, demand, config, now)`, table by table, with a fake clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from rgrid.wire import InstanceState
from rgrid_api.autoscaler.plan import (
    Config,
    InstanceRecord,
    Need,
    State,
    WorkerRoom,
    plan,
    spend,
)
from rgrid_infra.provider import Server, ServerType

T0 = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
PY = "python:3.11"
TYPES = [
    ServerType("small", 2, 4096, {"fsn1": 0.01, "nbg1": 0.011}),
    ServerType("big", 8, 16384, {"fsn1": 0.03}),
]
CONFIG = Config(
    min_nodes=0,
    max_nodes=3,
    max_pending=3,
    max_creates_per_cycle=3,
    idle_s=60,
    join_timeout_s=600,
    budget_eur_per_hour=1.0,
    billing_period_s=3600,
    period_end_window_s=300,
    orphan_grace_s=120,
    runtimes=frozenset({PY}),
)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def need(key: str, cpu: float = 1, memory_mb: int = 512, runtime: str = PY) -> Need:
    return Need(key, cpu, memory_mb, runtime)


def inst(name: str, state: InstanceState, since: float = 0, **kw: object) -> InstanceRecord:
    fields: dict = dict(
        server_id=f"id-{name}",
        server_type="small",
        location="fsn1",
        price=0.01,
        requested_at=at(since),
        state_since=at(since),
    )
    fields.update(kw)
    return InstanceRecord(name=name, state=state, **fields)


def server(name: str, created: float = 0, stype: str = "small") -> Server:
    return Server(f"id-{name}", name, stype, "fsn1", {"rgrid-cluster": "c"}, "running", at(created))


def state(instances: list[InstanceRecord] = (), servers: list[Server] | None = (), **kw: object) -> State:  # type: ignore[assignment]
    fields: dict = dict(live=[], types=TYPES)
    fields.update(kw)
    return State(instances=list(instances), servers=None if servers is None else list(servers), **fields)


# -- scale up -------------------------------------------------------------------
@pytest.mark.parametrize(
    ("demand", "expected"),
    [
        ([], []),
        ([need("a")], [("small", "fsn1")]),
        # Two 1-CPU jobs share one 2-CPU node.
        ([need("a"), need("b")], [("small", "fsn1")]),
        ([need("a"), need("b"), need("c")], [("small", "fsn1"), ("small", "fsn1")]),
        # Too big for small: the cheapest type that fits.
        ([need("a", cpu=6)], [("big", "fsn1")]),
        ([need("a", memory_mb=8000)], [("big", "fsn1")]),
    ],
)
def test_demand_is_bin_packed_onto_the_cheapest_type_that_fits(demand: list[Need], expected: list) -> None:
    out = plan(state(), demand, CONFIG, T0)
    assert [(c.server_type, c.location) for c in out.creates] == expected


def test_demand_that_fits_live_or_pending_nodes_creates_nothing() -> None:
    live = [WorkerRoom("w1", 1, 1024, frozenset({PY}))]
    out = plan(
        state([inst("p1", InstanceState.ALLOCATED)], [server("p1")], live=live),
        [need("a"), need("b"), need("c")],
        CONFIG,
        T0,
    )
    assert out.creates == []


def test_work_no_allowed_type_can_ever_run_fails_at_once() -> None:
    demand = [
        need("huge", cpu=64),
        need("ram", memory_mb=1 << 20),
        need("r", runtime="python:3.9"),
        need("ok"),
    ]
    out = plan(state(), demand, CONFIG, T0)
    assert set(out.unschedulable) == {"huge", "ram", "r"}
    assert "64 CPU" in out.unschedulable["huge"] and "8 CPU" in out.unschedulable["huge"]
    assert "python:3.9" in out.unschedulable["r"]
    assert len(out.creates) == 1


def test_a_live_worker_that_fits_keeps_big_work_from_failing() -> None:
    live = [WorkerRoom("hand-started", 64, 1 << 20, frozenset({PY}), 64, 1 << 20)]
    out = plan(state(live=live), [need("huge", cpu=64)], CONFIG, T0)
    assert out.unschedulable == {} and out.creates == []
    # Busy now: the work waits for it rather than failing.
    busy = [WorkerRoom("hand-started", 0, 0, frozenset({PY}), 64, 1 << 20)]
    out = plan(state(live=busy), [need("huge", cpu=64)], CONFIG, T0)
    assert out.unschedulable == {}


@pytest.mark.parametrize(
    ("config", "existing", "creates", "blocked"),
    [
        (CONFIG, 0, 3, None),
        (Config(**{**CONFIG.__dict__, "max_nodes": 2}), 1, 1, "max nodes (2) reached"),
        (Config(**{**CONFIG.__dict__, "max_pending": 1}), 0, 1, "max pending (1) reached"),
        (Config(**{**CONFIG.__dict__, "max_creates_per_cycle": 2}), 0, 2, "at most 2 creates per cycle"),
        (Config(**{**CONFIG.__dict__, "budget_eur_per_hour": 0.025}), 0, 2, "budget"),
        # The budget counts what already exists.
        (Config(**{**CONFIG.__dict__, "budget_eur_per_hour": 0.025}), 2, 0, "budget"),
    ],
)
def test_growth_stops_at_every_limit(
    config: Config, existing: int, creates: int, blocked: str | None
) -> None:
    instances = [inst(f"j{i}", InstanceState.JOINED) for i in range(existing)]
    servers = [server(f"j{i}") for i in range(existing)]
    demand = [need(f"n{i}", cpu=2) for i in range(10)]
    out = plan(state(instances, servers), demand, config, T0)
    assert len(out.creates) == creates
    if blocked is None:
        assert out.blocked == ["max nodes (3) reached"]
    else:
        assert any(blocked in b for b in out.blocked), out.blocked


def test_orphans_and_unknown_outcomes_count_against_the_budget() -> None:
    config = Config(**{**CONFIG.__dict__, "budget_eur_per_hour": 0.02})
    # An orphan (no row) and a create whose outcome is unknown (row, no server).
    s = state([inst("r1", InstanceState.REQUESTED, server_id=None)], [server("orphan")])
    assert spend(s) == pytest.approx(0.02)
    out = plan(s, [need("a", cpu=2), need("b", cpu=2)], config, T0)
    assert out.creates == [] and any("budget" in b for b in out.blocked)


def test_backed_off_type_and_location_is_skipped_for_the_next() -> None:
    backoff = {("small", "fsn1"): (T0 + timedelta(minutes=5)).timestamp()}
    out = plan(state(backoff=backoff), [need("a")], CONFIG, T0)
    assert [(c.server_type, c.location) for c in out.creates] == [("small", "nbg1")]
    everything = {("small", "fsn1"): at(300).timestamp(), ("small", "nbg1"): at(300).timestamp(),
                  ("big", "fsn1"): at(300).timestamp()}  # fmt: skip
    out = plan(state(backoff=everything), [need("a")], CONFIG, T0)
    assert out.creates == [] and any("backed off" in b for b in out.blocked)


def test_a_hold_stops_scale_up_but_not_scale_down_or_cleanup() -> None:
    idle = inst("j1", InstanceState.JOINED, since=-3500, worker_status="active", idle_since=at(-120))
    out = plan(
        state([idle], [server("j1", -3500), server("orphan", -600)], held="authentication refused"),
        [],
        CONFIG,
        T0,
    )
    assert out.drains == ["j1"] and [o.name for o in out.orphans] == ["orphan"]
    out = plan(state(held="authentication refused"), [need("a")], CONFIG, T0)
    assert out.creates == [] and out.blocked == ["authentication refused"]


def test_min_nodes_are_kept_without_demand() -> None:
    config = Config(**{**CONFIG.__dict__, "min_nodes": 2})
    out = plan(state(), [], config, T0)
    assert len(out.creates) == 2
    idle = [
        inst(f"j{i}", InstanceState.JOINED, since=-3500, worker_status="active", idle_since=at(-600))
        for i in range(2)
    ]
    out = plan(state(idle, [server("j0", -3500), server("j1", -3500)]), [], config, T0)
    assert out.drains == [] and out.creates == []


# -- scale down -------------------------------------------------------------------
@pytest.mark.parametrize(
    ("age", "idle_for", "billing", "drained"),
    [
        (3500, 120, 3600, True),  # idle, near the end of its paid hour
        (1800, 120, 3600, False),  # idle, but half an hour already paid for
        (3500, 30, 3600, False),  # not idle long enough
        (600, 120, None, True),  # time is free: no reason to wait
        (7100, 120, 3600, True),  # near the end of its second hour
    ],
)
def test_idle_nodes_drain_near_the_end_of_a_paid_hour(
    age: float, idle_for: float, billing: float | None, drained: bool
) -> None:
    config = Config(**{**CONFIG.__dict__, "billing_period_s": billing})
    node = inst("j1", InstanceState.JOINED, since=-age, worker_status="active", idle_since=at(-idle_for))
    out = plan(state([node], [server("j1", -age)]), [], config, T0)
    assert out.drains == (["j1"] if drained else [])


def test_a_busy_node_or_waiting_work_keeps_a_node() -> None:
    busy = inst("j1", InstanceState.JOINED, since=-3500, worker_status="active", idle_since=None)
    assert plan(state([busy], [server("j1", -3500)]), [], CONFIG, T0).drains == []
    idle = inst("j1", InstanceState.JOINED, since=-3500, worker_status="active", idle_since=at(-600))
    assert plan(state([idle], [server("j1", -3500)]), [need("a")], CONFIG, T0).drains == []


def test_a_drained_node_is_deleted_and_its_deletion_confirmed() -> None:
    left = inst("d1", InstanceState.DRAINING, worker_status="left")
    out = plan(state([left], [server("d1")]), [], CONFIG, T0)
    assert out.deletes == {"d1": "drained"}
    gone = inst("x1", InstanceState.DELETING)
    out = plan(state([gone], []), [], CONFIG, T0)
    assert out.moves == {"x1": (InstanceState.DELETED, "deletion confirmed")}


# -- failures and reconciliation ------------------------------------------------------
def test_a_create_whose_answer_was_lost_is_adopted_by_name_not_made_again() -> None:
    row = inst("r1", InstanceState.REQUESTED, server_id=None)
    out = plan(state([row], [server("r1")]), [need("a")], CONFIG, T0)
    assert out.adopt["r1"].id == "id-r1"
    assert out.creates == []  # its capacity is already counted as pending


def test_a_create_that_never_happened_fails_after_the_grace() -> None:
    row = inst("r1", InstanceState.REQUESTED, since=-200, server_id=None)
    out = plan(state([row], []), [], CONFIG, T0)
    assert out.moves == {"r1": (InstanceState.ALLOCATION_FAILED, "the server never appeared")}
    young = inst("r1", InstanceState.REQUESTED, since=-10, server_id=None)
    assert plan(state([young], []), [], CONFIG, T0).moves == {}


def test_an_unknown_server_is_deleted_after_the_grace_only() -> None:
    out = plan(state([], [server("stray", created=-60)]), [], CONFIG, T0)
    assert out.orphans == []
    out = plan(state([], [server("stray", created=-600)]), [], CONFIG, T0)
    assert [o.name for o in out.orphans] == ["stray"]


def test_a_server_that_vanished_ends_its_row() -> None:
    for st in (InstanceState.ALLOCATED, InstanceState.JOINED, InstanceState.DRAINING):
        out = plan(state([inst("v1", st, worker_status="active")], []), [], CONFIG, T0)
        assert out.moves["v1"][0] == InstanceState.DELETED and "vanished" in out.moves["v1"][1]


def test_nothing_is_reconciled_created_or_deleted_when_the_list_failed() -> None:
    rows = [inst("v1", InstanceState.JOINED, worker_status="active", idle_since=at(-9999), since=-3500)]
    out = plan(state(rows, servers=None), [need("a")], CONFIG, T0)
    assert out.moves == {} and out.creates == [] and out.drains == [] and out.orphans == []


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        (
            inst("a1", InstanceState.ALLOCATED, action_error="action_failed: boom"),
            ("delete", "creation failed"),
        ),
        (inst("a1", InstanceState.ALLOCATED, since=-700), ("move", InstanceState.JOIN_TIMEOUT)),
        (inst("a1", InstanceState.ALLOCATED, since=-100), None),
        (inst("a1", InstanceState.ALLOCATED, worker_status="active"), ("move", InstanceState.JOINED)),
        (inst("a1", InstanceState.JOIN_TIMEOUT), ("delete", "never joined")),
        (inst("a1", InstanceState.JOINED, worker_status="dead", worker_ended_at=at(-30)), None),
        (
            inst("a1", InstanceState.JOINED, worker_status="dead", worker_ended_at=at(-200)),
            ("delete", "dead"),
        ),
        (inst("a1", InstanceState.JOINED, worker_status="left"), ("delete", "left")),
    ],
)
def test_failed_nodes_end(row: InstanceRecord, expected: tuple | None) -> None:
    out = plan(state([row], [server("a1")]), [], CONFIG, T0)
    if expected is None:
        assert out.moves == {} and out.deletes == {}
    elif expected[0] == "delete":
        assert expected[1] in out.deletes["a1"]
    else:
        assert out.moves["a1"][0] == expected[1]
