"""Chaos on a real multi-node cluster on PostgreSQL: nothing is lost and
nothing completes twice. Slow; CI runs them (marker `slow`)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine

from rgrid.hashcache import sha256_file
from rgrid.local.procs import session_members, stop_session
from rgrid.transfer import upload_missing
from rgrid.wire import ObjectSpec, Status
from tests.chaos.conftest import Cluster, assert_exactly_once, retries_spent, wait_final
from tests.support.services import Postgres, S3Server, start_api, wait_until

pytestmark = pytest.mark.slow
HEARTBEAT_TIMEOUT_S = 10.0
WORKER_NODES = 2


@pytest.fixture(autouse=True)
def worker_nodes(cluster: Cluster) -> None:
    """Each scenario starts on two worker nodes, whatever the one before it
    took away, even when it failed half-way."""
    while len(cluster.workers) < WORKER_NODES:
        cluster.add_worker()


def running_on(client, execution_id: str) -> str:  # type: ignore[no-untyped-def]
    """The worker an execution's current attempt runs on, once it runs."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        attempts = client.get_execution(execution_id).attempts
        if attempts and attempts[-1].status == Status.RUNNING:
            return attempts[-1].worker
        time.sleep(0.2)
    raise AssertionError(f"{execution_id} did not start")


def _busy_worker(cluster: Cluster, client) -> str | None:  # type: ignore[no-untyped-def]
    busy = [w.id for w in client.workers().workers if w.id in cluster.workers and w.running > 0]
    return random.choice(busy) if busy else None


def test_worker_nodes_killed_three_times(cluster: Cluster) -> None:
    """100 jobs of 1-3 s while a worker node is SIGKILLed three times."""
    rng = random.Random(7)
    kills: list[tuple[str, float]] = []
    with cluster.client() as client:
        ids = cluster.submit(client, 100, (1.0, 3.0))

        def chaos() -> None:
            with cluster.client() as watcher:
                while len(kills) < 3:
                    time.sleep(rng.uniform(3.0, 7.0))
                    victim = _busy_worker(cluster, watcher)
                    if victim is None:
                        continue
                    kills.append((victim, cluster.crash(victim)))
                    cluster.add_worker()

        thread = threading.Thread(target=chaos)
        thread.start()
        thread.join(timeout=240)
        wait_final(client, ids, timeout=300)
        assert len(kills) == 3
        assert_exactly_once(cluster.database_url, client, ids)
        delays = []
        for victim, at in kills:
            lost = [
                a
                for i in ids
                for a in client.get_execution(i).attempts
                if a.worker == victim and a.failure_reason == "worker_lost"
            ]
            assert lost, f"no attempt was running on {victim}"
            delays += [a.finished_at.timestamp() - at for a in lost if a.finished_at]
        assert max(delays) <= HEARTBEAT_TIMEOUT_S + 2, delays
        print(
            f"\nkill -> requeue: median {sorted(delays)[len(delays) // 2]:.3f} s, "
            f"max {max(delays):.3f} s over {len(delays)} lost attempts"
        )


def test_server_killed_mid_batch_and_restarted(cluster: Cluster) -> None:
    with cluster.client() as client:
        ids = cluster.submit(client, 30, (2.0, 4.0), prefix="srv")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any(
            client.get_execution(i).status == Status.RUNNING for i in ids
        ):
            time.sleep(0.2)
    os.killpg(cluster.api.proc.pid, signal.SIGKILL)
    killed_at = time.time()
    cluster.restart_api()
    with cluster.client() as client:
        wait_final(client, ids, timeout=300)
        assert_exactly_once(cluster.database_url, client, ids)
        finished = max(
            view.finished_at.timestamp() for view in map(client.get_execution, ids) if view.finished_at
        )
        print(f"\nserver kill -> batch done: {finished - killed_at:.1f} s")


def test_two_servers_never_dispatch_twice(cluster: Cluster) -> None:
    second = start_api(
        cluster.root / "api2",
        cluster.database_url,
        cluster.s3,
        cluster.head,
        public_s3=cluster.s3.endpoint,
        extra_env={"RGRID_LEASE_S": "8", "RGRID_MONITOR_INTERVAL_S": "0.5"},
    )
    try:
        with cluster.client() as one, cluster.client(second) as two:
            ids = cluster.submit(one, 20, (0.5, 1.5), prefix="two-a")
            ids.update(cluster.submit(two, 20, (0.5, 1.5), prefix="two-b"))
            wait_final(one, ids, timeout=300)
            for i in ids:
                assert len(one.get_execution(i).attempts) == 1, i
            assert_exactly_once(cluster.database_url, one, ids)
    finally:
        second.proc.stop()


