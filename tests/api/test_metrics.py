"""The metrics' bookkeeping on a real migrated database: a move is counted
once its transaction commits and never when it rolls back; the gauges are
read from the database; the keyless exporter serves the same text."""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.orm import Session, sessionmaker

from rgrid.wire import FailureReason, InstanceState, RunnerResult, RunnerStart, Status
from rgrid_api.attempts import attempt_lost, check_outputs, claim_queued, complete_attempt, start_attempt
from rgrid_api.autoscaler import instances
from rgrid_api.autoscaler.plan import Create
from rgrid_api.batches import cancel_batch
from rgrid_api.db.models import Execution
from rgrid_api.metrics import registry_for, serve_metrics, watch
from tests.api.conftest import LEASE_S, submit
from tests.api.test_batches import make_batch
from tests.support.memstorage import MemoryStorage


def test_moves_count_on_commit_and_never_on_rollback(
    sessions: sessionmaker[Session], storage: MemoryStorage
) -> None:
    watch(sessions)
    with sessions() as session:
        registry = registry_for(session.get_bind())  # type: ignore[arg-type]

    def counted(name: str, **labels: str) -> float:
        return registry.get_sample_value(name, labels) or 0.0

    before = counted("rgrid_executions_finished_total", status="failed", reason="exit_code")
    waits = counted("rgrid_execution_queue_wait_seconds_count")
    runs = counted("rgrid_execution_duration_seconds_count")
    with sessions() as session:
        execution_id = submit(session, storage, "alice").id
        (claimed,) = claim_queued(session, LEASE_S)
        session.commit()
        start_attempt(session, execution_id, 1, RunnerStart(worker="w"), LEASE_S, trusted=True)
        session.commit()
        row = session.get(Execution, execution_id)
        assert row is not None
        row.status = Status.FAILED  # a move that rolls back is not counted
        session.flush()
        session.rollback()
        assert counted("rgrid_executions_finished_total", status="failed", reason="exit_code") == before
        complete_attempt(
            session,
            execution_id,
            claimed.attempt,
            check_outputs(storage, execution_id, claimed.attempt, RunnerResult(exit_code=2, duration_s=1.0)),
        )
        session.commit()
    assert counted("rgrid_executions_finished_total", status="failed", reason="exit_code") == before + 1
    assert counted("rgrid_execution_queue_wait_seconds_count") == waits + 1
    assert counted("rgrid_execution_duration_seconds_count") == runs + 1


def test_the_exporter_serves_the_grid_gauges_without_a_key(
    sessions: sessionmaker[Session], storage: MemoryStorage
) -> None:
    with sessions() as session:
        for _ in range(3):
            submit(session, storage, "alice")
        engine = session.get_bind()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = serve_metrics(f"127.0.0.1:{port}", registry_for(engine))  # type: ignore[arg-type]
    assert server is not None
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    finally:
        server.shutdown()
        server.server_close()
    samples = {
        (s.name, tuple(s.labels.items())): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
    }
    assert samples[("rgrid_executions", (("state", "queued"),))] == 3
    assert samples[("rgrid_cost_eur_total", ())] == 0


def test_the_shipped_dashboard_graphs_only_metrics_rgrid_exports(sessions: sessionmaker[Session]) -> None:
    dashboard = json.loads(
        (Path(__file__).parents[2] / "infra" / "grafana" / "rgrid-dashboard.json").read_text()
    )
    with sessions() as session:
        families = {family.name for family in registry_for(session.get_bind()).collect()}  # type: ignore[arg-type]
    graphed = {
        re.sub(r"_(bucket|count|sum|total)$", "", name)
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"\brgrid_[a-z_]+", target["expr"])
    }
    assert graphed and graphed <= families, graphed - families
    titles = " ".join(panel["title"] for panel in dashboard["panels"]).lower()
    for watched in ("queue wait", "throughput", "failures by reason", "nodes by state", "€ per hour"):
        assert watched in titles


def test_every_way_a_run_or_a_server_ends_is_counted(
    sessions: sessionmaker[Session], storage: MemoryStorage
) -> None:
    """A batch's queued runs cancelled in one statement, an attempt lost, a
    server that failed or never joined, one that joined: each moves its
    metric by exactly one event."""
    watch(sessions)
    with sessions() as session:
        registry = registry_for(session.get_bind())  # type: ignore[arg-type]

    def counted(name: str, **labels: str) -> float:
        return registry.get_sample_value(name, labels) or 0.0

    before = {
        "cancelled": counted("rgrid_executions_finished_total", status="cancelled", reason="cancelled"),
        "lost": counted("rgrid_attempts_lost_total"),
        "limit": counted("rgrid_autoscaler_create_failures_total", reason="limit"),
        "never": counted("rgrid_autoscaler_create_failures_total", reason="join_timeout"),
        "joined": counted("rgrid_autoscaler_join_seconds_count"),
    }
    with sessions() as session:
        batch = make_batch(session, storage, 3)
        cancel_batch(session, "alice", batch.id)
        session.commit()
        lost = submit(session, storage, "alice", retries=1)
        (claimed,) = claim_queued(session, LEASE_S)
        session.commit()
        assert attempt_lost(session, lost.id, claimed.attempt, FailureReason.WORKER_LOST)
        session.commit()
        create = Create(server_type="cx22", location="fsn1", price=0.01, cpus=2, memory_mb=4096)
        for name in ("node-a", "node-b", "node-c"):
            instances.add(session, name, "hetzner", create, "queued work")
        session.commit()
        instances.move(session, "node-a", InstanceState.ALLOCATION_FAILED, "limit: server limit exceeded")
        for name in ("node-b", "node-c"):
            instances.move(session, name, InstanceState.ALLOCATED, "the server exists")
        instances.move(session, "node-b", InstanceState.JOIN_TIMEOUT, "its agent never registered")
        instances.move(session, "node-c", InstanceState.JOINED, "its agent registered")
        session.commit()
    assert (
        counted("rgrid_executions_finished_total", status="cancelled", reason="cancelled")
        == before["cancelled"] + 3
    )
    assert counted("rgrid_attempts_lost_total") == before["lost"] + 1
    assert counted("rgrid_autoscaler_create_failures_total", reason="limit") == before["limit"] + 1
    assert counted("rgrid_autoscaler_create_failures_total", reason="join_timeout") == before["never"] + 1
    assert counted("rgrid_autoscaler_join_seconds_count") == before["joined"] + 1
    assert counted("rgrid_autoscaler_nodes", state="joined") == 1
    assert counted("rgrid_cost_eur_total") > 0  # node-b and node-c exist; node-a never did
