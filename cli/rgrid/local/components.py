"""The pieces of the embedded grid: how each is started and how its health
is checked. Everything binds to 127.0.0.1 on ports picked at first start."""

from __future__ import annotations

import hashlib
import http.client
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from secrets import token_hex

from rgrid.config import write_private, write_private_text
from rgrid.local.procs import free_ports, port_open

RAY_PORTS = ("gcs", "dashboard", "client", "agent_listen", "agent_grpc", "metrics", "runtime_env_agent")
S3_PORTS = ("s3", "s3_grpc", "master", "master_grpc", "volume", "volume_grpc", "filer", "filer_grpc")
API_PORTS = ("api",)
WORKER_PORTS = ("agent_listen", "agent_grpc", "metrics", "runtime_env_agent")


def venv_bin(name: str) -> str:
    """A tool installed beside this interpreter (ray, weed)."""
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name


def ray_temp_dir(home: Path) -> Path:
    """Ray's socket paths must stay short, so its temp dir lives under /tmp,
    named after RGRID_HOME so that two homes never share one."""
    digest = hashlib.sha256(str(home.resolve()).encode()).hexdigest()[:10]
    return Path("/tmp") / f"rgrid-{digest}"


@dataclass(frozen=True)
class Launch:
    argv: list[str]
    env: dict[str, str]


def base_env() -> dict[str, str]:
    """The environment every process of the grid starts from: the user's
    RGRID_* settings (a remote API, a key) are not theirs."""
    env = dict(os.environ)
    for key in [k for k in env if k.startswith("RGRID_") and k != "RGRID_HOME"]:
        env.pop(key)
    return env


S3_BUCKET = "rgrid"


def s3_launch(local_dir: Path, ports: dict[str, int], secrets: dict[str, str]) -> Launch:
    """SeaweedFS with two identities: the API's own, and the one presigned
    URLs are signed with, which may only read and write rgrid's bucket."""
    config = local_dir / "s3-identities.json"
    identities = {
        "identities": [
            {
                "name": "rgrid",
                "credentials": [
                    {"accessKey": secrets["s3_access_key"], "secretKey": secrets["s3_secret_key"]}
                ],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"],
            },
            {
                "name": "rgrid-presign",
                "credentials": [
                    {
                        "accessKey": secrets["s3_presign_access_key"],
                        "secretKey": secrets["s3_presign_secret_key"],
                    }
                ],
                "actions": [f"Read:{S3_BUCKET}", f"Write:{S3_BUCKET}"],
            },
        ]
    }
    write_private(config, identities)
    data = local_dir / "s3"
    data.mkdir(parents=True, exist_ok=True)
    p = ports
    argv = [
        venv_bin("weed"),
        "server",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-dir={data}",
        f"-master.port={p['master']}",
        f"-master.port.grpc={p['master_grpc']}",
        f"-volume.port={p['volume']}",
        f"-volume.port.grpc={p['volume_grpc']}",
        "-filer",
        f"-filer.port={p['filer']}",
        f"-filer.port.grpc={p['filer_grpc']}",
        "-s3",
        f"-s3.port={p['s3']}",
        f"-s3.port.grpc={p['s3_grpc']}",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        f"-s3.config={config}",
        "-s3.iam=false",
        "-master.volumeSizeLimitMB=1024",
        "-volume.max=0",
    ]
    return Launch(argv, base_env())


def _agent_env(api_url: str, token: dict[str, str], work_root: Path, ray_token: Path) -> dict[str, str]:
    """A node agent's environment; `token` says how it authenticates (the
    head's agent with the head token, every other with its own credential).

    RAY_num_workers_soft_limit=1: Ray keeps one idle worker per CPU, each
    costing some 0.7 % of a core while the grid idles on a laptop; one warm
    worker keeps a lone run warm (an attempt runs in the attempt service's
    process, the Ray worker only relays it)."""
    env = base_env()
    env.update(ray_env(ray_token))
    env.update(RGRID_WORK_ROOT=str(work_root), RGRID_API_URL=api_url, RAY_num_workers_soft_limit="1", **token)
    return env


def node_argv(temp_dir: Path, worker_id: str, ports: dict[str, int], role: list[str]) -> list[str]:
    """`rgrid worker` for one node of the embedded grid: the node agent and
    its raylet, every port of the node on loopback and chosen by us."""
    return [
        sys.executable,
        "-m",
        "rgrid",
        "worker",
        *role,
        f"--worker-id={worker_id}",
        "--node-ip-address=127.0.0.1",
        f"--dashboard-agent-listen-port={ports['agent_listen']}",
        f"--dashboard-agent-grpc-port={ports['agent_grpc']}",
        f"--metrics-export-port={ports['metrics']}",
        f"--runtime-env-agent-port={ports['runtime_env_agent']}",
        f"--temp-dir={temp_dir}",
        "--disable-usage-stats",
        # It streams workers' output to drivers; rgrid's driver takes none.
        "--include-log-monitor=False",
    ]


