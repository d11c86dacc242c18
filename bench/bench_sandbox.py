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
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rgrid_runner.cgroups import CgroupManager, Limits
from rgrid_runner.runtimes import detect
from rgrid_runner.sandbox import Bubblewrap, Job, Plain


def time_launch(sandbox, interp, workdir: Path, cgroups: CgroupManager | None, n: int) -> list[float]:  # type: ignore[no-untyped-def]
    times = []
    for i in range(n):
        job = Job(
            argv=[interp.executable, "s.py"],
            workdir=workdir,
            env={"PATH": "/usr/bin:/bin"},
            readonly=[Path(interp.prefix)],
        )
        sandbox.prepare(workdir)
        launch = sandbox.launch(job)
        started = time.perf_counter()
        group = None
        argv = launch.argv
        if cgroups is not None:
            group = cgroups.create(f"bench-{os.getpid()}-{i}", Limits(1024**3, 1.0, 512))
            argv = group.join_command(argv)
        subprocess.run(argv, env=launch.env, cwd=launch.cwd, check=True, capture_output=True)
        if group is not None:
            group.remove()
        times.append(time.perf_counter() - started)
    return times


def sandbox_overhead(n: int) -> tuple[list[float], list[float]]:
    interp = detect()["python:3.11"]
    workdir = Path(tempfile.mkdtemp(prefix="rgrid-bench-sbx-"))
    (workdir / "s.py").write_text("print('hi')\n")
    try:
        plain = time_launch(Plain(), interp, workdir, None, n)
        boxed = time_launch(Bubblewrap(), interp, workdir, CgroupManager(), n)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return plain, boxed


def cached_env_overhead(n: int) -> tuple[list[float], list[float]]:
    work = Path(tempfile.mkdtemp(prefix="rgrid-bench-env-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("RGRID_")}
    env["RGRID_HOME"] = str(work / "home")
    (work / "with").mkdir()
    (work / "without").mkdir()
    (work / "with" / "requirements.txt").write_text("tomli-w==1.2.0\n")
    for d in ("with", "without"):
        (work / d / "s.py").write_text("print('hi')\n")

    def rgrid(cwd: Path, *args: str) -> float:
        started = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "rgrid", *args], cwd=cwd, env=env, check=True, capture_output=True
        )
        return time.perf_counter() - started

    try:
        rgrid(work, "local", "up")
        for _ in range(3):
            rgrid(work / "with", "run", "s.py")  # the first installs, then warm
            rgrid(work / "without", "run", "s.py")
        with_env = [rgrid(work / "with", "run", "s.py") for _ in range(n)]
        without_env = [rgrid(work / "without", "run", "s.py") for _ in range(n)]
    finally:
        subprocess.run([sys.executable, "-m", "rgrid", "local", "down"], env=env, capture_output=True)
        shutil.rmtree(work, ignore_errors=True)
    return with_env, without_env


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=30)
    runs = parser.parse_args().runs
    plain, boxed = sandbox_overhead(runs)
    med = statistics.median
    print(f"plain subprocess        : median {med(plain) * 1000:6.1f} ms")
    print(f"bubblewrap + cgroup     : median {med(boxed) * 1000:6.1f} ms")
    print(f"sandbox overhead        : median {(med(boxed) - med(plain)) * 1000:6.1f} ms")
    with_env, without_env = cached_env_overhead(max(10, runs // 3))
    print(f"rgrid run, no reqs      : median {med(without_env):.3f} s")
    print(f"rgrid run, cached env   : median {med(with_env):.3f} s")
    print(f"cached env overhead     : median {(med(with_env) - med(without_env)) * 1000:6.1f} ms")


if __name__ == "__main__":
    main()
