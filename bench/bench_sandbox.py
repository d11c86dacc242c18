"""Sandbox overhead, first installs and cached-environment overhead.

1. Per-run overhead of the bubblewrap sandbox (its slot's uid, seccomp, its
   cgroup, with and without the job network, with and without the work
   disk) against a plain subprocess, for the same tiny script, measured at
   the runner level.
2. A first install of a small package: built in the job's sandbox with a
   build-local installer cache (how rgrid builds now), against uv run as
   root on the host with the node's shared, warm installer cache (how it
   built before), taken in turn.
3. `rgrid run` with a requirements file whose environment is cached, against
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
import threading
import time
from pathlib import Path

from _grid import RGRID, grid_env, local_grid, timed

from rgrid_runner.build import BuildPlace, build_environment, uv_binary
from rgrid_runner.cgroups import CgroupManager
from rgrid_runner.confine import Confinement
from rgrid_runner.envs import EnvCache
from rgrid_runner.jobnet import JobNetwork, job_network
from rgrid_runner.limits import Limits
from rgrid_runner.runtimes import Interpreter, detect
from rgrid_runner.sandbox import Bubblewrap, Job, Plain, Sandbox
from rgrid_runner.settings import RunnerSettings
from rgrid_runner.slots import JobSlots, JobUser
from rgrid_runner.systools import system_tool
from rgrid_runner.workdisk import DiskLimits, WorkDisks

LIMITS = Limits(memory_bytes=1024**3, cpu=1.0, max_pids=512)


def run_once(
    sandbox: Sandbox,
    user: JobUser | None,
    interp: Interpreter,
    workdir: Path,
    cgroups: CgroupManager | None,
    network: JobNetwork | None,
    disks: WorkDisks | None,
    tag: str,
) -> tuple[float, float]:
    """One launch, timed from before its namespace, disk and cgroup exist
    to after they are gone: what the runner pays per attempt. (The work
    disk is unmounted after the attempt reported, so part of this is off
    the path a user waits on.) Returns (until the job exited, in all)."""
    started = time.perf_counter()
    with contextlib.ExitStack() as stack:
        netns = stack.enter_context(network.attach(tag)) if network is not None else None
        if disks is not None:
            disk = stack.enter_context(disks.attach(workdir))
            (disk.inputs_dir / "s.py").write_text("print('hi')\n")
            disk.mount()
        sandbox.prepare(workdir, user)
        job = Job(
            argv=[interp.executable, "s.py"],
            workdir=workdir,
            env={"PATH": "/usr/bin:/bin"},
            limits=LIMITS,
            user=user,
            readonly=[Path(interp.prefix)],
            network=isinstance(sandbox, Plain) or netns is not None,
            netns=netns,
            resolv_conf=network.resolv_path if network is not None else None,
        )
        launch = sandbox.launch(job)
        stack.callback(launch.close)
        argv = launch.argv
        if cgroups is not None:
            group = cgroups.create(tag, LIMITS)
            stack.callback(group.remove)
            argv = group.join_command(argv)
        subprocess.run(
            argv, env=launch.env, cwd=launch.cwd, check=True, capture_output=True, pass_fds=launch.pass_fds
        )
        exited = time.perf_counter()
    return exited - started, time.perf_counter() - started


KINDS = ("plain", "bwrap", "bwrap+net", "bwrap+net+disk")


def sandbox_overhead(n: int) -> dict[str, list[tuple[float, float]]]:
    """Plain process, bubblewrap + cgroup without network, the same with
    the job network (its own namespace, veth, the node's rules), and with
    the work disk too, taken in turn so that drift on a noisy machine hits
    all alike."""
    interp = detect()["python:3.11"]
    root = Path(tempfile.mkdtemp(prefix="rgrid-bench-sbx-"))
    network = job_network(RunnerSettings(), owner="bench")
    network.install()
    cgroups = CgroupManager()
    bwrap = Bubblewrap(system_tool("bwrap"))
    slots = JobSlots(root / "slots", 330_000, 4)
    disks = WorkDisks(root / "disks", DiskLimits(20 * 2**30, 500_000))
    times: dict[str, list[tuple[float, float]]] = {k: [] for k in KINDS}
    try:
        for i in range(n):
            tag = f"bench-{os.getpid()}-{i}"
            for kind in KINDS:
                workdir = root / f"{kind}-{i}"
                workdir.mkdir()
                if kind != "bwrap+net+disk":
                    (workdir / "s.py").write_text("print('hi')\n")
                if kind == "plain":
                    times[kind].append(run_once(Plain(), None, interp, workdir, None, None, None, tag))
                    continue
                with slots.claim() as user:
                    times[kind].append(
                        run_once(
                            bwrap,
                            user,
                            interp,
                            workdir,
                            cgroups,
                            network if "net" in kind else None,
                            disks if "disk" in kind else None,
                            tag,
                        )
                    )
                shutil.rmtree(workdir, ignore_errors=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return times


def first_install(n: int) -> tuple[list[float], list[float]]:
    """A small package into a fresh environment (a new key each time):
    sandboxed as now, and as root on the host with a shared warm installer
    cache as before. Both after one warm-up of each."""
    interp = detect()["python:3.11"]
    root = Path(tempfile.mkdtemp(prefix="rgrid-bench-install-"))
    network = job_network(RunnerSettings(), owner="bench")
    network.install()
    confinement = Confinement(Bubblewrap(system_tool("bwrap")), CgroupManager(), LIMITS, threading.Event())
    slots = JobSlots(root / "slots", 330_000, 4)
    cache = EnvCache(root / "envs", max_bytes=10 * 2**30, max_files=10**7)
    disks = WorkDisks(root / "disks", DiskLimits(20 * 2**30, 500_000))
    uv = str(uv_binary())
    shared_cache = root / "host-uv-cache"

    def sandboxed(i: int) -> float:
        requirements = f"# {time.time_ns()}\ntomli-w==1.2.0\n"
        # The attempt's slot and network namespace exist for its job anyway.
        with slots.claim() as user, network.attach(f"install-{i}") as netns:
            place = BuildPlace(f"bench-install-{i}", user, netns, network.resolv_path, None)
            started = time.perf_counter()
            with cache.use(
                interp,
                requirements,
                lambda home: build_environment(
                    confinement, place, disks, interp, requirements, home, 600, lambda _s, _t: None
                ),
            ):
                return time.perf_counter() - started

    def on_host(i: int) -> float:
        venv = root / f"host-{i}-{time.time_ns()}"
        (root / "req.txt").write_text("tomli-w==1.2.0\n")
        env = {**os.environ, "UV_CACHE_DIR": str(shared_cache), "UV_NO_PROGRESS": "1"}
        started = time.perf_counter()
        subprocess.run(
            [uv, "venv", "--quiet", "--relocatable", "--python", interp.executable, str(venv)],
            env=env,
            check=True,
        )
        subprocess.run(
            [
                uv,
                "pip",
                "install",
                "--quiet",
                "--python",
                str(venv / "bin" / "python"),
                "-r",
                str(root / "req.txt"),
            ],
            env=env,
            check=True,
        )
        return time.perf_counter() - started

    try:
        sandboxed(-1)
        on_host(-1)
        now, before = [], []
        for i in range(n):
            now.append(sandboxed(i))
            before.append(on_host(i))
        return now, before
    finally:
        shutil.rmtree(root, ignore_errors=True)


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
    for label, part in (("in all, teardown included", 1), ("until the job exited", 0)):
        plain, boxed, networked, disked = (med(t[part] for t in times[k]) for k in KINDS)
        print(f"-- per attempt, {label}")
        print(f"plain subprocess                    : median {plain * 1000:6.1f} ms")
        print(f"bubblewrap + cgroup, no net         : median {boxed * 1000:6.1f} ms")
        print(f"bubblewrap + cgroup + jobnet        : median {networked * 1000:6.1f} ms")
        print(f"bubblewrap + cgroup + jobnet + disk : median {disked * 1000:6.1f} ms")
        print(f"sandbox overhead (jobnet)           : median {(networked - plain) * 1000:6.1f} ms")
        print(f"sandbox overhead (jobnet + disk)    : median {(disked - plain) * 1000:6.1f} ms")
    now, before = first_install(max(5, runs // 6))
    print(f"first install, in the sandbox       : median {med(now):.3f} s")
    print(f"first install, on the host (before) : median {med(before):.3f} s")
    print(
        f"ratio, pair by pair                 : median {med(a / b for a, b in zip(now, before, strict=True)):.2f}"
    )
    with_env, without_env = cached_env_overhead(max(10, runs // 3))
    print(f"rgrid run, no reqs      : median {med(without_env):.3f} s")
    print(f"rgrid run, cached env   : median {med(with_env):.3f} s")
    print(f"cached env overhead     : median {(med(with_env) - med(without_env)) * 1000:6.1f} ms")


if __name__ == "__main__":
    main()