def test_stale_runner_cannot_overwrite_the_new_attempt(cluster: Cluster) -> None:
    """Partition a worker (SIGSTOP its agent: heartbeats stop, the raylet and
    the runner go on). The monitor requeues; the stale runner is fenced on its
    next call and kills its script; only the new attempt's result counts."""
    with cluster.client() as client:
        ids = cluster.submit(client, 1, (20.0, 20.0), prefix="stale")
        (execution_id,) = ids
        worker = running_on(client, execution_id)
        assert worker in cluster.workers
        agent = cluster.workers[worker]
        stopped_at = time.time()
        os.kill(agent.pid, signal.SIGSTOP)
        try:
            wait_final(client, ids, timeout=120)
        finally:
            os.kill(agent.pid, signal.SIGCONT)
        execution = client.get_execution(execution_id)
        assert [a.status for a in execution.attempts] == ["failed", "succeeded"]
        assert execution.attempts[0].failure_reason == "worker_lost"
        assert execution.attempts[1].worker != worker
        assert_exactly_once(cluster.database_url, client, ids)
        lost_at = execution.attempts[0].finished_at
        assert lost_at is not None
        requeue = lost_at.timestamp() - stopped_at
        assert requeue <= HEARTBEAT_TIMEOUT_S + 2
        print(f"\npartition -> requeue (heartbeat path): {requeue:.1f} s")
    cluster.workers.pop(worker).stop()


