"""What node heartbeats cost the API: simulated node agents beating at the
real interval (2 s) against one API server on PostgreSQL (or SQLite).

Each simulated agent joins with the worker token, registers, then beats
with its own credential every 2 s (the first beat of each spread over the
interval), as `rgrid worker` does. Reported: the API server's CPU (its own
process, from /proc, over the measured window) per beat and in % of a core,
the beats answered per second, and the latency p50/p99 the agents saw.
While they beat, `/healthz` is asked every 0.5 s with the local
supervisor's 1 s timeout: the number that failed is the number of times a
supervisor would have counted the API unhealthy.

    uv run python bench/bench_heartbeats.py [--agents 200 500 1000] [--seconds 30] [--procs 3] [--sqlite]

One Python process cannot send 500 beats a second on this machine: the
agents are spread over `--procs` simulator processes (default: one per 250
agents), which enrol first and then all start beating at one moment; the
window is measured from two intervals after that.

Real PostgreSQL and SeaweedFS as the tests start them; the API's Ray
driver points nowhere (heartbeats need no Ray). Figures go into
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from multiprocessing import Queue, get_context
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from _cpu import cpu_s  # noqa: E402

from rgrid.local.procs import free_port  # noqa: E402
from tests.support.services import (  # noqa: E402
    WORKER_TOKEN,
    ApiServer,
    Proc,
    RayHead,
    start_api,
    start_postgres,
    start_s3,
)
from tests.support.simagents import Swarm, swarm  # noqa: E402

INTERVAL_S = 2.0


def _simulate(base: str, agents: int, start_at: float, until: float, results: Queue) -> None:
    """One simulator process: its share of the agents."""
    seen = Swarm()
    asyncio.run(swarm(base, WORKER_TOKEN, agents, INTERVAL_S, until, seen, start_at=start_at))
    results.put((seen.latencies, seen.errors, seen.health_failures))


def run_load(servers: list[ApiServer], agents: int, seconds: float, procs: int) -> str:
    """One line of the table: the agents spread over the simulator
    processes, and the processes over the servers (as nodes would be behind
    a load balancer); the servers' CPU in all."""
    # Time to enrol (join and register) every agent before any beats.
    start_at = time.monotonic() + 3.0 + agents * 0.02
    warm_until = start_at + INTERVAL_S * 2
    until = warm_until + seconds
    context = get_context("fork")
    results: Queue = context.Queue()
    shares = [agents // procs + (1 if n < agents % procs else 0) for n in range(procs)]
    children = [
        context.Process(target=_simulate, args=(servers[k % len(servers)].url, n, start_at, until, results))
        for k, n in enumerate(shares)
    ]
    for child in children:
        child.start()
    time.sleep(max(0.0, warm_until - time.monotonic()))
    cpu_before = [cpu_s(server.proc.pid) for server in servers]
    time.sleep(max(0.0, until - time.monotonic()))
    cpu_each = [cpu_s(server.proc.pid) - before for server, before in zip(servers, cpu_before, strict=True)]
    cpu = sum(cpu_each)
    seen = Swarm()
    for _ in children:
        latencies, failed, unhealthy = results.get(timeout=600)
        seen.latencies += latencies
        seen.errors += failed
        seen.health_failures += unhealthy
    for child in children:
        child.join()
    window = sorted(took for at, took in seen.latencies if warm_until <= at < until)
    errors = [at for at in seen.errors if warm_until <= at < until]
    n = len(window)
    p99 = window[min(n - 1, int(n * 0.99))]
    shares_cpu = " + ".join(f"{100 * c / seconds:.0f}" for c in cpu_each)
    return (
        f"| {agents} | {len(servers)} | {n / seconds:.0f} | {1000 * cpu / max(n, 1):.2f} ms | {shares_cpu} % | "
        f"{1000 * statistics.median(window):.1f} ms | {1000 * p99:.1f} ms | {len(errors)} | "
        f"{len(seen.health_failures)} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, nargs="+", default=[200, 500, 1000])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--procs", type=int, help="simulator processes (default: one per 250 agents)")
    parser.add_argument(
        "--servers", type=int, nargs="+", default=[1], help="API servers behind the one database (PostgreSQL)"
    )
    parser.add_argument("--sqlite", action="store_true", help="SQLite instead of PostgreSQL")
    opts = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="rgrid-bench-beats-"))
    s3 = start_s3(root / "s3")
    pg = None if opts.sqlite else start_postgres()
    # No Ray: the API's driver keeps trying an address nobody listens on.
    # (Its Proc is never stopped: no process stands behind it.)
    nowhere = RayHead(
        f"127.0.0.1:{free_port()}", "", Proc(-1, root / "none.log"), token_path=root / "ray-token"
    )
    nowhere.token_path.write_text("bench-ray-token\n")
    database = f"sqlite:///{root / 'rgrid.db'}" if pg is None else pg.url
    apis = [start_api(root / f"api{n}", database, s3, nowhere, s3.endpoint) for n in range(max(opts.servers))]
    try:
        print(f"{'SQLite' if pg is None else 'PostgreSQL'}, {opts.seconds:.0f} s per line")
        print(
            "| agents | API servers | beats/s | API CPU per beat | API CPU (each) | p50 | p99 | errors "
            "| /healthz failures |"
        )
        print("|---|---|---|---|---|---|---|---|---|")
        for servers in opts.servers:
            for agents in opts.agents:
                procs = opts.procs or max(servers, -(-agents // 250))
                print(run_load(apis[:servers], agents, opts.seconds, procs), flush=True)
    finally:
        for api in apis:
            api.proc.stop()
        if pg is not None:
            pg.stop()
        s3.proc.stop()


if __name__ == "__main__":
    main()
