"""`rgrid worker`: run this machine's Ray node for rgrid, with its agent.

It detects once what the node offers (runtimes, sandbox), hands that to the
runner through the environment Ray passes to its workers, advertises the
runtimes to Ray as custom resources so attempts only land where their
runtime exists, then runs the node agent (registration, heartbeats,
draining). Registered into the rgrid CLI through `rgrid.commands`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from rgrid.cli.parser import EXTRA_ARGS, Commands
from rgrid.errors import RgridError, UsageError
from rgrid.hosts import url_is_loopback
from rgrid.version import VERSION

if TYPE_CHECKING:
    from rgrid_runner.sandbox import Sandbox
    from rgrid_runner.settings import RunnerSettings

ENV_API = "RGRID_API_URL"
ENV_TOKEN = "RGRID_WORKER_TOKEN"
# The head's agent alone holds it: only the head may say where the head is.
ENV_HEAD_TOKEN = "RGRID_HEAD_TOKEN"
ENV_BOOTSTRAP = "RGRID_BOOTSTRAP_TOKEN"
ENV_CREDENTIAL_FILE = "RGRID_CREDENTIAL_FILE"
# Who runs this machine, as a provisioned server's user data says (`--provider` wins).
ENV_PROVIDER = "RGRID_PROVIDER"
# APIs besides RGRID_API_URL whose tickets this node runs (rgrid_runner.attemptservice.ApiUrls).
ENV_NODE_API_URLS = "RGRID_NODE_API_URLS"


def _head_gcs_address(extra: list[str]) -> str:
    """Where a head's own GCS listens, from the options passed to `ray start`."""
    port = next((a.split("=", 1)[1] for a in extra if a.startswith("--port=")), "6379")
    ip = next((a.split("=", 1)[1] for a in extra if a.startswith("--node-ip-address=")), "127.0.0.1")
    return f"{ip}:{port}"


def _ray_temp_dir(extra: list[str]) -> Path:
    """Where this node's Ray keeps its sessions (`ray start --temp-dir`)."""
    return Path(next((a.split("=", 1)[1] for a in extra if a.startswith("--temp-dir=")), "/tmp/ray"))


def runner_socket_path(worker_id: str) -> Path:
    """The attempt service's socket: in /run for root, else in a directory
    of this user's own. Named by a digest of the worker id (socket paths
    must stay short) and this agent's pid: two grids on one machine may
    both have a `local-head`, and must never share a service."""
    name = f"{hashlib.sha256(worker_id.encode()).hexdigest()[:12]}-{os.getpid()}.sock"
    if os.geteuid() == 0:
        return Path("/run/rgrid") / name
    private = Path(tempfile.gettempdir()) / f"rgrid-{os.geteuid()}"
    private.mkdir(mode=0o700, exist_ok=True)
    return private / name


def _attempt_env() -> dict[str, str]:
    """An attempt process's environment besides the runner's settings:
    system paths, where temporary files go, and the operator's proxy, index
    and CA settings for requirement builds."""
    from rgrid_runner.build import CA_SETTINGS, INSTALLER_ENV
    from rgrid_runner.systools import PRIVILEGED_ENV

    wanted = {"TMPDIR", "HOME", *INSTALLER_ENV, *CA_SETTINGS}
    return {**PRIVILEGED_ENV, **{k: v for k, v in os.environ.items() if k in wanted}}


