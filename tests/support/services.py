"""Real services for the tests, each on free loopback ports in a temp dir:
SeaweedFS (S3), a Ray head, a private PostgreSQL, and rgrid API servers run
as subprocesses exactly as `rgrid server` runs in production."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from rgrid.local import components
from rgrid.local.procs import free_port, free_ports, spawn, stop_session

PG_BIN = Path("/usr/lib/postgresql/15/bin")


def wait_until(check: Callable[[], bool], timeout: float, what: str, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    tail = log.read_text()[-3000:] if log and log.exists() else ""
    raise RuntimeError(f"{what} did not come up in {timeout} s\n{tail}")


@dataclass
class Proc:
    pid: int
    log: Path
    argv: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    stop_signal: signal.Signals = signal.SIGTERM

    def stop(self) -> None:
        stop_session(self.pid, grace_s=10, first=self.stop_signal)

    def restart(self) -> None:
        """Stop and start the same command again (same ports, same data)."""
        self.stop()
        self.pid = spawn(self.argv, self.env, self.log, self.cwd or self.log.parent).pid


@dataclass
class S3Server:
    endpoint: str
    access_key: str
    secret_key: str
    proc: Proc
    ports: dict[str, int] = field(default_factory=dict)
    # The identity limited to rgrid's bucket that presigned URLs are signed with.
    presign_access_key: str = ""
    presign_secret_key: str = ""

    def restart(self) -> None:
        self.proc.restart()
        wait_until(lambda: components.s3_healthy(self.ports), 60, "SeaweedFS after restart", self.proc.log)


def start_s3(root: Path) -> S3Server:
    ports = dict(zip(components.S3_PORTS, free_ports(len(components.S3_PORTS)), strict=True))
    secrets = {
        "s3_access_key": "testaccess",
        "s3_secret_key": "testsecret-0123456789",
        "s3_presign_access_key": "testsigner",
        "s3_presign_secret_key": "testsigner-secret-0123456789",
    }
    root.mkdir(parents=True, exist_ok=True)
    launch = components.s3_launch(root, ports, secrets)
    log = root / "weed.log"
    proc = Proc(spawn(launch.argv, launch.env, log, root).pid, log, launch.argv, launch.env, root)
    wait_until(lambda: components.s3_healthy(ports), 60, "SeaweedFS", log)
    return S3Server(
        f"127.0.0.1:{ports['s3']}",
        secrets["s3_access_key"],
        secrets["s3_secret_key"],
        proc,
        ports,
        secrets["s3_presign_access_key"],
        secrets["s3_presign_secret_key"],
    )


@dataclass
class RayHead:
    address: str
    dashboard: str
    proc: Proc
    ports: dict[str, int] = field(default_factory=dict)
    temp_dir: Path | None = None
    # The cluster's Ray token: every Ray process of the test grid presents it.
    token_path: Path = Path()

    def stop(self) -> None:
        """Stop the head and remove Ray's temp dir (sessions, sockets, logs)."""
        self.proc.stop()
        if self.temp_dir is not None:
            shutil.rmtree(self.temp_dir, ignore_errors=True)


WORKER_TOKEN = "test-worker-token-" + os.urandom(8).hex()
HEAD_TOKEN = "test-head-token-" + os.urandom(8).hex()
NODE_SECRETS = {"worker_token": WORKER_TOKEN, "head_token": HEAD_TOKEN}


# The test grids share one Ray cluster among several API servers on
# loopback (SQLite, PostgreSQL, strict caps, a second server): their nodes
# run tickets from any of them.
TEST_NODE_ENV = {"RGRID_NODE_API_URLS": "http://127.0.0.1:*"}


def start_ray(
    root: Path, api_url: str, extra_env: dict[str, str] | None = None, num_cpus: int | None = None
) -> RayHead:
    """A Ray head whose node agent registers with the API at api_url (which
    may start later: the agent keeps trying)."""
    ports = dict(zip(components.RAY_PORTS, free_ports(len(components.RAY_PORTS)), strict=True))
    root.mkdir(parents=True, exist_ok=True)
    token = components.ensure_ray_token(root / "ray-token")
    launch = components.ray_launch(root, ports, root / "work", api_url, NODE_SECRETS, token, num_cpus)
    launch.env.update(TEST_NODE_ENV, **(extra_env or {}))
    log = root / "ray.log"
    proc = Proc(spawn(launch.argv, launch.env, log, root).pid, log)
    wait_until(lambda: components.ray_healthy(ports), 120, "Ray head", log)
    return RayHead(
        f"127.0.0.1:{ports['gcs']}",
        f"http://127.0.0.1:{ports['dashboard']}",
        proc,
        ports,
        components.ray_temp_dir(root),
        token,
    )


@dataclass
class Postgres:
    url: str
    proc: Proc
    datadir: Path
    ready: Callable[[], bool]

    def restart(self) -> None:
        self.proc.restart()
        wait_until(self.ready, 60, "PostgreSQL after restart", self.proc.log)

    def stop(self) -> None:
        self.proc.stop()
        shutil.rmtree(self.datadir.parent, ignore_errors=True)


def _pg_tool(name: str) -> str:
    path = PG_BIN / name
    return str(path) if path.exists() else shutil.which(name) or name


def postgres_available() -> bool:
    return Path(_pg_tool("postgres")).exists() or shutil.which("postgres") is not None


