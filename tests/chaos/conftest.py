"""A real multi-node cluster on PostgreSQL for the chaos scenarios: an S3
server, a Ray head without CPUs (work lands on workers only), two worker
nodes (agent + raylet each, killable as a group) and the API server."""

from __future__ import annotations

import random
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sqlalchemy import create_engine

from rgrid.client import Client
from rgrid.config import Target
from rgrid.errors import RgridError
from rgrid.hashcache import sha256_file
from rgrid.local.procs import free_port, stop_session
from rgrid.transfer import upload_missing
from rgrid.wire import ExecutionCreate, InputFile, Resources, Status
from rgrid_api.db.engine import make_engine
from tests.support.services import (
    ApiServer,
    Postgres,
    Proc,
    RayHead,
    S3Server,
    start_api,
    start_ray,
    start_worker,
    wait_until,
)

JOB = """import os, sys, time
name, seconds = sys.argv[1], float(sys.argv[2])
print("start", name, flush=True)
time.sleep(seconds)
os.makedirs("out", exist_ok=True)
with open(f"out/{name}.txt", "w") as fh:
    fh.write(name)
print("done", name, flush=True)
"""
CHAOS_ENV = {"RGRID_LEASE_S": "8", "RGRID_MONITOR_INTERVAL_S": "0.5", "RGRID_HEARTBEAT_TIMEOUT_S": "10"}


@dataclass
class Cluster:
    root: Path
    s3: S3Server
    head: RayHead
    api: ApiServer
    api_port: int
    database_url: str
    workers: dict[str, Proc] = field(default_factory=dict)
    generation: int = 0

    def client(self, api: ApiServer | None = None) -> Client:
        server = api or self.api
        return Client(Target(server.url, server.api_key))

    def add_worker(self) -> str:
        self.generation += 1
        worker_id = f"chaos-w{self.generation}"
        self.workers[worker_id] = start_worker(self.root, worker_id, self.head, self.api.url)
        return worker_id

    def crash(self, worker_id: str) -> float:
        """SIGKILL every process of the node (agent, raylet, Ray workers): a node crash."""
        proc = self.workers.pop(worker_id)
        at = time.time()
        stop_session(proc.pid, grace_s=0, first=signal.SIGKILL)
        return at

    def restart_api(self, extra_env: dict[str, str] | None = None) -> None:
        self.api.proc.stop()
        self.api = start_api(
            self.root / "api",
            self.database_url,
            self.s3,
            self.head,
            public_s3=self.s3.endpoint,
            port=self.api_port,
            extra_env={**CHAOS_ENV, **(extra_env or {})},
        )

    def submit(
        self, client: Client, count: int, seconds: tuple[float, float], retries: int = 5, prefix: str = "job"
    ) -> dict[str, str]:
        return submit_jobs(client, self.root, count, seconds, retries, prefix)


def submit_jobs(
    client: Client,
    root: Path,
    count: int,
    seconds: tuple[float, float],
    retries: int = 5,
    prefix: str = "job",
) -> dict[str, str]:
    """Submit `count` jobs sleeping a random time, each writing out/<name>.txt;
    returns id -> name."""
    script = root / "chaos_job.py"
    script.write_text(JOB)
    sha = sha256_file(script)
    upload_missing(client, {sha: script}, {sha: script.stat().st_size}, lambda _t: lambda _n: None)
    rng = random.Random(count)
    ids = {}
    for i in range(count):
        name = f"{prefix}-{i}"
        body = ExecutionCreate(
            script=InputFile(sha256=sha, path="chaos_job.py"),
            args=[name, f"{rng.uniform(*seconds):.2f}"],
            retries=retries,
            resources=Resources(cpu=1, memory_mb=256, timeout_s=300),
        )
        ids[client.create_execution(body).id] = name
    return ids


def wait_final(client: Client, ids: dict[str, str], timeout: float) -> None:
    """Wait until every execution ended; the API may be briefly unavailable
    while a scenario restarts something under it."""

    def done() -> bool:
        try:
            return all(Status(client.get_execution(i).status).final for i in ids)
        except RgridError:
            return False

    wait_until(done, timeout, "all executions to end")


def assert_exactly_once(database_url: str, client: Client, ids: dict[str, str]) -> None:
    """Every execution succeeded once: one succeeded attempt, one output
    (written by that attempt) whose bytes are right."""
    engine = make_engine(database_url)
    with engine.connect() as conn:
        rows = conn.exec_driver_sql(
            "SELECT e.id, "
            " (SELECT count(*) FROM attempts a WHERE a.execution_id = e.id AND a.status = 'succeeded'),"
            " (SELECT count(*) FROM outputs o WHERE o.execution_id = e.id),"
            " (SELECT min(o.attempt) FROM outputs o WHERE o.execution_id = e.id),"
            " (SELECT a.number FROM attempts a WHERE a.execution_id = e.id AND a.status = 'succeeded')"
            " FROM executions e WHERE e.id = ANY(%(ids)s)",
            {"ids": list(ids)},
        ).all()
    engine.dispose()
    assert len(rows) == len(ids)
    for execution_id, succeeded, outputs, output_attempt, winning_attempt in rows:
        if (succeeded, outputs) != (1, 1):
            e = client.get_execution(execution_id)
            detail = [(a.number, a.worker, a.status, a.failure_reason) for a in e.attempts]
            logs = "".join(c.data for c in client.logs(execution_id).chunks)[-500:]
            raise AssertionError(f"{execution_id} {e.status} {e.failure_reason} {detail} {logs}")
        assert output_attempt == winning_attempt, execution_id
    for execution_id, name in ids.items():
        execution = client.get_execution(execution_id)
        assert execution.status == Status.SUCCEEDED, (execution_id, execution.failure_reason)
        (out,) = client.outputs(execution_id).outputs
        assert out.path == f"out/{name}.txt"
        assert client.storage.get(str(out.url)).content == name.encode()


def retries_spent(database_url: str, execution_id: str) -> int:
    """How many of its retries the execution spent: attempts lost through
    no fault of its own are not counted (the API does not show this)."""
    engine = make_engine(database_url)
    with engine.connect() as conn:
        spent = conn.exec_driver_sql(
            "SELECT lost_attempts FROM executions WHERE id = %(id)s", {"id": execution_id}
        ).scalar_one()
    engine.dispose()
    return int(spent)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, postgres: Postgres, s3: S3Server) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("chaos")
    admin = create_engine(
        postgres.url.replace("postgresql://", "postgresql+psycopg://"), isolation_level="AUTOCOMMIT"
    )
    name = f"chaos_{root.name.replace('-', '_')}"
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
    admin.dispose()
    database_url = postgres.url.rsplit("/", 1)[0] + f"/{name}"
    api_port = free_port()
    head = start_ray(root / "head", f"http://127.0.0.1:{api_port}", num_cpus=0)
    api = start_api(
        root / "api", database_url, s3, head, public_s3=s3.endpoint, port=api_port, extra_env=CHAOS_ENV
    )
    c = Cluster(root=root / "head", s3=s3, head=head, api=api, api_port=api_port, database_url=database_url)
    c.add_worker()
    c.add_worker()
    yield c
    for proc in c.workers.values():
        proc.stop()
    c.api.proc.stop()
    head.stop()
