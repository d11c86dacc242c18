"""Throughput of trivial jobs through the API on the local grid, and the CPU
each job costs, split by process.

Run by hand:  uv run python bench/bench_throughput.py [--jobs 300] [--cpu 1] [--python PATH]
It starts a private local grid in a temp RGRID_HOME, warms it, submits
--jobs executions of a one-line script through the client library (one
`POST /v1/executions` each, detached), waits until all are final, and stops
the grid. Figures go into docs/benchmarks.md.

CPU is read from /proc for every process of the grid (the supervisor's
descendants) before and after: a process's own time is `utime + stime`; what
it reaped (`cutime + cstime`) is its children's. A Ray worker reaps the
sandbox and the job, so that share is reported apart from the runner's own.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from collections import defaultdict
from pathlib import Path

from _cpu import descendants
from _grid import client_code, grid_env, local_grid, rgrid

from rgrid.local.grid import LocalGrid

SCRIPT = "print('ok')\n"


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def role(cmd: str) -> str:
    if "rgrid_runner.raydriver" in cmd:
        return "ray driver (dispatcher's)"
    if "rgrid server" in cmd:
        return "api"
    if "default_worker.py" in cmd or (cmd.startswith("ray::") and "Agent" not in cmd):
        return "runner"
    if "weed" in cmd:
        return "s3"
    return "ray (raylet, gcs, agents)"


def grid_cpu(root: int) -> dict[int, tuple[str, float, float]]:
    """Every descendant of `root`: (role, own CPU s, reaped CPU s)."""
    return {pid: (role(_cmdline(pid)), st.own_s, st.reaped_s) for pid, st in descendants(root).items()}


def cpu_split(before: dict, after: dict) -> dict[str, float]:
    """CPU seconds spent between two readings, by role; processes that came
    and went in between are counted in their parent's reaped time."""
    split: dict[str, float] = defaultdict(float)
    for pid, (kind, own, reaped) in after.items():
        _k, own0, reaped0 = before.get(pid, (kind, 0.0, 0.0))
        split[kind] += own - own0
        child_kind = "sandbox and job" if kind == "runner" else kind
        split[child_kind] += reaped - reaped0
    return dict(split)


def submit_all(env: dict[str, str], cwd: Path, jobs: int, cpu: float) -> dict:
    """Submit `jobs` executions and wait for all of them, in a child process
    that speaks to the grid through the client library."""
    code = f"""
import json, sys, time
from pathlib import Path
from rgrid.cli.connect import connect
from rgrid.hashcache import sha256_file
from rgrid.transfer import upload_missing
from rgrid.wire import ExecutionCreate, InputFile, Resources
client = connect(start_local=False)
sha = sha256_file(Path("job.py"))
upload_missing(client, {{sha: Path("job.py")}}, {{sha: Path("job.py").stat().st_size}}, lambda t: (lambda n: None))
body = ExecutionCreate(script=InputFile(sha256=sha, path="job.py"), resources=Resources(cpu={cpu}))
started = time.perf_counter()
ids = [client.create_execution(body).id for _ in range({jobs})]
submitted = time.perf_counter()
# Cheap polling (one small read), so the bench does not load the API it
# measures: the last execution until it ends, then the whole list.
final = ("succeeded", "failed", "cancelled")
while client.get_execution(ids[-1]).status not in final:
    time.sleep(0.1)
while True:
    views = {{e.id: e for e in client.list_executions(limit=min(1000, {jobs})).executions}}
    if all(views[i].status in final for i in ids):
        break
    time.sleep(0.1)
done = time.perf_counter()
assert all(views[i].status == "succeeded" for i in ids)
print(json.dumps({{"submit_s": submitted - started, "total_s": done - started}}))
"""
    return json.loads(client_code(code, cwd, env))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=300)
    parser.add_argument("--cpu", type=float, default=1.0, help="CPUs each job asks for")
    parser.add_argument(
        "--python",
        help="a python3.11 for the jobs: its directory goes first on the grid's PATH, where a node looks"
        " for its runtimes (default: what the node finds)",
    )
    opts = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="rgrid-bench-") as tmp:
        project = Path(tmp) / "project"
        project.mkdir()
        (project / "job.py").write_text(SCRIPT)
        env = grid_env(Path(tmp) / "home")
        if opts.python:
            env["PATH"] = f"{Path(opts.python).parent}{os.pathsep}{env['PATH']}"
        with local_grid(project, env):
            for _ in range(3):
                rgrid(["run", "job.py"], project, env)
            record = LocalGrid(Path(tmp) / "home").read_state().supervisor
            assert record is not None, "the local grid's supervisor is not running"
            supervisor = record.pid
            before = grid_cpu(supervisor)
            times = submit_all(env, project, opts.jobs, opts.cpu)
            split = cpu_split(before, grid_cpu(supervisor))

    n = opts.jobs
    print(f"jobs                : {n} (cpu {opts.cpu:g} each, python {opts.python or 'found by the node'})")
    print(f"submitted in        : {times['submit_s']:.2f} s ({n / times['submit_s']:.0f} creates/s)")
    print(f"all final after     : {times['total_s']:.2f} s -> {n / times['total_s']:.1f} jobs/s")
    print("CPU per job (ms)    :")
    for kind, seconds in sorted(split.items(), key=lambda kv: -kv[1]):
        print(f"  {kind:<26} {seconds * 1000 / n:7.1f}")
    print(f"  {'whole grid':<26} {sum(split.values()) * 1000 / n:7.1f}")


if __name__ == "__main__":
    main()
