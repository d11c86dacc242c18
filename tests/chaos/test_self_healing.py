"""The grid heals itself: on `rgrid local up --workers 2` backed by
PostgreSQL, the Ray head or the API is SIGKILLed mid-batch and nobody types
a command. The local grid's supervisor restarts what died, the agents and
the API's Ray driver follow the new head, and every execution succeeds
exactly once. Slow; CI runs them (marker `slow`).

Timings are printed (and collected by bench/bench_self_healing.py), never
asserted: this machine is shared.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import create_engine

from rgrid.client import Client
from rgrid.local.components import ray_temp_dir
from rgrid.local.grid import LocalGrid
from rgrid.local.procs import stop_session
from rgrid.local.state import Piece
from rgrid.restarts import pause_before_restart
from rgrid.wire import Status
from tests.chaos.conftest import assert_exactly_once, submit_jobs, wait_final
from tests.conftest import run_cli
from tests.support.services import Postgres, wait_until

pytestmark = pytest.mark.slow


@dataclass
class SupervisedGrid:
    home: Path
    env: dict[str, str]
    database_url: str
    grid: LocalGrid

    def client(self) -> Client:
        return Client(self.grid.target())

    def piece(self, name: str) -> Piece:
        return self.grid.read_state().pieces[name]

    def pid(self, name: str) -> int:
        """The running piece's process (its session leader)."""
        pid = self.piece(name).pid
        assert pid is not None, f"{name} is not running"
        return pid

    def kill(self, name: str) -> float:
        """SIGKILL every process of one piece (its whole session)."""
        pid = self.pid(name)
        at = time.time()
        stop_session(pid, grace_s=0, first=signal.SIGKILL)
        return at

    def wait_restarted(self, name: str, old_pid: int) -> None:
        def restarted() -> bool:
            pid = self.grid.read_state().pid_of(name)
            return bool(pid) and pid != old_pid

        wait_until(restarted, 120, f"the supervisor to restart {name}", self.grid.log_path("supervisor"))


@pytest.fixture
def supervised(tmp_path: Path, postgres: Postgres) -> Iterator[SupervisedGrid]:
    admin = create_engine(
        postgres.url.replace("postgresql://", "postgresql+psycopg://"), isolation_level="AUTOCOMMIT"
    )
    name = f"heal_{tmp_path.name.replace('-', '_')}".lower()
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
    admin.dispose()
    database_url = postgres.url.rsplit("/", 1)[0] + f"/{name}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RGRID_")}
    env["RGRID_HOME"] = str(tmp_path / "home")
    up = run_cli(
        ["local", "up", "--workers", "2", f"--database-url={database_url}"], tmp_path, env, timeout=300
    )
    assert up.returncode == 0, up.stderr
    home = Path(env["RGRID_HOME"])
    yield SupervisedGrid(home, env, database_url, LocalGrid(home))
    run_cli(["local", "down"], tmp_path, env, timeout=120)
    shutil.rmtree(ray_temp_dir(home), ignore_errors=True)


@dataclass
class Recovery:
    ids: dict[str, str]
    kills: list[float]
    first: float  # last kill -> first completion after it
    first_requeued: float  # last kill -> first completion of a requeued execution
    done: float  # last kill -> whole batch done

    def summary(self) -> str:
        return (
            f"first completion after {self.first:.1f} s, first requeued one after "
            f"{self.first_requeued:.1f} s, batch done after {self.done:.1f} s"
        )


def run_batch_through(grid: SupervisedGrid, tmp_path: Path, kill: list[str], count: int = 16) -> Recovery:
    """Submit a batch, kill the named pieces one after another mid-batch
    (each once the supervisor restarted the previous one), and wait for the
    batch."""
    with grid.client() as client:
        ids = submit_jobs(client, tmp_path, count, (2.0, 4.0), retries=5, prefix="heal")
        wait_until(
            lambda: sum(client.get_execution(i).status == Status.SUCCEEDED for i in ids) >= 2,
            120,
            "the batch to get going",
        )
        kills = []
        for name in kill:
            old = grid.pid(name)
            kills.append(grid.kill(name))
            grid.wait_restarted(name, old)
        wait_final(client, ids, timeout=300)
        done = time.time()
        final = [client.get_execution(i) for i in ids]
    last = kills[-1]
    ended = [(e.finished_at.timestamp() - last, len(e.attempts) > 1) for e in final if e.finished_at]
    after = sorted(t for t, _ in ended if t > 0)
    requeued = sorted(t for t, again in ended if again)
    return Recovery(ids, kills, after[0] if after else 0.0, requeued[0] if requeued else 0.0, done - last)


def test_head_killed_mid_batch(supervised: SupervisedGrid, tmp_path: Path) -> None:
    """SIGKILL the Ray head node mid-batch: the API stays up, the head comes
    back on new ports, both worker nodes rejoin it, the driver reconnects,
    and every execution succeeds exactly once with its own outputs."""
    api_pid = supervised.piece("api").pid
    r = run_batch_through(supervised, tmp_path, ["ray"])
    with supervised.client() as client:
        assert_exactly_once(supervised.database_url, client, r.ids)
        workers = {w.id: w for w in client.workers().workers}
    assert supervised.piece("api").pid == api_pid, "the API must survive the loss of Ray"
    assert supervised.piece("ray").restarts == 1
    assert "SIGKILL" in (supervised.piece("ray").last_reason or "")
    assert set(workers) == {"local-head", "local-worker-1", "local-worker-2"}
    assert all(w.status == "active" for w in workers.values())
    print(f"\nhead kill: {r.summary()}")


def test_api_killed_mid_batch(supervised: SupervisedGrid, tmp_path: Path) -> None:
    """SIGKILL the API server (and its Ray driver) mid-batch; no test code
    restarts it. The supervisor does; attempts its driver held are given
    back once their leases run out; nothing is lost or duplicated."""
    r = run_batch_through(supervised, tmp_path, ["api"])
    with supervised.client() as client:
        assert_exactly_once(supervised.database_url, client, r.ids)
    status = json.loads(run_cli(["local", "status", "--json"], tmp_path, supervised.env).stdout)
    api = next(p for p in status["pieces"] if p["name"] == "api")
    assert (api["state"], api["restarts"]) == ("running", 1)
    assert "SIGKILL" in api["last_reason"]
    print(f"\nAPI kill: {r.summary()}")


def test_head_killed_twice_within_a_minute(supervised: SupervisedGrid, tmp_path: Path) -> None:
    """Two head crashes in a row: the second restart waits the schedule's
    pause (not the first one's zero, not the cap), and the grid converges."""
    r = run_batch_through(supervised, tmp_path, ["ray", "ray"])
    assert r.kills[1] - r.kills[0] < 60
    with supervised.client() as client:
        assert_exactly_once(supervised.database_url, client, r.ids)
    ray = supervised.piece("ray")
    assert ray.started_at is not None and ray.last_crash_at is not None
    assert ray.restarts == 2
    assert ray.next_start_in_s == pause_before_restart(2)
    # The backoff was honoured: the head came back no sooner than its pause.
    assert ray.started_at >= ray.last_crash_at + pause_before_restart(2)
    down = ray.started_at - r.kills[1]
    print(
        f"\nhead killed twice: second restart {down:.1f} s after the kill "
        f"(pause {pause_before_restart(2):.0f} s); {r.summary()}"
    )
