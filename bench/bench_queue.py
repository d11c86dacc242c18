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
import sys
from datetime import datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from _sizes import execution_row, median_ms, on_both_databases  # noqa: E402
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

OWNERS = [f"owner{n}" for n in range(10)]
IN_FLIGHT = 50
RUNNING = 50
CHUNK = 5000
REPEAT = 100
LEASE_S = 30.0
GRID = Capacity(nodes=[(64.0, 262144.0)] * 4)


def _row(execution_id: str, n: int, status: Status, created: datetime) -> dict[str, object]:
    return execution_row(execution_id, OWNERS[n % len(OWNERS)], status, created)


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


def measure(url: str, queued: int) -> dict[str, float]:
    upgrade(url)
    engine = make_engine(url)
    sessions = make_sessionmaker(engine)
    in_flight = fill(engine, queued)

    def claim(_n: int) -> list[str]:
        with sessions() as session:
            claimed = claim_queued(session, LEASE_S, sharing=Sharing(), grid=GRID)
            session.commit()
            return [c.execution_id for c in claimed]

    def put_back(claimed: list[str]) -> None:
        ids = list(claimed)
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

    def renew_cycle(_n: int) -> None:
        with sessions() as session:
            renew_dispatched(session, in_flight, LEASE_S)
            session.commit()

    def monitor_pass(_n: int) -> None:
        with sessions() as session:
            stale_workers(session, 10.0)
            expired_attempts(session)

    figures = {
        "a claim (up to 32 runs)": median_ms(claim, put_back, REPEAT),
        f"a lease renewal cycle ({IN_FLIGHT} in flight)": median_ms(renew_cycle, repeat=REPEAT),
        "the monitor's pass (dead nodes, expired leases)": median_ms(monitor_pass, repeat=REPEAT),
    }
    with engine.connect() as conn:
        left = conn.scalar(select(func.count()).where(Execution.status == Status.QUEUED))
    assert left == queued, f"the queue is {left}, not {queued}: a claim was not put back"
    engine.dispose()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 100_000])
    parser.add_argument("--sqlite-only", action="store_true")
    opts = parser.parse_args()
    on_both_databases(measure, opts.sizes, "queued", opts.sqlite_only)


if __name__ == "__main__":
    main()
