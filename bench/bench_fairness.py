"""How long another owner waits behind a large batch, on a full grid.

Owner A submits a batch of `--inputs` jobs of `--job-s` seconds to a grid
of two slots (the Ray head offers 2 CPUs); once it fills the grid, owner B
submits two runs. Reported per round: how long each of B's runs waited to
start and how many of A's inputs started meanwhile (the fair share says:
about one attempt's duration, a grid's worth of A's inputs). Then A's batch
is cancelled and the next round begins.

Measured on SQLite with one API server, and on PostgreSQL with two API
servers sharing the database (A talks to one, B to the other), the Ray head
registering with the first; B submits at once, and again after A's batch
has held the grid for a while (`--head-start`). Real Ray, SeaweedFS and
PostgreSQL, as the tests start them.

    uv run python bench/bench_fairness.py [--rounds 3] [--inputs 40] [--job-s 2] [--head-start 0 20]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from rgrid.client import Client  # noqa: E402
from rgrid.config import Target  # noqa: E402
from rgrid.hashcache import sha256_file  # noqa: E402
from rgrid.local.procs import free_port  # noqa: E402
from rgrid.transfer import upload_missing  # noqa: E402
from rgrid.wire import BatchCreate, BatchItem, ExecutionCreate, InputFile, Resources, Status  # noqa: E402
from tests.support.services import (  # noqa: E402
    ApiServer,
    start_api,
    start_postgres,
    start_ray,
    start_s3,
)

ONE_CPU = Resources(cpu=1, memory_mb=256, timeout_s=600)


def _upload(client: Client, path: Path) -> InputFile:
    sha = sha256_file(path)
    upload_missing(client, {sha: path}, {sha: path.stat().st_size}, lambda _t: lambda _n: None)
    return InputFile(sha256=sha, path=path.name)


def _wait(what: str, done: Callable[[], bool], limit_s: float = 600) -> None:
    deadline = time.monotonic() + limit_s
    while not done():
        if time.monotonic() > deadline:
            raise SystemExit(f"gave up waiting for {what}")
        time.sleep(0.1)


def one_round(
    a: Client, b: Client, script: Path, inputs: int, head_start_s: float
) -> tuple[list[float], int]:
    """(B's two waits to start, in s; A's inputs started while B waited).
    B submits `head_start_s` after A's batch filled the grid."""
    a_ref, b_ref = _upload(a, script), _upload(b, script)
    batch = a.create_batch(
        BatchCreate(
            script=a_ref,
            items=[BatchItem(input=f"i{n}", args=[str(n)]) for n in range(inputs)],
            resources=ONE_CPU,
        )
    )
    _wait(
        "A's batch to fill the grid", lambda: a.get_batch(batch.id, False).counts.get(Status.RUNNING, 0) >= 2
    )
    time.sleep(head_start_s)
    submitted = time.time()
    runs = [
        b.create_execution(ExecutionCreate(script=b_ref, args=[f"b{n}"], resources=ONE_CPU)) for n in range(2)
    ]
    _wait("B's runs", lambda: all(b.get_execution(r.id).status.final for r in runs))
    views = [b.get_execution(r.id) for r in runs]
    starts = [v.started_at.timestamp() for v in views if v.started_at]
    a_started = [
        v.started_at.timestamp()
        for v in (a.get_execution(e.id) for e in a.get_batch(batch.id).executions)
        if v.started_at is not None
    ]
    overtook = sum(1 for t in a_started if submitted < t < max(starts))
    a.cancel_batch(batch.id)
    _wait("A's batch to end", lambda: a.get_batch(batch.id, False).status != "running")
    return [s - submitted for s in starts], overtook


@contextmanager
def grid(root: Path, postgres: bool) -> Iterator[tuple[ApiServer, ApiServer]]:
    """A Ray head with 2 CPUs, storage, and one API (SQLite) or two sharing
    one PostgreSQL database."""
    s3 = start_s3(root / "s3")
    pg = start_postgres() if postgres else None
    port = free_port()
    ray = start_ray(root / "ray", f"http://127.0.0.1:{port}", num_cpus=2)
    url = pg.url if pg else f"sqlite:///{root / 'rgrid.db'}"
    first = start_api(root / "api1", url, s3, ray, s3.endpoint, port=port)
    second = start_api(root / "api2", url, s3, ray, s3.endpoint) if pg else first
    try:
        yield first, second
    finally:
        for proc in {id(first): first, id(second): second}.values():
            proc.proc.stop()
        ray.stop()
        if pg:
            pg.stop()
        s3.proc.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--inputs", type=int, default=40)
    parser.add_argument("--job-s", type=float, default=2.0)
    parser.add_argument("--head-start", type=float, nargs="+", default=[0.0, 20.0])
    opts = parser.parse_args()
    for postgres in (False, True):
        where = "PostgreSQL, two API servers" if postgres else "SQLite, one API server"
        with (
            tempfile.TemporaryDirectory(prefix="rgrid-fair-") as tmp,
            grid(Path(tmp), postgres) as (api_a, api_b),
        ):
            script = Path(tmp) / "work.py"
            script.write_text(f"import time\ntime.sleep({opts.job_s})\n")
            with (
                Client(Target(api_a.url, api_a.api_key)) as a,
                Client(Target(api_b.url, api_b.create_key("bea"))) as b,
            ):
                for head_start in opts.head_start:
                    waits: list[float] = []
                    overtaken: list[int] = []
                    for _ in range(opts.rounds):
                        w, n = one_round(a, b, script, opts.inputs, head_start)
                        waits += w
                        overtaken.append(n)
                    print(
                        f"{where}, B {head_start:g} s after A's batch filled the grid: B's runs started "
                        f"{statistics.median(waits):.2f} s after submission (median of {len(waits)}, "
                        f"max {max(waits):.2f} s; jobs of {opts.job_s:g} s on 2 slots); A's inputs "
                        f"started meanwhile: median {statistics.median(overtaken):g}, max {max(overtaken)}",
                        flush=True,
                    )


if __name__ == "__main__":
    main()