def ray_launch(
    home: Path,
    ports: dict[str, int],
    work_root: Path,
    api_url: str,
    secrets: dict[str, str],
    ray_token: Path,
    num_cpus: int | None = None,
) -> Launch:
    """The Ray head, started through `rgrid worker` (the node agent) so that
    it registers, heartbeats, advertises this machine's runtimes and runs
    attempts in its sandbox."""
    role = [
        "--head",
        f"--info-file={node_info_path(home)}",
        f"--port={ports['gcs']}",
        "--dashboard-host=127.0.0.1",
        f"--dashboard-port={ports['dashboard']}",
        f"--ray-client-server-port={ports['client']}",
        f"--num-cpus={os.cpu_count() or 1 if num_cpus is None else num_cpus}",
    ]
    return Launch(
        node_argv(ray_temp_dir(home), "local-head", ports, role),
        _agent_env(api_url, {"RGRID_HEAD_TOKEN": secrets["head_token"]}, work_root, ray_token),
    )


def worker_launch(
    home: Path,
    worker_id: str,
    ports: dict[str, int],
    gcs_port: int,
    work_root: Path,
    api_url: str,
    secrets: dict[str, str],
    ray_token: Path,
    num_cpus: int = 1,
) -> Launch:
    """An extra worker node: its own agent and raylet, joining the head on
    loopback. The worker token buys its agent a credential of its own, kept
    across restarts."""
    role = [f"--address=127.0.0.1:{gcs_port}", f"--num-cpus={num_cpus}"]
    credential = {
        "RGRID_WORKER_TOKEN": secrets["worker_token"],
        "RGRID_CREDENTIAL_FILE": str(home / "local" / "credentials" / f"{worker_id}.json"),
    }
    return Launch(
        node_argv(ray_temp_dir(home), worker_id, ports, role),
        _agent_env(api_url, credential, work_root, ray_token),
    )


def provisioned_launch(
    temp_dir: Path,
    own: Path,
    worker_id: str,
    cpus: float,
    memory_mb: int,
    api_url: str,
    bootstrap_token: str,
    work_root: Path | None,
) -> Launch:
    """A worker node that the autoscaler's local provider (`rgrid_infra.local`)
    creates, all it needs of the local grid: every port on loopback and
    chosen now; it joins with its single-use bootstrap token, as a cloud
    server does, keeps its credential and its copy of the Ray token in
    `own`, and joins wherever the API says the head is."""
    ports = dict(zip(WORKER_PORTS, free_ports(len(WORKER_PORTS)), strict=True))
    role = [f"--num-cpus={cpus:g}", f"--memory={memory_mb * 2**20}"]
    env = base_env()
    env.update(ray_env(own / "ray-token"))
    env.update(
        RGRID_API_URL=api_url,
        RGRID_BOOTSTRAP_TOKEN=bootstrap_token,
        RGRID_CREDENTIAL_FILE=str(own / "credential.json"),
    )
    if work_root is not None:
        env["RGRID_WORK_ROOT"] = str(work_root)
    return Launch(node_argv(temp_dir, worker_id, ports, role), env)


def worker_healthy(ports: dict[str, int]) -> bool:
    """An extra worker is up once its raylet's dashboard agent listens."""
    return port_open(ports["agent_listen"])


def node_info_path(home: Path) -> Path:
    return home / "local" / "node.json"


def ensure_ray_token(path: Path) -> Path:
    """The grid's Ray token, generated once, readable by its owner only. Every
    Ray process of the grid (head, workers, the API's driver) presents it;
    without it Ray refuses connections to the GCS and the dashboard."""
    if not path.exists():
        write_private_text(path, token_hex(32))
    return path


def ray_env(token_path: Path) -> dict[str, str]:
    """Environment for every Ray process of the grid.

    RAY_AUTH_MODE=token with RAY_AUTH_TOKEN_PATH: Ray requires the token on
    every connection (GCS, raylets, dashboard). It is passed as a path, to a
    file no sandbox binds, so no job can read it (a job's environment is
    built from nothing).

    RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 keeps Ray on loopback: otherwise it
    swaps 127.0.0.1 for the machine's outward address and listens there.
    RAY_ENABLE_UV_RUN_RUNTIME_ENV=0: under `uv run`, Ray would package the
    driver's current directory as the workers' working_dir, which uploads
    whatever lies there (the local grid's database) and breaks SQLite's
    locks by opening its files."""
    return {
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": str(token_path),
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0",
    }


