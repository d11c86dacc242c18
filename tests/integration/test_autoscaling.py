"""Autoscaling end to end on the real local grid: real nodes (agent and
raylet) appear for queued work, run it, and go when idle (on SQLite); the
same through the Hetzner provider against the fake Hetzner API, whose boot
hook starts a real local node from each server's own user data (on
PostgreSQL). The autoscaler's decisions on both databases are also covered
by tests/api and tests/autoscaler."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine

from rgrid.client import Client
from rgrid.config import Target
from rgrid.local import nodes
from rgrid.local.components import WORKER_PORTS, base_env, node_argv, ray_env, ray_temp_dir
from rgrid.local.grid import LocalGrid
from rgrid.local.procs import free_ports, spawn, stop_session
from rgrid.wire import Status
from tests.conftest import run_cli
from tests.support.fake_hcloud import TOKEN, FakeHcloud, _type

SLEEPY = "import sys, time\ntime.sleep(float(sys.argv[1]))\nprint('slept', sys.argv[1])\n"


def postgres_database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh database on the test PostgreSQL server."""
    pg = request.getfixturevalue("postgres")
    name = f"autoscale_{tmp_path.name.replace('-', '_')}"[:60]
    admin = create_engine(
        pg.url.replace("postgresql://", "postgresql+psycopg://"), isolation_level="AUTOCOMMIT"
    )
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
    admin.dispose()
    return pg.url.rsplit("/", 1)[0] + f"/{name}"


