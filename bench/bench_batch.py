"""A batch of 1,000 inputs of a trivial script on the local grid, against
separate `rgrid run -d` calls, and a fully cached rerun.

Run by hand:  uv run python bench/bench_batch.py [--inputs 1000] [--separate 200]
It starts a private local grid in a temp RGRID_HOME, writes --inputs small
distinct files, and stops everything at the end. Figures go into
docs/benchmarks.md.

- batch: `rgrid run --batch 'data/*.csv' job.py`, whole command: wall time,
  the CLI's peak memory, and from the API's timestamps the throughput from
  the first created to the last finished; then, the files uploaded, how long
  creating all the executions takes (the batch is cancelled at once);
- separate: --separate calls of `rgrid run -d job.py data/N.csv` one after
  another (what a shell loop does), then the same throughput figure;
- cached: the same batch again with --cache: nothing runs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from datetime import datetime
from pathlib import Path

from _grid import RGRID, client_code, grid_env, local_grid, rgrid

SCRIPT = "import sys\nprint(open(sys.argv[1]).read().strip())\n"
FINAL = ("succeeded", "failed", "cancelled")


def timed_with_rss(args: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float, str]:
    """Wall seconds, peak RSS (MiB, from wait4 of that one process) and
    stdout of one CLI call."""
    with tempfile.TemporaryFile("w+") as out:
        started = time.perf_counter()
        proc = subprocess.Popen([*RGRID, *args], cwd=cwd, env=env, stdout=out, stderr=subprocess.DEVNULL)
        _pid, _status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        out.seek(0)
        return wall, usage.ru_maxrss / 1024, out.read()


def span(executions: list[dict], cwd: Path, env: dict[str, str]) -> tuple[float, float]:
    """(seconds from the first created to the last created, to the last finished)."""
    created, finished = [], []
    for e in executions:
        view = json.loads(rgrid(["status", "--json", e["id"]], cwd, env))
        created.append(datetime.fromisoformat(view["created_at"]))
        finished.append(datetime.fromisoformat(view["finished_at"]))
    first = min(created)
    return (max(created) - first).total_seconds(), (max(finished) - first).total_seconds()


CREATE = """
import json, time
from pathlib import Path
from rgrid.batchplan import plan_batch
from rgrid.cli.batch import submit_batch
from rgrid.cli.connect import connect
client = connect(start_local=False)
plan = plan_batch("job.py", "data/*.csv", [], [], Path.cwd())
started = time.perf_counter()
batch = submit_batch(client, plan, {}, 1)
print(json.dumps({"id": batch.id, "s": time.perf_counter() - started}))
"""


def create_only(cwd: Path, env: dict[str, str]) -> float:
    """Uploads (all deduped by now) plus the one POST creating every
    execution; the batch is cancelled at once."""
    made = json.loads(client_code(CREATE, cwd, env))
    rgrid(["cancel", made["id"]], cwd, env)
    return float(made["s"])


def wait_all(ids: list[str], cwd: Path, env: dict[str, str]) -> None:
    for i in reversed(ids):
        while json.loads(rgrid(["status", "--json", i], cwd, env))["status"] not in FINAL:
            time.sleep(0.5)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--inputs", type=int, default=1000)
    parser.add_argument("--separate", type=int, default=200)
    opts = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="rgrid-bench-") as tmp:
        project = Path(tmp) / "project"
        (project / "data").mkdir(parents=True)
        (project / "job.py").write_text(SCRIPT)
        for i in range(opts.inputs):
            (project / "data" / f"{i:05d}.csv").write_text(f"{i}\n")
        env = grid_env(Path(tmp) / "home")
        with local_grid(project, env):
            rgrid(["run", "job.py", "data/00000.csv"], project, env)
            batch_args = ["run", "--json", "--batch", "data/*.csv", "job.py"]
            batch_wall, batch_rss, done = timed_with_rss(batch_args, project, env)
            batch = json.loads(done)
            assert batch["counts"] == {"succeeded": opts.inputs}, batch["counts"]
            _, batch_total_s = span([batch["executions"][0], batch["executions"][-1]], project, env)
            create_s = create_only(project, env)

            cached_wall, cached_rss, cached = timed_with_rss(
                ["run", "--cache", *batch_args[1:]], project, env
            )
            assert json.loads(cached)["counts"] == {"succeeded": opts.inputs}

            ids = []
            started = time.perf_counter()
            for i in range(opts.separate):
                ids.append(rgrid(["run", "-d", "job.py", f"data/{i:05d}.csv"], project, env).strip())
            submit_s = time.perf_counter() - started
            wait_all(ids, project, env)
            _, separate_total_s = span([{"id": ids[0]}, {"id": ids[-1]}], project, env)

    n, k = opts.inputs, opts.separate
    print(f"batch of {n}: whole command {batch_wall:.1f} s, CLI peak RSS {batch_rss:.0f} MiB")
    print(
        f"  after upload, all {n} executions created in {create_s:.2f} s (upload check + one POST /v1/batches)"
    )
    print(f"  first created -> last finished: {batch_total_s:.1f} s -> {n / batch_total_s:.1f} jobs/s")
    print(f"{k} separate `rgrid run -d`: submitted in {submit_s:.1f} s ({k / submit_s:.1f} runs/s)")
    print(f"  first created -> last finished: {separate_total_s:.1f} s -> {k / separate_total_s:.1f} jobs/s")
    print(f"fully cached rerun of the batch: {cached_wall:.2f} s, CLI peak RSS {cached_rss:.0f} MiB")


if __name__ == "__main__":
    main()