# Server settings `rgrid local up` hands on from its own environment, so the
# autoscaler (even the Hetzner provider, against a fake API) can be tried here.
PASSED_PREFIXES = ("RGRID_AUTOSCALER_", "RGRID_HCLOUD_", "RGRID_LOCAL_NODE_", "RGRID_CLUSTER_NAME")


def passed_settings(environ: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in sorted(environ.items()) if k.startswith(PASSED_PREFIXES)}


def autoscaler_env(home: Path, local_dir: Path, max_workers: int) -> dict[str, str]:
    """The local provider between 0 and `max_workers` nodes, reacting in
    seconds (a node here costs nothing to start or to keep)."""
    return {
        "RGRID_AUTOSCALER_PROVIDER": "local",
        "RGRID_AUTOSCALER_MAX_NODES": str(max_workers),
        "RGRID_AUTOSCALER_MAX_PENDING": str(max_workers),
        "RGRID_AUTOSCALER_MAX_CREATES_PER_CYCLE": str(max_workers),
        "RGRID_AUTOSCALER_INTERVAL_S": "2",
        "RGRID_AUTOSCALER_IDLE_S": "30",
        "RGRID_AUTOSCALER_JOIN_TIMEOUT_S": "120",
        "RGRID_AUTOSCALER_ORPHAN_GRACE_S": "60",
        "RGRID_LOCAL_NODES_DIR": str(nodes_dir(local_dir)),
        "RGRID_LOCAL_RAY_TEMP_DIR": str(ray_temp_dir(home)),
        "RGRID_LOCAL_WORK_ROOT": str(local_dir / "work"),
    }


def nodes_dir(local_dir: Path) -> Path:
    return local_dir / "nodes"


def api_launch(
    local_dir: Path,
    ports: dict[str, int],
    secrets: dict[str, str],
    ray_token: Path,
    database_url: str | None = None,
    settings: dict[str, str] | None = None,
) -> Launch:
    """The API server on SQLite in the grid's folder, unless told another
    database; `settings` are further server settings (the autoscaler's)."""
    env = base_env()
    env.update(ray_env(ray_token))
    env.update(
        {
            "RGRID_DATABASE_URL": database_url or f"sqlite:///{local_dir / 'rgrid.db'}",
            "RGRID_S3_ENDPOINT": f"127.0.0.1:{ports['s3']}",
            "RGRID_S3_ACCESS_KEY": secrets["s3_access_key"],
            "RGRID_S3_SECRET_KEY": secrets["s3_secret_key"],
            "RGRID_S3_PRESIGN_ACCESS_KEY": secrets["s3_presign_access_key"],
            "RGRID_S3_PRESIGN_SECRET_KEY": secrets["s3_presign_secret_key"],
            "RGRID_S3_BUCKET": S3_BUCKET,
            "RGRID_RAY_ADDRESS": f"127.0.0.1:{ports['gcs']}",
            "RGRID_RUNNER_API_URL": f"http://127.0.0.1:{ports['api']}",
            "RGRID_RUNNER_SECRET": secrets["runner_secret"],
            "RGRID_WORKER_TOKEN": secrets["worker_token"],
            "RGRID_HEAD_TOKEN": secrets["head_token"],
            "RGRID_BOOTSTRAP_API_KEY": secrets["api_key"],
            "RGRID_BOOTSTRAP_OWNER": "local",
            "RGRID_HOST": "127.0.0.1",
            "RGRID_PORT": str(ports["api"]),
        }
    )
    env.update(settings or {})
    return Launch([sys.executable, "-m", "rgrid", "server"], env)


def _http_ok(port: int, path: str, accept_any: bool = False) -> bool:
    """One plain GET on loopback: the standard library's client costs the
    supervisor a fraction of a fresh httpx client (and its TLS context)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1.0)
    try:
        conn.request("GET", path)
        status = conn.getresponse().status
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()
    return accept_any or status == 200


def s3_healthy(ports: dict[str, int]) -> bool:
    return _http_ok(ports["s3"], "/", accept_any=True)


def ray_healthy(ports: dict[str, int]) -> bool:
    """The GCS listens and the dashboard answers (401 without the token)."""
    return port_open(ports["gcs"]) and _http_ok(ports["dashboard"], "/api/version", accept_any=True)


def api_healthy(ports: dict[str, int]) -> bool:
    return _http_ok(ports["api"], "/healthz")
