"""Wall time of `rgrid run examples/hello.py examples/data.csv` on a warm
local grid, against `ray job submit --working-dir` on the same Ray cluster.

Run by hand:  uv run python bench/bench_run.py [--runs 20] [--ray-runs 5]
It starts a private local grid in a temp RGRID_HOME and stops it at the end.
Figures go into docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from _grid import REPO, RGRID, client_code, grid_env, local_grid, rgrid, timed


def breakdown(cwd: Path, env: dict[str, str]) -> dict[str, float]:
    """One run through the client library, phase by phase (milliseconds)."""
    code = r"""
import json, sys, time
t0 = time.perf_counter()
sys.modules.setdefault("httpx._main", None)  # as rgrid.cli.entry does
from rgrid.cli.main import build_parser
build_parser(with_plugins=False)
from rgrid.cli.connect import connect
from rgrid.cli.run import fetch_outputs
from rgrid.follow import follow
from rgrid.inputs import plan_run
from rgrid.hashcache import sha256_file
from rgrid.transfer import upload_missing
from rgrid.wire import ExecutionCreate, InputFile
from pathlib import Path
t1 = time.perf_counter()
plan = plan_run("examples/hello.py", ["examples/data.csv"], [])
client = connect(start_local=False)
shas = {f.remote: sha256_file(f.local) for f in plan.files}
upload_missing(client, {shas[f.remote]: f.local for f in plan.files},
               {shas[f.remote]: f.size for f in plan.files}, lambda t: (lambda n: None))
t2 = time.perf_counter()
ex = client.create_execution(ExecutionCreate(
    script=InputFile(sha256=shas[plan.script.remote], path=plan.script.remote), args=plan.args,
    inputs=[InputFile(sha256=shas[f.remote], path=f.remote) for f in plan.inputs]))
t3 = time.perf_counter()
final = follow(client, ex.id, on_chunk=lambda c: None)
t4 = time.perf_counter()
fetch_outputs(client, ex.id, Path("."))
t5 = time.perf_counter()
a = final.attempts[-1]
queue = (a.started_at - final.created_at).total_seconds()
run = final.duration_s
print(json.dumps({
    "cli_imports_ms": (t1 - t0) * 1000,
    "upload_check_ms": (t2 - t1) * 1000,
    "submit_ms": (t3 - t2) * 1000,
    "queue_to_runner_start_ms": queue * 1000,
    "script_process_ms": run * 1000,
    "logs_and_completion_return_ms": ((t4 - t3) - queue - run) * 1000,
    "outputs_download_ms": (t5 - t4) * 1000,
}))
"""
    return json.loads(client_code(code, cwd, env))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--ray-runs", type=int, default=5)
    opts = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="rgrid-bench-") as tmp:
        project = Path(tmp) / "project"
        shutil.copytree(REPO / "examples", project / "examples")
        env = grid_env(Path(tmp) / "home")
        with local_grid(project, env):
            for _ in range(3):  # warm: Ray worker processes, caches
                rgrid(["run", "examples/hello.py", "examples/data.csv"], project, env)
            rgrid_argv = [*RGRID, "run", "examples/hello.py", "examples/data.csv"]
            rgrid_times = [timed(rgrid_argv, project, env) for _ in range(opts.runs)]
            phases = [breakdown(project, env) for _ in range(5)]

            status = json.loads(rgrid(["local", "status", "--json"], project, env))["pieces"]
            dashboard = next(p["url"] for p in status if p["name"] == "ray")
            ray_env = {
                **env,
                "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
                "RAY_ADDRESS": dashboard,
                # The grid's Ray requires its token (RGRID_HOME/local/ray-token).
                "RAY_AUTH_MODE": "token",
                "RAY_AUTH_TOKEN_PATH": str(Path(env["RGRID_HOME"]) / "local" / "ray-token"),
            }
            ray_argv = [
                str(Path(sys.executable).parent / "ray"),
                "job",
                "submit",
                "--working-dir",
                ".",
                "--",
                "python",
                "examples/hello.py",
                "examples/data.csv",
            ]
            ray_times = [timed(ray_argv, project, ray_env) for _ in range(opts.ray_runs)]

    def summary(xs: list[float]) -> str:
        return f"median {statistics.median(xs):.3f} s, min {min(xs):.3f} s, max {max(xs):.3f} s (n={len(xs)})"

    print(f"rgrid run          : {summary(rgrid_times)}")
    print(f"ray job submit     : {summary(ray_times)}")
    print(f"speed-up (medians) : {statistics.median(ray_times) / statistics.median(rgrid_times):.1f}x")
    print("breakdown (median of 5, ms):")
    for key in phases[0]:
        print(f"  {key:<32} {statistics.median(p[key] for p in phases):7.1f}")


if __name__ == "__main__":
    main()
