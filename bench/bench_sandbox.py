"""Sandbox overhead and cached-environment overhead.

1. Per-run overhead of the bubblewrap sandbox (with its cgroup) against a
   plain subprocess, for the same tiny script, measured at the runner level.
2. `rgrid run` with a requirements file whose environment is cached, against
   the same script without requirements, on a warm local grid.

Run by hand as root (bubblewrap drops jobs to their own uid only as root):
    uv run python bench/bench_sandbox.py [--runs 30]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from _grid import RGRID, grid_env, local_grid, timed

from rgrid_runner.cgroups import CgroupManager
from rgrid_runner.jobnet import JobNetwork, job_network
from rgrid_runner.limits import Limits
from rgrid_runner.runtimes import Interpreter, detect
from rgrid_runner.sandbox import Bubblewrap, Job, Plain, Sandbox
from rgrid_runner.settings import RunnerSettings

LIMITS = Limits(memory_bytes=1024**3, cpu=1.0, max_pids=512)


def run_once(
    sandbox: Sandbox,
    interp: Interpreter,
    workdir: Path,
    cgroups: CgroupManager | None,
    network: JobNetwork | None,
    tag: str,
) -> float:
    """One launch, timed from before its namespace and cgroup exist to after
    they are gone: what the runner pays per attempt."""
    sandbox.prepare(workdir)
    started = time.perf_counter()
    with contextlib.ExitStack() as stack:
        netns = stack.enter_context(network.attach(tag)) if network is not None else None
        job = Job(
            argv=[interp.executable, "s.py"],
            workdir=workdir,
            env={"PATH": "/usr/bin:/bin"},
            limits=LIMITS,
            readonly=[Path(interp.prefix)],
            network=isinstance(sandbox, Plain) or netns is not None,
            netns=netns,
            resolv_conf=network.resolv_path if network is not None else None,
        )
        launch = sandbox.launch(job)
        argv = launch.argv
        if cgroups is not None:
            group = cgroups.create(tag, LIMITS)
            stack.callback(group.remove)
            argv = group.join_command(argv)
        subprocess.run(argv, env=launch.env, cwd=launch.cwd, check=True, capture_output=True)
    return time.perf_counter() - started


def sandbox_overhead(n: int) -> dict[str, list[float]]:
    """Plain process, bubblewrap + cgroup without network, and the same with
    the job network (its own namespace, veth, the node's rules), taken in
    turn so that drift on a noisy machine hits all three alike."""
    interp = detect()["python:3.11"]
    workdir = Path(tempfile.mkdtemp(prefix="rgrid-bench-sbx-"))
    (workdir / "s.py").write_text("print('hi')\n")
    network = job_network(RunnerSettings(), owner="bench")
    network.install()
    cgroups = CgroupManager()
    times: dict[str, list[float]] = {"plain": [], "bwrap": [], "bwrap+net": []}
    try:
        for i in range(n):
            tag = f"bench-{os.getpid()}-{i}"
            times["plain"].append(run_once(Plain(), interp, workdir, None, None, tag))
            times["bwrap"].append(run_once(Bubblewrap(), interp, workdir, cgroups, None, tag))
            times["bwrap+net"].append(run_once(Bubblewrap(), interp, workdir, cgroups, network, tag))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return times


def cached_env_overhead(n: int) -> tuple[list[float], list[float]]:
    with tempfile.TemporaryDirectory(prefix="rgrid-bench-env-") as tmp:
        work = Path(tmp)
        env = grid_env(work / "home")
        (work / "with").mkdir()
        (work / "without").mkdir()
        (work / "with" / "requirements.txt").write_text("tomli-w==1.2.0\n")
        for d in ("with", "without"):
            (work / d / "s.py").write_text("print('hi')\n")

        def run(cwd: Path) -> float:
            return timed([*RGRID, "run", "s.py"], cwd, env)

        with local_grid(work, env):
            for _ in range(3):
                run(work / "with")  # the first installs, then warm
                run(work / "without")
            with_env = [run(work / "with") for _ in range(n)]
            without_env = [run(work / "without") for _ in range(n)]
    return with_env, without_env


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=30)
    runs = parser.parse_args().runs
    times = sandbox_overhead(runs)
    med = statistics.median
    plain, boxed, networked = (med(times[k]) for k in ("plain", "bwrap", "bwrap+net"))
    print(f"plain subprocess             : median {plain * 1000:6.1f} ms")
    print(f"bubblewrap + cgroup, no net  : median {boxed * 1000:6.1f} ms")
    print(f"bubblewrap + cgroup + jobnet : median {networked * 1000:6.1f} ms")
    print(f"sandbox overhead (no net)    : median {(boxed - plain) * 1000:6.1f} ms")
    print(f"sandbox overhead (jobnet)    : median {(networked - plain) * 1000:6.1f} ms")
    print(f"job network's own cost       : median {(networked - boxed) * 1000:6.1f} ms")
    with_env, without_env = cached_env_overhead(max(10, runs // 3))
    print(f"rgrid run, no reqs      : median {med(without_env):.3f} s")
    print(f"rgrid run, cached env   : median {med(with_env):.3f} s")
    print(f"cached env overhead     : median {(med(with_env) - med(without_env)) * 1000:6.1f} ms")


if __name__ == "__main__":
    main()