def wait_for(what: str, check: Callable[[], bool], timeout: float, every: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(every)


class Watch:
    """Samples the autoscaler's nodes in a thread: the most ever seen."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.most = 0
        self.states: list[dict[str, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Watch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            try:
                status = self.client.autoscaler()
            except Exception:  # noqa: BLE001 - the API restarting is not this test's subject
                continue
            live = [n for n in status.nodes if n.state not in ("deleting", "deleted")]
            self.most = max(self.most, len(live))
            self.states.append({n.name: n.state for n in status.nodes})


def grid_client(env: dict[str, str]) -> Client:
    target = LocalGrid(Path(env["RGRID_HOME"])).target()
    return Client(Target(target.api_url, target.api_key))


def submit(project: Path, env: dict[str, str], seconds: float) -> str:
    result = run_cli(["run", "-d", "--json", "sleepy.py", str(seconds)], project, env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["id"]


def all_done(client: Client, ids: list[str]) -> bool:
    return all(Status(client.get_execution(i).status).final for i in ids)


def test_local_nodes_scale_from_zero_to_max_and_back_to_zero(
    tmp_path: Path, local_env: dict[str, str]
) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "sleepy.py").write_text(SLEEPY)
    env = {**local_env, "RGRID_AUTOSCALER_IDLE_S": "4"}
    up = ["local", "up", "--max-workers", "2"]
    assert run_cli(up, project, env, timeout=240).returncode == 0
    with grid_client(env) as client:
        assert client.autoscaler().nodes == []  # zero nodes until there is work
        with Watch(client) as watch:
            ids = [submit(project, env, 3) for _ in range(6)]
            wait_for("the burst to finish", lambda: all_done(client, ids), 240, every=0.5)
            assert {client.get_execution(i).status for i in ids} == {Status.SUCCEEDED}
            # A node draining: work arriving now is not lost.
            wait_for(
                "a drain", lambda: any("draining" in s.values() for s in watch.states[-3:]), 60, every=0.05
            )
            late = submit(project, env, 0)
            wait_for("the late job", lambda: all_done(client, [late]), 180, every=0.5)
            assert client.get_execution(late).status == Status.SUCCEEDED
            wait_for("scale to zero", lambda: client.autoscaler().nodes == [], 120, every=0.5)
        # Never more than the maximum, and the maximum was used.
        assert watch.most == 2
    assert not [n for n in nodes.records(Path(env["RGRID_HOME"]) / "local" / "nodes") if n["alive"]]
    status = run_cli(["autoscaler", "status", "--json"], project, env)
    assert json.loads(status.stdout)["provider"] == "local"


class LocalBoot:
    """The fake Hetzner API's boot hook: a real local node started from the
    server's own user data (its API URL and single-use bootstrap token)."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.dir = home / "hcloud-nodes"
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self.user_data: list[str] = []

    def boot(self, server: dict, user_data: str) -> None:
        self.user_data.append(user_data)
        doc = json.loads(user_data.removeprefix("#cloud-config\n"))
        node_env = next(f["content"] for f in doc["write_files"] if f["path"] == "/etc/rgrid/node.env")
        settings = dict(line.split("=", 1) for line in node_env.splitlines() if "=" in line)
        own = self.dir / server["name"]
        ports = dict(zip(WORKER_PORTS, free_ports(len(WORKER_PORTS)), strict=True))
        cores = server["server_type"]["cores"]
        argv = node_argv(ray_temp_dir(self.home), server["name"], ports, [f"--num-cpus={cores}"])
        env = base_env()
        env.update(ray_env(own / "ray-token"))
        env.update(
            RGRID_API_URL=settings["RGRID_API_URL"],
            RGRID_BOOTSTRAP_TOKEN=settings["RGRID_BOOTSTRAP_TOKEN"],
            RGRID_CREDENTIAL_FILE=str(own / "credential.json"),
            RGRID_WORK_ROOT=str(self.home / "local" / "work"),
        )
        self.procs[server["id"]] = spawn(argv, env, self.dir / f"{server['name']}.log", self.dir)

    def halt(self, server: dict) -> None:
        proc = self.procs.pop(server["id"], None)
        if proc is not None:
            stop_session(proc.pid)

    def stop_all(self) -> None:
        for sid in list(self.procs):
            self.halt({"id": sid})


@pytest.fixture
def hetzner(local_env: dict[str, str]) -> Iterator[tuple[FakeHcloud, LocalBoot]]:
    booter = LocalBoot(Path(local_env["RGRID_HOME"]))
    types = [_type(1, "cx23", 2, 4, {"fsn1": 0.0072, "nbg1": 0.0072})]
    with FakeHcloud(latency_s=0.02, boot=booter.boot, halt=booter.halt, server_types=types) as fake:
        yield fake, booter
        booter.stop_all()
    shutil.rmtree(booter.dir, ignore_errors=True)


def test_hetzner_servers_join_through_their_user_data_and_run_real_jobs(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    local_env: dict[str, str],
    hetzner: tuple[FakeHcloud, LocalBoot],
) -> None:
    fake, booter = hetzner
    project = tmp_path / "project"
    project.mkdir()
    (project / "sleepy.py").write_text(SLEEPY)
    # No capacity in fsn1: the autoscaler falls back to nbg1.
    fake.inject("POST", "/servers", 412, "resource_unavailable", match={"location": "fsn1"}, times=100)
    env = {
        **local_env,
        "RGRID_AUTOSCALER_PROVIDER": "hetzner",
        "RGRID_HCLOUD_TOKEN": TOKEN,
        "RGRID_HCLOUD_ENDPOINT": fake.url,
        "RGRID_HCLOUD_SERVER_TYPES": "cx23",
        "RGRID_HCLOUD_RUNTIMES": "3.11",
        "RGRID_AUTOSCALER_IDLE_S": "3",
        "RGRID_CLUSTER_NAME": "e2e",
    }
    up = ["local", "up", "--max-workers", "2", "--database-url", postgres_database(request, tmp_path)]
    assert run_cli(up, project, env, timeout=240).returncode == 0
    with grid_client(env) as client:
        ids = [submit(project, env, 1) for _ in range(3)]
        wait_for("the jobs", lambda: all_done(client, ids), 240, every=0.5)
        assert {client.get_execution(i).status for i in ids} == {Status.SUCCEEDED}
        assert fake.calls("POST", "/servers") >= 1
        assert {s["location"]["name"] for s in fake.servers.values()} <= {"nbg1"}
        workers = run_cli(["workers", "--json"], project, env)
        listed = [w for w in json.loads(workers.stdout)["workers"] if w["server_type"] == "cx23"]
        assert listed and all(w["price_eur_per_hour"] == pytest.approx(0.0072) for w in listed)
        cost = json.loads(run_cli(["status", ids[0], "--json"], project, env).stdout)["cost_eur"]
        assert cost is not None and cost > 0
        # Idle: drained at the end of the "paid hour" is not due yet on
        # Hetzner, so the servers stay; the user data never held a secret.
    for data in booter.user_data:
        assert "RGRID_WORKER_TOKEN=" not in data and TOKEN not in data and "RAY_AUTH_TOKEN=" not in data
