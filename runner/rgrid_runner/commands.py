"""`rgrid worker`: run this machine's Ray node for rgrid, with its agent.

It detects once what the node offers (runtimes, sandbox), hands that to the
runner through the environment Ray passes to its workers, advertises the
runtimes to Ray as custom resources so attempts only land where their
runtime exists, then runs the node agent (registration, heartbeats,
draining). Registered into the rgrid CLI through `rgrid.commands`.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import sys
from pathlib import Path
from typing import Annotated

import typer

ENV_API = "RGRID_API_URL"
ENV_TOKEN = "RGRID_WORKER_TOKEN"


def _gcs_address(head: bool, address: str | None, extra: list[str]) -> str | None:
    if not head:
        return address
    port = next((a.split("=", 1)[1] for a in extra if a.startswith("--port=")), "6379")
    ip = next((a.split("=", 1)[1] for a in extra if a.startswith("--node-ip-address=")), "127.0.0.1")
    return f"{ip}:{port}"


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("rgrid")
    except PackageNotFoundError:
        return "0+unknown"


def worker(
    ctx: typer.Context,
    head: Annotated[
        bool, typer.Option("--head", help="Start a Ray head node instead of joining one.")
    ] = False,
    address: Annotated[str | None, typer.Option(help="Ray head to join, host:port.")] = None,
    worker_id: Annotated[
        str | None, typer.Option(help="This node's id (default: host name + random).")
    ] = None,
    provider: Annotated[str, typer.Option(help="Who runs this machine: local, hetzner, ...")] = "local",
    server_id: Annotated[str | None, typer.Option(help="The provider's id of this machine.")] = None,
    info_file: Annotated[str | None, typer.Option(help="Write what this node offers here (JSON).")] = None,
) -> None:
    """Start a Ray node that runs rgrid attempts; extra options go to `ray start`.
    The API is named by RGRID_API_URL, the agent's token by RGRID_WORKER_TOKEN."""
    from rgrid.wire import WorkerRegistration
    from rgrid_runner.agent import AgentConfig, NodeAgent
    from rgrid_runner.runtimes import detect, encode, ray_resources
    from rgrid_runner.sandbox import JobUser, choose
    from rgrid_runner.settings import runner_settings

    if not head and not address:
        raise typer.BadParameter("give --head or --address")
    api_url, token = os.environ.get(ENV_API), os.environ.get(ENV_TOKEN)
    if not api_url or not token:
        raise typer.BadParameter(f"set {ENV_API} and {ENV_TOKEN} so the node can register")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    worker_id = worker_id or f"{socket.gethostname()}-{secrets.token_hex(3)}"
    runtimes = detect()
    settings = runner_settings()
    sandbox = choose(settings.sandbox, JobUser(settings.sandbox_uid, settings.sandbox_gid))
    offer = {"runtimes": sorted(runtimes), "sandbox": sandbox.name, "isolated": sandbox.isolated}
    if info_file:
        Path(info_file).parent.mkdir(parents=True, exist_ok=True)
        Path(info_file).write_text(json.dumps(offer))
    resources = {**ray_resources(runtimes), f"rgrid_worker_{worker_id}": 1}
    env = {k: v for k, v in os.environ.items() if k not in (ENV_TOKEN, ENV_API)}
    env.update(
        RGRID_RUNTIMES_CONFIG=encode(runtimes),
        RGRID_SANDBOX=sandbox.name,
        RGRID_WORKER_ID=worker_id,
        RAY_ENABLE_UV_RUN_RUNTIME_ENV="0",
    )
    if not head:
        # Joining is refused unless clusters are enabled; raystart keeps loopback anyway.
        env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "1"
    argv = [
        sys.executable,
        "-m",
        "rgrid_runner.raystart",
        "start",
        "--block",
        f"--resources={json.dumps(resources)}",
    ]
    argv += ["--head"] if head else [f"--address={address}"]
    argv += ctx.args
    cpus = next(
        (float(a.split("=", 1)[1]) for a in ctx.args if a.startswith("--num-cpus=")),
        float(os.cpu_count() or 1),
    )
    registration = WorkerRegistration(
        id=worker_id,
        host_name=socket.gethostname(),
        resources={"CPU": cpus, **resources},
        runtimes=sorted(runtimes),
        sandbox=sandbox.name,
        provider=provider,
        server_id=server_id,
        pid=os.getpid(),
        version=_version(),
    )
    agent = NodeAgent(
        AgentConfig(
            api_url=api_url,
            token=token,
            registration=registration,
            gcs_address=_gcs_address(head, address, ctx.args),
        ),
        argv,
        env,
    )
    raise typer.Exit(agent.run())
