"""`rgrid worker`: start this machine's Ray node for rgrid.

It detects once what the node offers (runtimes, sandbox), hands that to the
runner through the environment Ray passes to its workers, and advertises the
runtimes to Ray as custom resources so attempts only land where their
runtime exists. Registered into the rgrid CLI through `rgrid.commands`.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer


def worker(
    ctx: typer.Context,
    head: Annotated[bool, typer.Option("--head", help="Start a Ray head node instead of joining one.")] = False,
    address: Annotated[str | None, typer.Option(help="Ray head to join, host:port.")] = None,
    info_file: Annotated[str | None, typer.Option(help="Write what this node offers here (JSON).")] = None,
) -> None:
    """Start a Ray node that runs rgrid attempts; extra options go to `ray start`."""
    from rgrid_runner.runtimes import detect, encode, ray_resources
    from rgrid_runner.sandbox import choose

    if not head and not address:
        raise typer.BadParameter("give --head or --address")
    runtimes = detect()
    sandbox = choose()
    env = dict(os.environ)
    env.update(RGRID_RUNTIMES_CONFIG=encode(runtimes), RGRID_SANDBOX=sandbox.name,
               RAY_ENABLE_UV_RUN_RUNTIME_ENV="0")
    offer = {"runtimes": sorted(runtimes), "sandbox": sandbox.name, "isolated": sandbox.isolated}
    if info_file:
        Path(info_file).parent.mkdir(parents=True, exist_ok=True)
        Path(info_file).write_text(json.dumps(offer))
    typer.echo(f"rgrid worker: {json.dumps(offer)}", err=True)
    ray = str(Path(sys.executable).parent / "ray")
    argv = [ray, "start", "--block", f"--resources={json.dumps(ray_resources(runtimes))}"]
    argv += ["--head"] if head else [f"--address={address}"]
    os.execve(ray, [*argv, *ctx.args], env)