def _as_postgres_user() -> list[str]:
    """PostgreSQL refuses to run as root; drop to the postgres user then."""
    if os.geteuid() != 0:
        return []
    return ["setpriv", "--reuid=postgres", "--regid=postgres", "--clear-groups"]


def start_postgres() -> Postgres:
    root = Path(tempfile.mkdtemp(prefix="rgrid-pg-"))
    datadir = root / "data"
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres")
        os.chown(root, user.pw_uid, user.pw_gid)
    drop = _as_postgres_user()
    subprocess.run(
        [
            *drop,
            _pg_tool("initdb"),
            "-D",
            str(datadir),
            "-U",
            "rgrid",
            "--auth=trust",
            "--no-sync",
            "-E",
            "UTF8",
        ],
        check=True,
        capture_output=True,
    )
    port = free_port()
    log = root / "postgres.log"
    argv = [
        *drop,
        _pg_tool("postgres"),
        "-D",
        str(datadir),
        "-p",
        str(port),
        "-h",
        "127.0.0.1",
        "-k",
        str(root),
        "-c",
        "fsync=off",
        "-c",
        "max_connections=200",
    ]
    # SIGINT: PostgreSQL's fast shutdown (SIGTERM would wait for every client).
    proc = Proc(
        spawn(argv, dict(os.environ), log, root).pid, log, argv, dict(os.environ), root, signal.SIGINT
    )

    def ready() -> bool:
        r = subprocess.run([_pg_tool("pg_isready"), "-h", "127.0.0.1", "-p", str(port)], capture_output=True)
        return r.returncode == 0

    wait_until(ready, 60, "PostgreSQL", log)
    subprocess.run(
        [_pg_tool("createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "rgrid", "rgrid"],
        check=True,
        capture_output=True,
    )
    return Postgres(f"postgresql://rgrid@127.0.0.1:{port}/rgrid", proc, datadir, ready)


@dataclass
class ApiServer:
    url: str
    api_key: str
    env: dict[str, str]
    proc: Proc

    def create_key(self, owner: str, *options: str) -> str:
        """A key made with `rgrid server create-key` (options: --admin, caps)."""
        out = subprocess.run(
            [sys.executable, "-m", "rgrid", "server", "create-key", "--owner", owner, *options],
            env=self.env,
            check=True,
            capture_output=True,
            text=True,
        )
        return out.stdout.strip()


def start_api(
    root: Path,
    database_url: str,
    s3: S3Server,
    ray: RayHead,
    public_s3: str,
    extra_env: dict[str, str] | None = None,
    port: int | None = None,
) -> ApiServer:
    root.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    key = "rg_test_alice_" + os.urandom(8).hex()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RGRID_")}
    env.update(components.ray_env(ray.token_path))
    env.update(
        {
            "RGRID_DATABASE_URL": database_url,
            "RGRID_S3_ENDPOINT": s3.endpoint,
            "RGRID_S3_PUBLIC_ENDPOINT": public_s3,
            # Workers reach storage directly, clients through the fault proxy.
            "RGRID_S3_RUNNER_ENDPOINT": s3.endpoint,
            "RGRID_S3_ACCESS_KEY": s3.access_key,
            "RGRID_S3_SECRET_KEY": s3.secret_key,
            "RGRID_S3_PRESIGN_ACCESS_KEY": s3.presign_access_key,
            "RGRID_S3_PRESIGN_SECRET_KEY": s3.presign_secret_key,
            "RGRID_RAY_ADDRESS": ray.address,
            "RGRID_RUNNER_API_URL": f"http://127.0.0.1:{port}",
            "RGRID_RUNNER_SECRET": "test-runner-secret-" + os.urandom(8).hex(),
            "RGRID_WORKER_TOKEN": WORKER_TOKEN,
            "RGRID_HEAD_TOKEN": HEAD_TOKEN,
            "RGRID_BOOTSTRAP_API_KEY": key,
            "RGRID_BOOTSTRAP_OWNER": "alice",
            "RGRID_PORT": str(port),
            "RGRID_MULTIPART_THRESHOLD": str(6 * 1024 * 1024),
            "RGRID_MULTIPART_PART_SIZE": str(5 * 1024 * 1024),
            **(extra_env or {}),
        }
    )
    log = root / "api.log"
    proc = Proc(spawn([sys.executable, "-m", "rgrid", "server"], env, log, root).pid, log)
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        try:
            return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(healthy, 90, "rgrid API", log)
    return ApiServer(url, key, env, proc)


def start_worker(root: Path, worker_id: str, head: RayHead, api_url: str, num_cpus: int = 2) -> Proc:
    """An extra worker node (agent + raylet) joining the head; its agent
    leads its process group, so killing the group is a node crash."""
    ports = dict(zip(components.WORKER_PORTS, free_ports(len(components.WORKER_PORTS)), strict=True))
    launch = components.worker_launch(
        root,
        worker_id,
        ports,
        head.ports["gcs"],
        root / "work",
        api_url,
        NODE_SECRETS,
        head.token_path,
        num_cpus,
    )
    launch.env.update(TEST_NODE_ENV)
    log = root / f"{worker_id}.log"
    proc = Proc(spawn(launch.argv, launch.env, log, root).pid, log)
    wait_until(lambda: components.worker_healthy(ports), 90, f"worker {worker_id}", log)
    return proc