def protect_node(sandbox: Sandbox, settings: RunnerSettings, worker_id: str, api_url: str) -> None:
    """Before the node takes work: the job network in place for an isolated
    sandbox; the unisolated process sandbox only on a laptop's own grid, or
    where the operator said so."""
    from rgrid_runner.jobnet import DOCKER_NETWORK, JobNetError, job_network
    from rgrid_runner.systools import PRIVILEGED_ENV, found

    if not sandbox.isolated:
        if not url_is_loopback(api_url) and not settings.allow_unisolated:
            raise UsageError(
                "this node would run jobs as plain processes (no bubblewrap as root, no Docker), "
                "which isolates nothing from the grid: install bubblewrap and run as root, "
                "or set RGRID_ALLOW_UNISOLATED=1 to accept that"
            )
        return
    network = job_network(settings, worker_id)
    try:
        network.install()
    except JobNetError as exc:
        raise RgridError(f"cannot protect the grid from this node's jobs: {exc}") from None
    if sandbox.name == "docker":
        docker = found("docker") or "docker"
        exists = subprocess.run(
            [docker, "network", "inspect", DOCKER_NETWORK], capture_output=True, env=PRIVILEGED_ENV
        )
        if exists.returncode != 0:
            create = network.docker_network_command(docker, settings.job_docker_subnet)
            made = subprocess.run(create, capture_output=True, text=True, env=PRIVILEGED_ENV)
            if made.returncode != 0:
                raise RgridError(f"cannot create the jobs' Docker network: {made.stderr.strip()[:300]}")


