"""Session-wide real services. Expensive pieces (S3 server, Ray head,
PostgreSQL, API servers) start once per test session and are shared.

Tests that take the `api` fixture run once against an API on SQLite and once
against an API on PostgreSQL. Without PostgreSQL binaries the Postgres
variant is skipped locally; with RGRID_REQUIRE_POSTGRES=1 (CI) it fails."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rgrid.client import Client
from rgrid.config import Target
from rgrid.local.procs import free_port
from tests.support.s3proxy import S3Proxy
from tests.support.services import (
    ApiServer,
    Postgres,
    RayHead,
    S3Server,
    postgres_available,
    start_api,
    start_postgres,
    start_ray,
    start_s3,
)

REQUIRE_POSTGRES = os.environ.get("RGRID_REQUIRE_POSTGRES") == "1"
# Tests in these rooms start real services (Ray, S3, PostgreSQL, API
# servers) or run chaos scenarios: `-m "not slow"` leaves them out.
SLOW_ROOMS = frozenset({"integration", "chaos"})
# A test in any room that starts one of these servers is slow too: the fast
# loop starts no server at all.
SERVER_FIXTURES = frozenset({"s3", "s3_proxy", "ray_head", "postgres", "api", "client", "rgrid_env"})


def pytest_configure(config: pytest.Config) -> None:
    """A shell that starts the tests in the background (`bash .ci/run &`)
    makes them ignore SIGINT, and an ignored signal stays ignored through
    exec: the Ctrl+C tests would press it on a CLI that cannot hear it. A
    handler here is reset to the default in every child, as in a terminal."""
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if SLOW_ROOMS & set(item.path.parts) or SERVER_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def services_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("services")


@pytest.fixture(scope="session")
def s3(services_root: Path) -> Iterator[S3Server]:
    server = start_s3(services_root / "s3")
    yield server
    server.proc.stop()


@pytest.fixture(scope="session")
def s3_proxy(s3: S3Server) -> Iterator[S3Proxy]:
    proxy = S3Proxy(s3.ports["s3"])
    yield proxy
    proxy.close()


# Worker caps small enough for the tests to reach, and runtimes configured
# explicitly: 3.11 and 3.12 are offered, 3.13 is allowed but not offered.
WORKER_ENV = {
    "RGRID_MAX_PIDS": "128",
    "RGRID_MAX_OUTPUT_BYTES": str(8 * 1024 * 1024),
    "RGRID_MAX_LOG_BYTES": str(1024 * 1024),
    "RGRID_MAX_WORKDIR_BYTES": str(64 * 1024 * 1024),
    "RGRID_MAX_WORKDIR_INODES": "5000",
}


def _worker_env() -> dict[str, str]:
    from rgrid_runner.runtimes import detect

    found = detect()
    offered = [f"{r}={found[r].executable}" for r in ("python:3.11", "python:3.12") if r in found]
    return {**WORKER_ENV, "RGRID_RUNTIMES": ",".join(offered)}


@pytest.fixture(scope="session")
def sqlite_api_port() -> int:
    """Known before the Ray head starts: the head's node agent registers there."""
    return free_port()


@pytest.fixture(scope="session")
def ray_head(services_root: Path, sqlite_api_port: int) -> Iterator[RayHead]:
    head = start_ray(services_root / "ray", f"http://127.0.0.1:{sqlite_api_port}", _worker_env())
    yield head
    head.stop()


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    if not postgres_available():
        message = "PostgreSQL binaries not found (install postgresql-15)"
        if REQUIRE_POSTGRES:
            pytest.fail(message)
        pytest.skip(message)
    pg = start_postgres()
    yield pg
    pg.stop()


def _database_url(request: pytest.FixtureRequest, backend: str, root: Path) -> str:
    if backend == "postgres":
        return request.getfixturevalue("postgres").url
    return f"sqlite:///{root / 'rgrid.db'}"


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
def api(
    request: pytest.FixtureRequest,
    services_root: Path,
    s3: S3Server,
    s3_proxy: S3Proxy,
    ray_head: RayHead,
    sqlite_api_port: int,
) -> Iterator[ApiServer]:
    backend = request.param
    root = services_root / f"api-{backend}"
    root.mkdir(exist_ok=True)
    server = start_api(
        root,
        _database_url(request, backend, root),
        s3,
        ray_head,
        public_s3=f"127.0.0.1:{s3_proxy.port}",
        port=sqlite_api_port if backend == "sqlite" else None,
    )
    yield server
    server.proc.stop()


@pytest.fixture
def client(api: ApiServer) -> Iterator[Client]:
    with Client(Target(api.url, api.api_key)) as c:
        yield c


@pytest.fixture
def rgrid_env(api: ApiServer, tmp_path: Path) -> dict[str, str]:
    """Environment for running the rgrid CLI against the test API."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RGRID_")}
    env.update(RGRID_HOME=str(tmp_path / "home"), RGRID_API_URL=api.url, RGRID_API_KEY=api.api_key)
    return env


def run_cli(
    args: list[str], cwd: Path, env: dict[str, str], timeout: float = 120, **kwargs: Any
) -> subprocess.CompletedProcess[str]:
    """Run the rgrid CLI as a user would: a separate process."""
    return subprocess.run(
        [sys.executable, "-m", "rgrid", *args],
        cwd=cwd,
        env=env,
        text=True,
        capture_output=True,
        timeout=timeout,
        **kwargs,
    )
