"""The autoscaler's figures (docs/benchmarks.md).

On the local provider (a private local grid, `--max-workers 2`):
- from the first queued job on an empty grid to its start on a new node;
- from a node's last job to its deletion (the idle timeout is part of it);
- the largest node count seen during a burst of 200 jobs.

Against the fake Hetzner API with realistic latencies:
- the API calls one autoscaler makes per cycle and per hour at steady state
  (nodes running, nothing to do), and during a scale-up.

Run by hand:  uv run python bench/bench_autoscaler.py [--rounds 3] [--burst 200]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from _grid import REPO, grid_env, local_grid, rgrid

sys.path.insert(0, str(REPO))

IDLE_S = 10


def when(value: str) -> datetime:
    return datetime.fromisoformat(value).astimezone(UTC)


def local_figures(rounds: int, burst: int) -> dict:
    from rgrid.client import Client
    from rgrid.config import Target
    from rgrid.local.grid import LocalGrid

    starts, deletions = [], []
    most = 0
    with tempfile.TemporaryDirectory(prefix="rgrid-bench-as-") as tmp:
        home = Path(tmp)
        env = grid_env(home, RGRID_AUTOSCALER_IDLE_S=str(IDLE_S))
        work = home / "project"
        work.mkdir()
        (work / "job.py").write_text("print('ok')\n")
        with local_grid(work, env, "--max-workers", "2"):
            target = LocalGrid(home).target()
            client = Client(Target(target.api_url, target.api_key))
            for _ in range(rounds):
                while client.autoscaler().nodes:
                    time.sleep(0.5)
                eid = json.loads(rgrid(["run", "-d", "--json", "job.py"], work, env))["id"]
                while not (e := client.get_execution(eid)).finished_at:
                    time.sleep(0.2)
                assert e.started_at is not None and e.finished_at is not None
                starts.append((e.started_at - e.created_at).total_seconds())
                while client.autoscaler().nodes:
                    time.sleep(0.2)
                deletions.append((datetime.now(UTC) - e.finished_at.astimezone(UTC)).total_seconds())
            # The burst: one upload, then the same execution again and again.
            first = json.loads(rgrid(["run", "-d", "--json", "job.py"], work, env))["id"]
            ids = [first] + [client.retry(first).id for _ in range(burst - 1)]
            stop = threading.Event()

            def watch() -> None:
                nonlocal most
                while not stop.wait(0.2):
                    live = [n for n in client.autoscaler().nodes if n.state not in ("deleting", "deleted")]
                    most = max(most, len(live))

            watcher = threading.Thread(target=watch, daemon=True)
            watcher.start()
            started = time.perf_counter()
            waiting = ("queued", "dispatched", "running")
            while any(e.status in waiting for e in client.list_executions(limit=len(ids) + 5).executions):
                time.sleep(1.0)
            burst_s = time.perf_counter() - started
            stop.set()
            watcher.join()
            client.close()
    return {
        "first_start_s": starts,
        "last_job_to_deleted_s": deletions,
        "idle_timeout_s": IDLE_S,
        "burst": burst,
        "burst_s": burst_s,
        "most_nodes_in_burst": most,
    }


def hetzner_calls(latency_s: float, cycles: int) -> dict:
    """Calls per cycle against the fake Hetzner API, at steady state (three
    nodes running, nothing queued) and while scaling up."""
    from sqlalchemy import select

    from rgrid.wire import WorkerRegistration
    from rgrid_api.autoscaler.loop import Autoscaler, config_from
    from rgrid_api.autoscaler.providers import make_provider, offered_runtimes
    from rgrid_api.db.engine import make_engine, make_sessionmaker
    from rgrid_api.db.migrate import upgrade
    from rgrid_api.db.models import Instance
    from rgrid_api.notify import ChangeFeed
    from rgrid_api.settings import Settings
    from rgrid_api.workers import register
    from tests.support.fake_hcloud import TOKEN, FakeHcloud

    root = Path(tempfile.mkdtemp(prefix="rgrid-bench-hc-"))
    url = f"sqlite:///{root / 'rgrid.db'}"
    upgrade(url)
    sessions = make_sessionmaker(make_engine(url))
    try:
        with FakeHcloud(latency_s=latency_s) as fake:
            settings = Settings(
                autoscaler_provider="hetzner", hcloud_token=TOKEN, hcloud_endpoint=fake.url, cluster_name="b",
                autoscaler_min_nodes=3, autoscaler_max_nodes=3, autoscaler_max_creates_per_cycle=3,
            )  # fmt: skip
            provider = make_provider(settings)
            assert provider is not None
            scaler = Autoscaler(
                settings, sessions, ChangeFeed(), None, provider,
                config_from(settings, provider, offered_runtimes(settings)),
            )  # fmt: skip
            before = len(fake.requests)
            t0 = time.perf_counter()
            scaler.cycle()
            scale_up = {"calls": len(fake.requests) - before, "seconds": time.perf_counter() - t0}
            # The nodes boot and their agents register: steady state.
            with sessions() as session:
                names = list(session.scalars(select(Instance.name)))
                for name in names:
                    register(session, WorkerRegistration(
                        id=name, host_name=name, resources={"CPU": 2}, runtimes=["python:3.11"],
                        sandbox="bubblewrap", provider="hetzner", version="bench",
                    ))  # fmt: skip
                    session.commit()
            time.sleep(0.5)  # the creation actions finish
            scaler.cycle()  # they join
            before = len(fake.requests)
            durations = []
            for _ in range(cycles):
                t0 = time.perf_counter()
                scaler.cycle()
                durations.append(time.perf_counter() - t0)
            per_cycle = (len(fake.requests) - before) / cycles
    finally:
        shutil.rmtree(root, ignore_errors=True)
    interval = Settings().autoscaler_interval_s
    return {
        "latency_s": latency_s,
        "nodes": len(names),
        "scale_up_cycle": scale_up,
        "steady_calls_per_cycle": per_cycle,
        "steady_cycle_s_median": statistics.median(durations),
        "interval_s": interval,
        # One list per cycle, and the server types once an hour.
        "steady_calls_per_hour": per_cycle * 3600 / interval + 1,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--burst", type=int, default=200)
    parser.add_argument("--latency", type=float, default=0.15)
    parser.add_argument("--cycles", type=int, default=20)
    args = parser.parse_args()
    calls = hetzner_calls(args.latency, args.cycles)
    print(json.dumps({"hetzner": calls}, indent=1), flush=True)
    local = local_figures(args.rounds, args.burst)
    print(json.dumps({"local": local}, indent=1))
    print(
        f"first start on a new node: median {statistics.median(local['first_start_s']):.1f} s; "
        f"last job to node deleted: median {statistics.median(local['last_job_to_deleted_s']):.1f} s "
        f"(idle timeout {IDLE_S} s); burst of {args.burst}: at most {local['most_nodes_in_burst']} nodes, "
        f"{local['burst_s']:.0f} s; Hetzner steady state: {calls['steady_calls_per_cycle']:.1f} calls/cycle, "
        f"{calls['steady_calls_per_hour']:.0f} calls/h"
    )


if __name__ == "__main__":
    main()