def worker(
    head: bool,
    address: str | None,
    worker_id: str | None,
    provider: str | None,
    server_id: str | None,
    info_file: str | None,
    extra: list[str],
) -> int:
    """Start a Ray node that runs rgrid attempts; extra options go to `ray start`.
    The API is named by RGRID_API_URL. The head's agent authenticates with
    RGRID_HEAD_TOKEN; any other node with a credential of its own, kept in
    RGRID_CREDENTIAL_FILE, which it buys with RGRID_WORKER_TOKEN (a node an
    operator set up) or RGRID_BOOTSTRAP_TOKEN (a provisioned node)."""
    from rgrid.wire import WORKER_RESOURCE_PREFIX, WorkerRegistration
    from rgrid_runner.agent import AgentConfig, NodeAgent
    from rgrid_runner.attemptservice import NODE_CREDENTIAL_ENV, ApiUrls, AttemptService
    from rgrid_runner.nodetoken import NodeRayToken
    from rgrid_runner.rayuser import as_ray_user, give_dir, inherited_by_ray, ray_account
    from rgrid_runner.runtimes import detect, encode, ray_resources
    from rgrid_runner.sandbox import choose
    from rgrid_runner.settings import runner_settings, runner_variables

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    token_env = ENV_HEAD_TOKEN if head else ENV_TOKEN
    api_url, token = os.environ.get(ENV_API), os.environ.get(token_env)
    bootstrap, credential_file = os.environ.get(ENV_BOOTSTRAP), os.environ.get(ENV_CREDENTIAL_FILE)
    if not api_url or not (token or (bootstrap and not head)):
        raise UsageError(f"set {ENV_API} and {token_env} (or {ENV_BOOTSTRAP}) so the node can register")
    worker_id = worker_id or f"{socket.gethostname()}-{secrets.token_hex(3)}"
    if head:
        node_token = str(token)
    else:
        from rgrid_runner import bootstrap as credentials

        if not credential_file:
            raise UsageError(
                f"{ENV_TOKEN if token else ENV_BOOTSTRAP} needs {ENV_CREDENTIAL_FILE}: "
                "where this node keeps its own credential"
            )
        kept = Path(credential_file)
        if token:
            grant = credentials.by_join(api_url, token, worker_id, kept)
        else:
            ray_token = os.environ.get("RAY_AUTH_TOKEN_PATH")
            grant = credentials.by_bootstrap(
                api_url, str(bootstrap), kept, Path(ray_token) if ray_token else None
            )
        if worker_id != grant.worker_id:
            logging.getLogger(__name__).warning(
                "this node's credential (%s) is bound to worker %s: using that id", kept, grant.worker_id
            )
        node_token, worker_id = grant.credential, grant.worker_id
    if os.environ.get("RAY_AUTH_MODE") != "token" or not (
        os.environ.get("RAY_AUTH_TOKEN_PATH") or os.environ.get("RAY_AUTH_TOKEN")
    ):
        raise UsageError(
            "set RAY_AUTH_MODE=token and RAY_AUTH_TOKEN_PATH (the grid's Ray token): "
            "without it anyone who reaches Ray's ports can run code on the grid"
        )
    runtimes = detect()
    settings = runner_settings()
    try:
        sandbox = choose(settings.sandbox)
    except RuntimeError as exc:  # no bwrap, no engine, no seccomp
        raise RgridError(f"cannot run jobs on this node: {exc}") from None
    protect_node(sandbox, settings, worker_id, api_url)
    offer = {"runtimes": sorted(runtimes), "sandbox": sandbox.name, "isolated": sandbox.isolated}
    if info_file:
        Path(info_file).parent.mkdir(parents=True, exist_ok=True)
        Path(info_file).write_text(json.dumps(offer))
    resources = {**ray_resources(runtimes), f"{WORKER_RESOURCE_PREFIX}{worker_id}": 1}
    try:
        account = ray_account(settings.ray_user)
    except (ValueError, RuntimeError) as exc:
        raise RgridError(f"cannot run Ray unprivileged: {exc}") from None
    allowed = runner_variables()
    runner_env = {k: v for k, v in os.environ.items() if k in allowed}
    runner_env.update(
        RGRID_RUNTIMES_CONFIG=encode(runtimes),
        RGRID_SANDBOX=sandbox.name,
        RGRID_WORKER_ID=worker_id,
        RGRID_RUNNER_SOCKET=str(settings.runner_socket or runner_socket_path(worker_id)),
    )
    env = inherited_by_ray(os.environ)
    env.update(runner_env, RAY_ENABLE_UV_RUN_RUNTIME_ENV="0")
    if not head:
        # Joining is refused unless clusters are enabled; raystart keeps loopback anyway.
        env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "1"
    give_dir(account, _ray_temp_dir(extra))
    argv = as_ray_user(
        account,
        [
            sys.executable,
            "-m",
            "rgrid_runner.raystart",
            "start",
            "--block",
            f"--resources={json.dumps(resources)}",
            *extra,
        ],
    )
    cpus = next(
        (float(a.split("=", 1)[1]) for a in extra if a.startswith("--num-cpus=")),
        float(os.cpu_count() or 1),
    )
    memory_mb = next(
        (int(a.split("=", 1)[1]) // 2**20 for a in extra if a.startswith("--memory=")),
        os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20,
    )
    registration = WorkerRegistration(
        id=worker_id,
        host_name=socket.gethostname(),
        resources={"CPU": cpus, "memory_mb": memory_mb, **resources},
        runtimes=sorted(runtimes),
        sandbox=sandbox.name,
        provider=provider or os.environ.get(ENV_PROVIDER) or "local",
        server_id=server_id,
        pid=os.getpid(),
        version=VERSION,
    )
    agent = NodeAgent(
        AgentConfig(
            api_url=api_url,
            token=node_token,
            registration=registration,
            head=head,
            address=_head_gcs_address(extra) if head else address,
        ),
        argv,
        env,
        NodeRayToken(),
    )
    if cpus <= 0:
        # A head that runs no jobs (a control server's) gets no attempt
        # service: nothing of Ray's may ask its root for anything.
        return agent.run()
    service = AttemptService(
        Path(runner_env["RGRID_RUNNER_SOCKET"]),
        caller_uid=account.uid if account else os.geteuid(),
        caller_gid=account.gid if account else os.getegid(),
        apis=ApiUrls(api_url, os.environ.get(ENV_NODE_API_URLS, "")),
        env={**_attempt_env(), **runner_env, NODE_CREDENTIAL_ENV: node_token},
        max_attempts=settings.job_slots,
    )
    service.start()
    try:
        return agent.run()
    finally:
        service.stop()


def add_commands(commands: Commands) -> None:
    node = commands.add("worker", worker, passes=EXTRA_ARGS)
    node.add_argument("--head", action="store_true", help="Start a Ray head node instead of joining one.")
    node.add_argument(
        "--address", help="Ray head to join, host:port (default: wherever the API says the head is)."
    )
    node.add_argument("--worker-id", help="This node's id (default: host name + random).")
    node.add_argument(
        "--provider",
        help="Who runs this machine: local, hetzner, ... (default: $RGRID_PROVIDER, else local).",
    )
    node.add_argument("--server-id", help="The provider's id of this machine.")
    node.add_argument("--info-file", help="Write what this node offers here (JSON).")
