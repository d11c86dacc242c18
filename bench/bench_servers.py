"""One API server against two behind one PostgreSQL, on the same load:
reads and dispatching. (Heartbeats over two servers: `bench_heartbeats
--servers 1 2`.)

- **Reads.** `wrk` (Debian package) against `GET /v1/executions/{id}` of
  a running execution (a database read on every request) for `--seconds`,
  with `--connections` in all: to the first server, then split between
  both. Reported: requests/s, p50/p99 as wrk saw them, and the CPU each
  request cost each API server and PostgreSQL.
- **Dispatching.** `--jobs` one-line jobs submitted through the client
  library, all to the first server or half to each, on a Ray head of
  `--cpus` CPUs; the time until every one has ended, and the CPU each job
  cost the API servers and PostgreSQL. Every server runs dispatch rounds,
  one at a time (the advisory lock), whichever received the run.

This machine has two cores, which wrk, the servers and PostgreSQL share:
what transfers to a bigger control server is the CPU per request of each
process, from which the docs derive what a third server would add and
where PostgreSQL becomes the limit.

    uv run python bench/bench_servers.py [--seconds 15] [--connections 16] [--jobs 200] [--cpus 4]

Real PostgreSQL, SeaweedFS and Ray, as the tests start them. Figures go
into docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from _cpu import cpu_s, tree_cpu_s  # noqa: E402

from rgrid.client import Client  # noqa: E402
from rgrid.config import Target  # noqa: E402
from rgrid.hashcache import sha256_file  # noqa: E402
from rgrid.local.procs import free_port  # noqa: E402
from rgrid.transfer import upload_missing  # noqa: E402
from rgrid.wire import ExecutionCreate, InputFile, Resources, Status  # noqa: E402
from tests.support.services import (  # noqa: E402
    ApiServer,
    Postgres,
    start_api,
    start_postgres,
    start_ray,
    start_s3,
)

ONE_CPU = Resources(cpu=1, memory_mb=256, timeout_s=600)
# One key reads as fast as wrk can ask: the per-key rate limit would
# answer most of it with a cheap 429 instead.
UNLIMITED = {"RGRID_RATE_LIMIT_PER_S": "1000000", "RGRID_RATE_LIMIT_BURST": "1000000"}


@contextmanager
def grid(root: Path, cpus: int) -> Iterator[tuple[list[ApiServer], Postgres]]:
    """Storage, PostgreSQL, a Ray head of `cpus` CPUs registering with the
    first of two API servers on the one database."""
    s3 = start_s3(root / "s3")
    pg = start_postgres()
    port = free_port()
    ray = start_ray(root / "ray", f"http://127.0.0.1:{port}", num_cpus=cpus)
    servers = [start_api(root / "api1", pg.url, s3, ray, s3.endpoint, UNLIMITED, port=port)]
    servers.append(start_api(root / "api2", pg.url, s3, ray, s3.endpoint, UNLIMITED))
    try:
        yield servers, pg
    finally:
        for server in servers:
            server.proc.stop()
        ray.stop()
        pg.stop()
        s3.proc.stop()


def client(server: ApiServer) -> Client:
    return Client(Target(api_url=server.url, api_key=server.api_key))


def script_ref(c: Client, path: Path) -> InputFile:
    sha = sha256_file(path)
    upload_missing(c, {sha: path}, {sha: path.stat().st_size}, lambda _t: lambda _n: None)
    return InputFile(sha256=sha, path=path.name)


def wait(what: str, done: Callable[[], bool], limit_s: float = 900) -> None:
    deadline = time.monotonic() + limit_s
    while not done():
        if time.monotonic() > deadline:
            raise SystemExit(f"gave up waiting for {what}")
        time.sleep(0.2)


def cpu_of(servers: list[ApiServer], pg: Postgres) -> list[float]:
    """CPU seconds so far of each server, then of PostgreSQL (its backends included)."""
    return [*(cpu_s(s.proc.pid) for s in servers), tree_cpu_s(pg.proc.pid)]


def spent(before: list[float], after: list[float]) -> list[float]:
    return [b - a for a, b in zip(before, after, strict=True)]


def wrk(url: str, key: str, seconds: int, connections: int) -> tuple[int, str, str]:
    """(requests, p50, p99) of one wrk run; any answer but 200 ends the bench."""
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{seconds}s",
            "--latency",
            "--timeout",
            "2s",
            "-H",
            f"Authorization: Bearer {key}",
            url,
        ],
        text=True,
        capture_output=True,
        check=True,
    ).stdout
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    if "Non-2xx" in out or "Socket errors" in out:
        raise SystemExit(f"wrk saw errors:\n{out}")
    p50 = re.search(r"^\s+50%\s+(\S+)", out, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.M)
    return requests, p50.group(1) if p50 else "?", p99.group(1) if p99 else "?"


def reads(
    targets: list[ApiServer],
    servers: list[ApiServer],
    pg: Postgres,
    execution_id: str,
    seconds: int,
    connections: int,
) -> str:
    """One line: wrk against each of `targets` at once, the connections
    split; the CPU of every server (an idle one still runs its loops)."""
    results: list[tuple[int, str, str]] = []
    per_server = max(1, connections // len(targets))

    def load(server: ApiServer) -> None:
        results.append(wrk(f"{server.url}/v1/executions/{execution_id}", server.api_key, seconds, per_server))

    threads = [threading.Thread(target=load, args=(s,)) for s in targets]
    before = cpu_of(servers, pg)
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    used = spent(before, cpu_of(servers, pg))
    requests = sum(r[0] for r in results)
    each = " + ".join(f"{1000 * c / requests:.2f}" for c in used[:-1])
    return (
        f"| reads | {len(targets)} | {requests / seconds:.0f} req/s | {' / '.join(r[1] for r in results)} "
        f"| {' / '.join(r[2] for r in results)} | {each} ms | {1000 * used[-1] / requests:.2f} ms |"
    )


def dispatching(
    targets: list[ApiServer], servers: list[ApiServer], pg: Postgres, script: Path, jobs: int
) -> str:
    """One line: `jobs` runs submitted round-robin over `targets`, until
    all ended; the CPU of every server."""
    clients = [client(s) for s in targets]
    refs = [script_ref(c, script) for c in clients]
    before = cpu_of(servers, pg)
    started = time.perf_counter()
    submitted: list[tuple[Client, str]] = []
    for n in range(jobs):
        c, ref = clients[n % len(clients)], refs[n % len(clients)]
        submitted.append((c, c.create_execution(ExecutionCreate(script=ref, resources=ONE_CPU)).id))
    wait(f"{jobs} jobs", lambda: all(c.get_execution(i).status.final for c, i in submitted[-len(clients) :]))
    wait(f"{jobs} jobs", lambda: all(c.get_execution(i).status.final for c, i in submitted))
    took = time.perf_counter() - started
    used = spent(before, cpu_of(servers, pg))
    failed = sum(1 for c, i in submitted if c.get_execution(i).status != Status.SUCCEEDED)
    each = " + ".join(f"{1000 * c / jobs:.1f}" for c in used[:-1])
    return (
        f"| dispatching | {len(targets)} | {jobs / took:.1f} jobs/s | {took:.1f} s for {jobs} "
        f"| {failed} failed | {each} ms | {1000 * used[-1] / jobs:.1f} ms |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--cpus", type=int, default=4, help="CPUs the Ray head offers")
    opts = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="rgrid-bench-servers-"))
    (root / "job.py").write_text("print('ok')\n")
    (root / "sleep.py").write_text("import time\ntime.sleep(3600)\n")
    with grid(root, opts.cpus) as (servers, pg):
        first = client(servers[0])
        for _ in range(3):  # warm: the runtime, the sandbox, both servers' pools
            for c in (first, client(servers[1])):
                view = c.create_execution(
                    ExecutionCreate(script=script_ref(c, root / "job.py"), resources=ONE_CPU)
                )
                wait("a warm-up run", lambda c=c, i=view.id: c.get_execution(i).status.final)
        sleeper = first.create_execution(
            ExecutionCreate(script=script_ref(first, root / "sleep.py"), resources=ONE_CPU)
        )
        wait("a running execution", lambda: first.get_execution(sleeper.id).status == Status.RUNNING)
        print(
            f"PostgreSQL; reads: {opts.connections} connections for {opts.seconds} s; Ray head of {opts.cpus} CPUs"
        )
        print(
            "| load | API servers loaded | rate | p50 (each) | p99 (each) | API CPU each, per request or job | PostgreSQL CPU, per request or job |"
        )
        print("|---|---|---|---|---|---|---|")
        for n in (1, 2):
            print(reads(servers[:n], servers, pg, sleeper.id, opts.seconds, opts.connections), flush=True)
        first.cancel(sleeper.id)
        for n in (1, 2):
            print(dispatching(servers[:n], servers, pg, root / "job.py", opts.jobs), flush=True)


if __name__ == "__main__":
    main()
