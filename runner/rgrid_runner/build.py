"""Installing a job's requirements, in the job's own sandbox.

A requirements file can run code on the node: a source package's build
script, a build backend fetched from the index. So the installer runs like
the job itself: under the attempt's uid, without capabilities, under
seccomp, in a network namespace of its own (the internet only, the node's
job-network rules, even for a job run with --network none), in a cgroup
with the job's memory, CPU and process limits, and within
RGRID_INSTALL_TIMEOUT_S. It sees the interpreter, the installer and its
own directory, nothing else of the node. Nothing of the tenant's --env
reaches it. EnvCache (envs.py) publishes what it built only after it ended.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rgrid.wire import Stream
from rgrid_runner.confine import Confinement
from rgrid_runner.envs import (
    INSTALLER_CACHE,
    REQUIREMENTS_FILE,
    InstallFailed,
    installer_argv,
    installer_env,
    interpreter_seed,
    uv_binary,
)
from rgrid_runner.runtimes import Interpreter
from rgrid_runner.sandbox import Job
from rgrid_runner.slots import JobUser


@dataclass(frozen=True)
class BuildPlace:
    """Where a build runs: the attempt's uid and network namespace, and
    what it tells the installer (the operator's index)."""

    name: str
    user: JobUser | None
    netns: Path | None
    resolv_conf: Path | None
    index_url: str | None
    image: str | None = None


def build_environment(
    confinement: Confinement,
    place: BuildPlace,
    interp: Interpreter,
    requirements: str,
    directory: Path,
    timeout_s: float,
    sink: Callable[[Stream, str], None],
) -> None:
    """Install `requirements` into `directory/venv`; InstallFailed says why not."""
    (directory / REQUIREMENTS_FILE).write_text(requirements)
    seed = interpreter_seed(directory.parent, interp)
    if seed.is_dir():
        shutil.copytree(seed, directory / INSTALLER_CACHE)
    uv = uv_binary()
    home = confinement.sandbox.home(directory)
    confinement.sandbox.prepare(directory, place.user)
    job = Job(
        argv=installer_argv(uv, interp, home),
        workdir=directory,
        env=installer_env(home, place.index_url),
        limits=confinement.limits,
        user=place.user,
        readonly=[Path(interp.prefix), uv],
        network=True,
        name=place.name,
        image=place.image,
        netns=place.netns,
        resolv_conf=place.resolv_conf,
    )
    ended = confinement.run(job, place.name, timeout_s, sink)
    if ended.outcome.stopped:
        raise InstallFailed("installing requirements was stopped")
    if ended.outcome.timed_out:
        raise InstallFailed(f"installing requirements took over {timeout_s:g} s")
    if ended.oom:
        memory_mb = confinement.limits.memory_bytes // 2**20
        raise InstallFailed(
            f"installing requirements ran out of memory ({memory_mb} MiB, the run's --memory)"
        )
    if ended.outcome.exit_code != 0:
        raise InstallFailed(f"installing requirements failed (exit {ended.outcome.exit_code})")
