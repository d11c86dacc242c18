"""Failover timings on a local grid with extra worker nodes.

A worker node is frozen (SIGSTOP on every process of its session: a hung or
partitioned machine, where no task visibly dies). Measured from the freeze:
- Ray's own node-death detection (the node shows as dead in ray.nodes()),
- rgrid's requeue of the attempts that ran there (heartbeat timeout path),
- completion of those executions elsewhere.
A crash where processes die (SIGKILL) is covered by tests/chaos: Ray reports
the task's death at once and rgrid requeues within milliseconds.

Run by hand:  uv run python bench/bench_failover.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import tempfile
import time
from pathlib import Path

from _grid import grid_env, local_grid, rgrid

from rgrid.local.grid import LocalGrid

JOB = "import time\ntime.sleep(20)\nprint('done')\n"


def _seconds(value: float | None) -> str:
    return "not within 120 s" if value is None else f"{value:.1f} s"


def run_rounds(work: Path, n: int) -> list[tuple[float | None, float | None, float | None]]:
    """Freeze the worker node of a fresh grid `n` times, one grid a round."""
    env = grid_env(work / "home")
    (work / "job.py").write_text(JOB)
    # Ray reads this when imported: without it the driver looks for its
    # raylet on the machine's outward address instead of loopback.
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    # The grid's Ray requires its token.
    os.environ["RAY_AUTH_MODE"] = "token"
    os.environ["RAY_AUTH_TOKEN_PATH"] = str(work / "home" / "local" / "ray-token")
    import ray

    from rgrid.local.procs import session_members, stop_session

    results = []
    for r in range(n):
        with local_grid(work, env, "--workers", "1"):
            state = LocalGrid(work / "home").read_state()
            gcs = state.pieces["ray"].ports["gcs"]
            ray.init(address=f"127.0.0.1:{gcs}", logging_level="ERROR", log_to_driver=False)
            ids = [rgrid(["run", "-d", "job.py"], work, env).strip() for _ in range(4)]
            victim = "local-worker-1"
            deadline = time.time() + 60
            while time.time() < deadline:
                listing = json.loads(rgrid(["workers", "--json"], work, env))["workers"]
                if any(w["id"] == victim and w["running"] > 0 for w in listing):
                    break
                time.sleep(0.2)
            node = next(
                nd["NodeID"]
                for nd in ray.nodes()
                if f"rgrid_worker_{victim}" in nd["Resources"] and nd["Alive"]
            )
            session = state.pid_of("worker-1")
            assert session is not None, "worker node 1 is not running"
            frozen = time.time()
            for pid in session_members(session):
                os.kill(pid, signal.SIGSTOP)
            t_ray = t_requeue = t_done = None
            while time.time() < frozen + 120 and None in (t_ray, t_requeue, t_done):
                now = time.time() - frozen
                if t_ray is None and not any(nd["Alive"] for nd in ray.nodes() if nd["NodeID"] == node):
                    t_ray = now
                statuses = [json.loads(rgrid(["status", i, "--json"], work, env)) for i in ids]
                lost = [
                    a
                    for s in statuses
                    for a in s["attempts"]
                    if a["worker"] == victim and a["failure_reason"] == "worker_lost"
                ]
                if t_requeue is None and lost:
                    t_requeue = now
                if t_done is None and lost and all(s["status"] == "succeeded" for s in statuses):
                    t_done = now
                time.sleep(0.1)
            stop_session(session, grace_s=0, first=signal.SIGKILL)
            ray.shutdown()
        results.append((t_ray, t_requeue, t_done))
        print(
            f"round {r + 1}: ray node dead {_seconds(t_ray)}, rgrid requeue {_seconds(t_requeue)}, "
            f"completed elsewhere {_seconds(t_done)} (jobs take 20 s)",
            flush=True,
        )
    return results


def main() -> None:
    rounds = argparse.ArgumentParser()
    rounds.add_argument("--rounds", type=int, default=3)
    n = rounds.parse_args().rounds
    with tempfile.TemporaryDirectory(prefix="rgrid-bench-failover-") as tmp:
        results = run_rounds(Path(tmp), n)
    for label, column in (("ray node death", 0), ("rgrid requeue", 1), ("completion", 2)):
        values = [x[column] for x in results if x[column] is not None]
        print(f"{label:<15}: median {statistics.median(values):.1f} s, max {max(values):.1f} s")


if __name__ == "__main__":
    main()