def _alive_in_ray(cluster: Cluster, worker_id: str) -> bool:
    """Whether Ray's GCS still counts the worker's node alive (asked from a
    child process, which presents the cluster's Ray token)."""
    code = (
        "import sys\nfrom rgrid_runner.ray_compat import alive_nodes\n"
        "print(bool(alive_nodes(sys.argv[1], sys.argv[2])))"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "RGRID_"))}
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(cluster.head.token_path))
    done = subprocess.run(
        [sys.executable, "-c", code, cluster.head.address, f"rgrid_worker_{worker_id}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout.strip() == "True"


def test_a_frozen_node_holds_up_no_other_work(cluster: Cluster) -> None:
    """Freeze a whole worker node (SIGSTOP on its agent, raylet and Ray
    workers: a hung machine). rgrid declares it dead on missed heartbeats
    and fences it; its frozen raylet never answers Ray's drain, and Ray's
    own health checks take about a minute to give up on it. Meanwhile the
    requeued attempt and jobs submitted after it run on the other node."""
    with cluster.client() as client:
        ids = cluster.submit(client, 1, (8.0, 8.0), prefix="frozen")
        (execution_id,) = ids
        worker = running_on(client, execution_id)
        assert worker in cluster.workers
        session = cluster.workers[worker].pid
        for pid in session_members(session):
            os.kill(pid, signal.SIGSTOP)
        try:
            wait_until(
                lambda: client.get_execution(execution_id).attempts[0].failure_reason == "worker_lost",
                60,
                "the frozen node's attempt to be requeued",
            )
            later = cluster.submit(client, 3, (0.5, 0.5), prefix="after-freeze")
            wait_final(client, {**ids, **later}, timeout=120)
            assert _alive_in_ray(cluster, worker), "Ray gave up on the node first: this proves nothing"
        finally:
            stop_session(session, grace_s=0, first=signal.SIGKILL)
            cluster.workers.pop(worker)
        first, *between, last = client.get_execution(execution_id).attempts
        assert (first.worker, first.failure_reason) == (worker, "worker_lost")
        assert last.status == Status.SUCCEEDED and last.worker != worker
        # Handed to Ray between the requeue and the fence, an attempt may
        # still be unstarted (Ray may even have placed it on the frozen node):
        # it was given back and submitted again, at no cost to the execution.
        assert all(a.status == Status.FAILED and a.started_at is None for a in between), between
        assert retries_spent(cluster.database_url, execution_id) == 1
        for other in later:
            assert client.get_execution(other).attempts[-1].worker != worker
        assert_exactly_once(cluster.database_url, client, {**ids, **later})
    cluster.add_worker()


def test_database_restarted_and_connections_killed(cluster: Cluster, postgres: Postgres) -> None:
    """pg_terminate_backend on every server connection during work, then a
    restart of PostgreSQL itself: the server reconnects, nothing is lost."""
    admin = create_engine(
        postgres.url.replace("postgresql://", "postgresql+psycopg://"), isolation_level="AUTOCOMMIT"
    )
    database = cluster.database_url.rsplit("/", 1)[1]
    with cluster.client() as client:
        ids = cluster.submit(client, 30, (1.0, 3.0), prefix="db")
        time.sleep(3)
        with admin.connect() as conn:
            killed = conn.exec_driver_sql(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = %(db)s AND pid <> pg_backend_pid()",
                {"db": database},
            ).scalar()
        admin.dispose()
        assert killed is not None and killed > 0
        time.sleep(3)
        postgres.restart()
        wait_final(client, ids, timeout=300)
        assert_exactly_once(cluster.database_url, client, ids)


def test_storage_restarted_mid_upload_and_mid_output(cluster: Cluster, s3: S3Server, tmp_path: Path) -> None:
    """Restart the S3 server while a large input goes up in parts and while
    runners upload outputs: transfers are retried or attempts requeued, and
    no half-written object is presented as an input or an output."""
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(40 * 1024 * 1024))
    sha = sha256_file(big)
    with cluster.client() as client:
        ids = cluster.submit(client, 30, (0.5, 2.0), prefix="s3")
        restart = threading.Timer(0.3, s3.restart)
        restart.start()
        sent = upload_missing(client, {sha: big}, {sha: big.stat().st_size}, lambda _t: lambda _n: None)
        restart.join()
        assert sent == big.stat().st_size
        assert not client.plan_uploads([ObjectSpec(sha256=sha, size=big.stat().st_size)]).missing
        time.sleep(1)
        s3.restart()
        wait_final(client, ids, timeout=300)
        assert_exactly_once(cluster.database_url, client, ids)


def test_graceful_stop_drains_the_node(cluster: Cluster) -> None:
    """SIGTERM to a node agent: the node takes no new work, what runs there
    finishes there, then the node leaves."""
    with cluster.client() as client:
        ids = cluster.submit(client, 1, (8.0, 8.0), prefix="drain")
        (execution_id,) = ids
        worker = running_on(client, execution_id)
        agent = cluster.workers.pop(worker)
        os.kill(agent.pid, signal.SIGTERM)

        def worker_status() -> str:
            return next(w.status for w in client.workers(include_ended=True).workers if w.id == worker)

        wait_until(lambda: worker_status() == "draining", 20, "the node to drain")
        later = cluster.submit(client, 4, (0.5, 0.5), prefix="during-drain")
        wait_final(client, {**ids, **later}, timeout=120)
        assert_exactly_once(cluster.database_url, client, {**ids, **later})
        assert [a.worker for a in client.get_execution(execution_id).attempts] == [worker]
        assert all(a.worker != worker for i in later for a in client.get_execution(i).attempts)
        wait_until(lambda: worker_status() == "left", 60, "the node to leave")
        wait_until(lambda: not session_members(agent.pid), 30, "the node's processes to end")


def test_the_ray_token_rotates_without_cutting_running_work(cluster: Cluster) -> None:
    """`rgrid server rotate-ray-token` on a busy grid: what runs finishes on
    its first attempt; what is submitted meanwhile waits, says why, and
    runs once the grid is on the new token; every node moves to it, and
    Ray refuses the old one."""
    old = cluster.head.token_path.read_text().strip()
    with cluster.client() as client:
        running = cluster.submit(client, 2, (8.0, 8.0), prefix="before-rotation")
        for execution_id in running:
            running_on(client, execution_id)
        rotation = subprocess.Popen(
            [sys.executable, "-m", "rgrid", "server", "rotate-ray-token"],
            env=cluster.api.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert rotation.stdout is not None
        started = rotation.stdout.readline()
        assert started.startswith("new Ray token"), started
        later = cluster.submit(client, 3, (0.5, 0.5), prefix="during-rotation")

        def waiting_for_the_token() -> bool:
            return all("Ray token" in (client.get_execution(i).waiting or "") for i in later)

        try:
            wait_until(waiting_for_the_token, 20, "the runs submitted meanwhile to wait for the rotation")
        except RuntimeError:
            seen = [(v.status, v.waiting) for v in map(client.get_execution, later)]
            raise AssertionError(f"{seen}; the rotation said {rotation.stdout.readline()!r}") from None
        assert all(client.get_execution(i).status == Status.QUEUED for i in later)
        out, err = rotation.communicate(timeout=240)
        assert rotation.returncode == 0, err
        assert "waiting for 2 running attempts to end" in out and "done" in out, out
        wait_final(client, {**running, **later}, timeout=180)
        assert_exactly_once(cluster.database_url, client, {**running, **later})
        for execution_id in running:
            assert len(client.get_execution(execution_id).attempts) == 1
            assert retries_spent(cluster.database_url, execution_id) == 0
    new = cluster.head.token_path.read_text().strip()
    assert new != old and len(new) == 64
    dashboard = f"{cluster.head.dashboard}/api/version"

    def answers(token: str) -> int:
        return httpx.get(dashboard, headers={"Authorization": f"Bearer {token}"}, timeout=10).status_code

    assert answers(new) == 200
    assert answers(old) in (401, 403)
