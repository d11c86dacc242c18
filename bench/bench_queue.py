"""What a deep queue costs the control plane's loops: a dispatch claim, a
lease renewal cycle and the monitor's pass, with 100 queued executions and
with 100,000 (or `--sizes`), on SQLite and PostgreSQL.

Each size is a fresh migrated database with that many queued executions of
ten owners, 50 dispatched attempts (what the dispatcher holds in Ray and
renews) and 50 running ones. Each operation is timed REPEAT times and the
median reported, with its ratio to the smallest size in the same run. A
claim takes up to 32 runs on a grid of 256 CPUs; what it claimed is put back
(untimed), so every claim sees the same queue.

    uv run python bench/bench_queue.py [--sizes 100 100000] [--sqlite-only]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sqlalchemy import Engine, delete, func, insert, select  # noqa: E402

from rgrid.wire import Status  # noqa: E402
from rgrid_api.attempts import Sharing, claim_queued, expired_attempts, renew_dispatched  # noqa: E402
from rgrid_api.db.engine import make_engine, make_sessionmaker  # noqa: E402
from rgrid_api.db.migrate import upgrade  # noqa: E402
from rgrid_api.db.models import Attempt, Execution  # noqa: E402
from rgrid_api.db.times import utcnow  # noqa: E402
from rgrid_api.ids import new_execution_id  # noqa: E402
from rgrid_api.workers import stale_workers  # noqa: E402
from rgrid_runner.driver_messages import Capacity  # noqa: E402
from tests.support.services import postgres_available, start_postgres  # noqa: E402

OWNERS = [f"owner{n}" for n in range(10)]
IN_FLIGHT = 50
RUNNING = 50
CHUNK = 5000
REPEAT = 100
LEASE_S = 30.0
GRID = Capacity(nodes=[(64.0, 262144.0)] * 4)


def _row(execution_id: str, n: int, status: Status, created: object) -> dict[str, object]:
    return {
        "id": execution_id,
        "owner": OWNERS[n % len(OWNERS)],
        "status": status,
        "script_name": "job.py",
        "script_sha256": "0" * 64,
        "args": [],
        "inputs": [],
        "env": {},
        "runtime": "python:3.11",
        "cpu": 1.0,
        "memory_mb": 256,
        "timeout_s": 60.0,
        "retries": 0,
        "attempt": 0 if status == Status.QUEUED else 1,
        "created_at": created,
    }


def fill(engine: Engine, queued: int) -> list[tuple[str, int]]:
    """The queue, and the open attempts; the dispatched attempts' keys."""
    now = utcnow()
    in_flight: list[tuple[str, int]] = []
    with engine.begin() as conn:
        for start in range(0, queued, CHUNK):
            conn.execute(
                insert(Execution),
                [
                    _row(new_execution_id(), n, Status.QUEUED, now - timedelta(seconds=queued - n))
                    for n in range(start, min(start + CHUNK, queued))
                ],
            )
        for n in range(IN_FLIGHT + RUNNING):
            status = Status.DISPATCHED if n < IN_FLIGHT else Status.RUNNING
            execution_id = new_execution_id()
            conn.execute(insert(Execution), [_row(execution_id, n, status, now)])
            conn.execute(
                insert(Attempt),
                [
                    {
                        "execution_id": execution_id,
                        "number": 1,
                        "status": status,
                        "dispatched_at": now,
                        "lease_expires_at": now + timedelta(hours=1),
                    }
                ],
            )
            if status == Status.DISPATCHED:
                in_flight.append((execution_id, 1))
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("ANALYZE")
    return in_flight


def median_ms(call: Callable[[], object], undo: Callable[[object], None] | None = None) -> float:
    times = []
    for _ in range(REPEAT):
        started = time.perf_counter()
        result = call()
        times.append(time.perf_counter() - started)
        if undo is not None:
            undo(result)
    return 1000 * statistics.median(times)


def measure(url: str, queued: int) -> dict[str, float]:
    upgrade(url)
    engine = make_engine(url)
    sessions = make_sessionmaker(engine)
    in_flight = fill(engine, queued)

    def claim() -> list[str]:
        with sessions() as session:
            return [c.execution_id for c in claim_queued(session, LEASE_S, sharing=Sharing(), grid=GRID)]

    def put_back(claimed: object) -> None:
        ids = list(claimed)  # type: ignore[call-overload]
        assert ids, "a claim took nothing"
        with engine.begin() as conn:
            conn.execute(delete(Attempt).where(Attempt.execution_id.in_(ids)))
            # Straight back to queued (no such move exists for a run): the
            # triggers check moves of status, so it goes by way of a fresh row.
            conn.execute(delete(Execution).where(Execution.id.in_(ids)))
            conn.execute(
                insert(Execution),
                [
                    _row(execution_id, n, Status.QUEUED, utcnow() - timedelta(days=1))
                    for n, execution_id in enumerate(ids)
                ],
            )

    def renew_cycle() -> None:
        with sessions() as session:
            renew_dispatched(session, in_flight, LEASE_S)

    def monitor_pass() -> None:
        with sessions() as session:
            stale_workers(session, 10.0)
            expired_attempts(session)

    figures = {
        "a claim (up to 32 runs)": median_ms(claim, put_back),
        f"a lease renewal cycle ({IN_FLIGHT} in flight)": median_ms(renew_cycle),
        "the monitor's pass (dead nodes, expired leases)": median_ms(monitor_pass),
    }
    with engine.connect() as conn:
        left = conn.scalar(select(func.count()).where(Execution.status == Status.QUEUED))
    assert left == queued, f"the queue is {left}, not {queued}: a claim was not put back"
    engine.dispose()
    return figures


def report(backend: str, results: dict[int, dict[str, float]]) -> None:
    sizes = sorted(results)
    base = sizes[0]
    print(f"\n{backend}")
    print("| queued | " + " | ".join(f"{s:,}" for s in sizes) + f" | ratio {sizes[-1]:,} / {base:,} |")
    print("|---|" + "---|" * (len(sizes) + 1))
    for name in results[base]:
        cells = " | ".join(f"{results[s][name]:.2f} ms" for s in sizes)
        print(f"| {name} | {cells} | {results[sizes[-1]][name] / results[base][name]:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 100_000])
    parser.add_argument("--sqlite-only", action="store_true")
    opts = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="rgrid-bench-queue-"))
    try:
        report("SQLite", {size: measure(f"sqlite:///{root / f'q{size}.db'}", size) for size in opts.sizes})
    finally:
        shutil.rmtree(root, ignore_errors=True)
    if opts.sqlite_only or not postgres_available():
        return
    results = {}
    for size in opts.sizes:
        pg = start_postgres()
        try:
            results[size] = measure(pg.url, size)
        finally:
            pg.stop()
    report("PostgreSQL", results)


if __name__ == "__main__":
    main()
