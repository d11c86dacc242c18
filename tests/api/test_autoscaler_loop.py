"""The autoscaler's cycle against the fake Hetzner Cloud API (real hcloud
SDK, real HTTP on loopback) and a real migrated database."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from rgrid.wire import InstanceState, Status, WorkerRegistration
from rgrid_api.autoscaler.loop import Autoscaler, config_from
from rgrid_api.autoscaler.providers import make_provider, offered_runtimes
from rgrid_api.credentials import exchange, worker_for
from rgrid_api.db.models import Execution, Instance, InstanceTransition
from rgrid_api.notify import ChangeFeed
from rgrid_api.settings import Settings
from rgrid_api.workers import register
from rgrid_infra.provider import CLUSTER_LABEL
from tests.api.conftest import submit
from tests.support.fake_hcloud import TOKEN, FakeHcloud
from tests.support.memstorage import MemoryStorage


@pytest.fixture
def fake() -> Iterator[FakeHcloud]:
    with FakeHcloud() as f:
        yield f


def scaler(sessions: sessionmaker[Session], fake: FakeHcloud, **overrides: object) -> Autoscaler:
    fields: dict = dict(
        autoscaler_provider="hetzner",
        hcloud_token=TOKEN,
        hcloud_endpoint=fake.url,
        hcloud_runtimes="3.11",
        cluster_name="t",
        autoscaler_max_nodes=3,
        autoscaler_max_pending=3,
        autoscaler_max_creates_per_cycle=3,
        autoscaler_orphan_grace_s=60,
        autoscaler_join_timeout_s=600,
    )
    settings = Settings(**{**fields, **overrides})
    provider = make_provider(settings)
    assert provider is not None
    return Autoscaler(
        settings,
        sessions,
        ChangeFeed(),
        None,
        provider,
        config_from(settings, provider, offered_runtimes(settings)),
    )


def rows(session: Session) -> dict[str, str]:
    session.expire_all()
    found = {i.name: i.state for i in session.scalars(select(Instance))}
    session.rollback()  # SQLite: no transaction left open while the autoscaler writes
    return found


def queue(session: Session, n: int, cpu: float = 2.0) -> list[str]:
    ids = []
    for _ in range(n):
        e = submit(session, MemoryStorage(), owner=f"u{len(session.scalars(select(Execution.id)).all())}")
        e.cpu = cpu
        ids.append(e.id)
    session.commit()
    return ids


def test_demand_creates_servers_within_max_nodes_and_budget(
    sessions: sessionmaker[Session], session: Session, fake: FakeHcloud
) -> None:
    queue(session, 10)
    a = scaler(sessions, fake, autoscaler_budget_eur_per_hour=0.02)
    a.cycle()
    a.cycle()
    # cx23 costs 0.0072 €/h: two fit the budget of 0.02, a third would not.
    assert len(fake.servers) == 2
    assert set(rows(session).values()) == {InstanceState.ALLOCATED}
    assert all(s["labels"][CLUSTER_LABEL] == "t" for s in fake.servers.values())
    b = scaler(sessions, fake, autoscaler_budget_eur_per_hour=10)
    b.cycle()
    b.cycle()
    assert len(fake.servers) == 3  # max nodes


def test_no_capacity_in_one_location_falls_back_to_the_next_at_once(
    sessions: sessionmaker[Session], session: Session, fake: FakeHcloud
) -> None:
    queue(session, 1)
    fake.inject("POST", "/servers", 412, "resource_unavailable", match={"location": "fsn1"}, times=5)
    scaler(sessions, fake).cycle()
    assert [s["location"]["name"] for s in fake.servers.values()] == ["nbg1"]
    assert sorted(rows(session).values()) == [InstanceState.ALLOCATED, InstanceState.ALLOCATION_FAILED]


def test_429_pauses_every_call_until_the_reset_then_resumes(
    sessions: sessionmaker[Session], session: Session, fake: FakeHcloud
) -> None:
    queue(session, 1)
    a = scaler(sessions, fake)
    fake.throttle(2)
    a.cycle()
    assert a.paused_until >= fake.throttled_until - 1  # RateLimit-Reset, not a guess
    calls = len(fake.requests)
    out = a.cycle()
    assert len(fake.requests) == calls  # paused: not one call
    assert any("rate limited" in b for b in out.blocked)
    while time.time() < a.paused_until:  # the reset time comes
        time.sleep(0.1)
    a.cycle()
    assert len(fake.servers) == 1


def test_refused_credentials_disable_scale_up_and_say_so(
    sessions: sessionmaker[Session], session: Session, fake: FakeHcloud
) -> None:
    queue(session, 1)
    a = scaler(sessions, fake, hcloud_token="wrong")
    out = a.cycle()
    assert fake.servers == {} and a.held is not None and "credentials" in a.held
    out = a.cycle()
    assert any("credentials" in b for b in out.blocked)


def test_an_action_error_deletes_the_server(
    sessions: sessionmaker[Session], session: Session, fake: FakeHcloud
) -> None:
    queue(session, 1)
    a = scaler(sessions, fake, autoscaler_max_creates_per_cycle=1)
    a.cycle()
    (name,) = rows(session)
    # The fake decides at creation; fail that server's action after the fact.
    action = next(x for x in fake.actions.values() if x["resources"][0]["id"] == next(iter(fake.servers)))
    action.update(status="error", error={"code": "action_failed", "message": "boom"})
    a.cycle()
    assert rows(session)[name] in (InstanceState.DELETING, InstanceState.DELETED)
    # Deleted; the work still waiting got a new server.
    assert name not in [s["name"] for s in fake.servers.values()]


def test_a_timed_out_create_is_adopted_not_duplicated(
    sessions: sessionmaker[Session], session: Session, fake: FakeHcloud, monkeypatch: pytest.MonkeyPatch
) -> None:
    import rgrid_infra.hetzner as hz

    monkeypatch.setattr(hz, "TIMEOUT_S", (1.0, 0.3))
    queue(session, 1)
    fake.create_delay_s = 0.6
    a = scaler(sessions, fake)
    a.cycle()
    fake.create_delay_s = 0
    a.cycle()
    a.cycle()
    assert len(fake.servers) == 1
    assert list(rows(session).values()) == [InstanceState.ALLOCATED]


def test_an_orphan_from_a_crash_before_the_database_write_is_deleted_after_the_grace(
    sessions: sessionmaker[Session], session: Session, fake: FakeHcloud
) -> None:
    stray = fake.add_server("t-deadbeef", {CLUSTER_LABEL: "t", "rgrid-role": "worker"})
    a = scaler(sessions, fake)
    a.cycle()
    assert stray["id"] in fake.servers  # within the grace: its creator may still write its row
    stray["created"] = (datetime.now(UTC) - timedelta(minutes=5)).isoformat()
    a.cycle()
    assert stray["id"] not in fake.servers


def test_a_server_deleted_outside_rgrid_has_its_work_requeued(
    sessions: sessionmaker[Session], session: Session, fake: FakeHcloud
) -> None:
    from rgrid.wire import RunnerStart
    from rgrid_api.attempts import claim_queued, start_attempt

    (eid,) = queue(session, 1)
    a = scaler(sessions, fake)
    a.cycle()
    (name,) = rows(session)
    register(session, WorkerRegistration(id=name, host_name=name, resources={"CPU": 2}, runtimes=["python:3.11"],
                                         sandbox="bubblewrap", provider="hetzner", version="x"))  # fmt: skip
    session.commit()
    (claimed,) = claim_queued(session, 30)
    session.commit()
    start_attempt(
        session,
        eid,
        claimed.attempt,
        RunnerStart(worker="w", worker_id=name),
        30,
        trusted=True,
    )
    session.commit()
    a.cycle()
    assert rows(session)[name] == InstanceState.JOINED
    fake.remove_server(int(next(iter(fake.servers))))
    a.cycle()
    assert rows(session)[name] == InstanceState.DELETED
    session.expire_all()
    requeued = session.get(Execution, eid)
    assert requeued is not None and requeued.status == Status.QUEUED
    session.rollback()


def test_a_node_that_never_joins_is_deleted(
    sessions: sessionmaker[Session], session: Session, fake: FakeHcloud
) -> None:
    queue(session, 1)
    a = scaler(sessions, fake)
    a.cycle()
    (name,) = rows(session)
    a.cycle(datetime.now(UTC) + timedelta(seconds=700))
    a.cycle(datetime.now(UTC) + timedelta(seconds=701))
    assert rows(session)[name] in (InstanceState.DELETING, InstanceState.DELETED)
    assert name not in [s["name"] for s in fake.servers.values()]
    reasons = [
        t.reason
        for t in session.scalars(select(InstanceTransition).where(InstanceTransition.instance == name))
    ]
    assert any("no agent registered" in r for r in reasons)


def test_work_no_server_could_run_fails_at_once_with_a_reason(
    sessions: sessionmaker[Session], session: Session, fake: FakeHcloud
) -> None:
    (eid,) = queue(session, 1, cpu=64)
    scaler(sessions, fake).cycle()
    session.expire_all()
    e = session.get(Execution, eid)
    assert e is not None and e.status == Status.FAILED and e.failure_reason == "unschedulable"
    assert "64 CPU" in (e.failure_detail or "") and fake.servers == {}


def test_a_bootstrap_token_is_single_use_and_its_credential_dies_with_the_node(
    sessions: sessionmaker[Session], session: Session, fake: FakeHcloud
) -> None:
    queue(session, 1)
    a = scaler(sessions, fake)
    a.cycle()
    (server,) = fake.servers.values()
    token = next(line.split("=", 1)[1] for line in fake.user_data[server["id"]].split("\\n")
                 if line.startswith("RGRID_BOOTSTRAP_TOKEN="))  # fmt: skip
    granted = exchange(session, token)
    session.commit()
    assert granted is not None and granted[0] == server["name"]
    assert exchange(session, token) is None  # single use
    session.commit()
    assert worker_for(session, granted[1]) == server["name"]
    session.rollback()
    a.cycle(datetime.now(UTC) + timedelta(seconds=700))  # never joined: deleted
    session.expire_all()
    assert worker_for(session, granted[1]) is None


def test_with_two_servers_one_autoscaler_acts_and_the_other_takes_over(
    sessions: sessionmaker[Session], session: Session, fake: FakeHcloud
) -> None:
    queue(session, 1)
    first = scaler(sessions, fake, autoscaler_interval_s=0.1)
    second = scaler(sessions, fake, autoscaler_interval_s=0.1)
    first.start()
    second.start()
    try:
        deadline = time.monotonic() + 10
        while not (first.active.is_set() or second.active.is_set()):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        time.sleep(1.0)  # many cycles of both
        assert first.active.is_set() != second.active.is_set()
        assert len(fake.servers) == 1  # one create, not one per server
        leader, other = (first, second) if first.active.is_set() else (second, first)
        leader.stop()
        deadline = time.monotonic() + 10
        while not other.active.is_set():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert len(fake.servers) == 1
    finally:
        first.stop()
        second.stop()


def test_a_crash_between_the_create_call_and_the_database_write_is_adopted_not_duplicated(
    sessions: sessionmaker[Session], session: Session, fake: FakeHcloud, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rgrid_api.autoscaler import instances

    queue(session, 1)
    real_move = instances.move

    def crash_after_create(s, name, state, reason, **fields):  # type: ignore[no-untyped-def]
        if state == InstanceState.ALLOCATED:
            raise SystemExit("the server process died here")
        return real_move(s, name, state, reason, **fields)

    monkeypatch.setattr(instances, "move", crash_after_create)
    with pytest.raises(SystemExit):
        scaler(sessions, fake).cycle()
    monkeypatch.setattr(instances, "move", real_move)
    assert len(fake.servers) == 1 and list(rows(session).values()) == [InstanceState.REQUESTED]
    # The next autoscaler (another process) finds the server by its name.
    again = scaler(sessions, fake)
    again.cycle()
    again.cycle()
    assert len(fake.servers) == 1
    assert list(rows(session).values()) == [InstanceState.ALLOCATED]
