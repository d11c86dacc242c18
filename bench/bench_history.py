"""What a long history costs the reads that run on every request: an
execution by id (the hot read, and with its provenance) and by prefix, its
outputs and its log, the first page of `list`, the monitor's pass over open
attempts, and a scrape of `/metrics`, at 1,000 executions and at 100,000
(and 1,000,000 with `--sizes`), on SQLite and on PostgreSQL.

Each size is a fresh database migrated as `rgrid db upgrade` does, filled
with finished executions of ten owners (one attempt each, all made with one
package set, each with OUTPUTS outputs and LOG_CHUNKS log chunks) and 50
running ones; each read is timed 200 times and the median is reported, with its
ratio to the same read at the smallest size, measured in the same run.

    uv run python bench/bench_history.py [--sizes 1000 100000] [--sqlite-only]

Real SQLite, and PostgreSQL as the tests start it. Figures go into
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import random
import sys
from datetime import timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from _sizes import execution_row, median_ms, on_both_databases  # noqa: E402
from prometheus_client import generate_latest  # noqa: E402
from sqlalchemy import Engine, insert  # noqa: E402

from rgrid.wire import Status  # noqa: E402
from rgrid_api.attempts import expired_attempts  # noqa: E402
from rgrid_api.db.engine import make_engine, make_hot_reader, make_sessionmaker  # noqa: E402
from rgrid_api.db.migrate import upgrade  # noqa: E402
from rgrid_api.db.models import Attempt, Execution, LogChunkRow, Output, PackageLock  # noqa: E402
from rgrid_api.db.times import utcnow  # noqa: E402
from rgrid_api.executionread import read_execution  # noqa: E402
from rgrid_api.executions import find_execution, list_executions, list_outputs, log_page  # noqa: E402
from rgrid_api.ids import new_execution_id  # noqa: E402
from rgrid_api.metrics import registry_for  # noqa: E402
from rgrid_api.settings import Settings  # noqa: E402
from rgrid_api.storage import Storage  # noqa: E402

OWNERS = [f"owner{n}" for n in range(10)]
RUNNING = 50
OUTPUTS = 2
LOG_CHUNKS = 3
CHUNK = 5000
REPEAT = 200


def fill(engine: Engine, size: int) -> list[tuple[str, str]]:
    """`size` finished executions and RUNNING running ones; (owner, id) of some."""
    now = utcnow()
    picked: list[tuple[str, str]] = []
    lock = "1" * 64
    with engine.begin() as conn:
        conn.execute(
            insert(PackageLock),
            [
                {
                    "sha256": lock,
                    "interpreter": "CPython 3.11.7",
                    "packages": "numpy==2.1.0",
                    "created_at": now,
                }
            ],
        )
        for start in range(0, size + RUNNING, CHUNK):
            executions, attempts, outputs, chunks = [], [], [], []
            for n in range(start, min(start + CHUNK, size + RUNNING)):
                running = n >= size
                execution_id, owner = new_execution_id(), OWNERS[n % len(OWNERS)]
                created = now - timedelta(seconds=size + RUNNING - n)
                status = Status.RUNNING if running else Status.SUCCEEDED
                executions.append(
                    execution_row(
                        execution_id,
                        owner,
                        status,
                        created,
                        started_at=created,
                        finished_at=None if running else created + timedelta(seconds=1),
                        exit_code=None if running else 0,
                        lock_sha256=lock,
                    )
                )
                attempts.append(
                    {
                        "execution_id": execution_id,
                        "number": 1,
                        "status": status,
                        "dispatched_at": created,
                        "started_at": created,
                        "finished_at": None if running else created + timedelta(seconds=1),
                        "lease_expires_at": now + timedelta(hours=1) if running else created,
                    }
                )
                if not running:
                    outputs += [
                        {
                            "execution_id": execution_id,
                            "attempt": 1,
                            "path": f"out/part-{k}.csv",
                            "size": 1000,
                            "sha256": "2" * 64,
                            "object_key": f"outputs/{execution_id}/1/out/part-{k}.csv",
                            "mode": 0o644,
                        }
                        for k in range(OUTPUTS)
                    ]
                    chunks += [
                        {
                            "execution_id": execution_id,
                            "seq": seq,
                            "attempt": 1,
                            "stream": "stdout",
                            "data": f"line {seq}\n" * 20,
                            "created_at": created,
                        }
                        for seq in range(1, LOG_CHUNKS + 1)
                    ]
                if n % max(1, (size + RUNNING) // REPEAT) == 0 and not running:
                    picked.append((owner, execution_id))
            conn.execute(insert(Execution), executions)
            conn.execute(insert(Attempt), attempts)
            if outputs:  # the last chunk of rows may hold only running ones
                conn.execute(insert(Output), outputs)
                conn.execute(insert(LogChunkRow), chunks)
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("ANALYZE")
    return picked


def measure(url: str, size: int) -> dict[str, float]:
    upgrade(url)
    engine = make_engine(url)
    sessions = make_sessionmaker(engine)
    picked = fill(engine, size)
    random.shuffle(picked)

    hot = make_hot_reader(url)  # what the server reads an execution with

    def by_id(n: int) -> None:
        owner, execution_id = picked[n % len(picked)]
        with hot.connect() as conn:
            read_execution(conn, owner, execution_id)

    def with_provenance(n: int) -> None:
        owner, execution_id = picked[n % len(picked)]
        with hot.connect() as conn:
            read_execution(conn, owner, execution_id, with_provenance=True)

    def by_prefix(n: int) -> None:
        owner, execution_id = picked[n % len(picked)]
        with sessions() as session:
            find_execution(session, owner, execution_id[:8])

    def first_page(n: int) -> None:
        with sessions() as session:
            list_executions(session, OWNERS[n % len(OWNERS)], 20)

    def monitor_pass(_n: int) -> None:
        with sessions() as session:
            expired_attempts(session)

    storage = Storage(Settings(), "127.0.0.1:9000")  # presigning is local: no server is asked

    def outputs(n: int) -> None:
        owner, execution_id = picked[n % len(picked)]
        with sessions() as session:
            list_outputs(session, storage, find_execution(session, owner, execution_id))

    def log_from_start(n: int) -> None:
        owner, execution_id = picked[n % len(picked)]
        with sessions() as session:
            log_page(session, owner, execution_id, 0)

    def log_at_end(n: int) -> None:
        owner, execution_id = picked[n % len(picked)]
        with sessions() as session:
            log_page(session, owner, execution_id, LOG_CHUNKS)

    registry = registry_for(hot)

    def scrape(_n: int) -> None:
        generate_latest(registry)

    figures = {
        "execution by id (the hot read)": median_ms(by_id),
        "the same with its provenance (`rgrid status`)": median_ms(with_provenance),
        "execution by an 8-character prefix": median_ms(by_prefix),
        "its outputs, with presigned URLs (`rgrid outputs`)": median_ms(outputs),
        "its log from the start (`rgrid logs`)": median_ms(log_from_start),
        "its log after the last chunk (a follower's recheck)": median_ms(log_at_end),
        "`list`, first page": median_ms(first_page),
        "the monitor's pass (open attempts' leases)": median_ms(monitor_pass),
        "a scrape of /metrics": median_ms(scrape),
    }
    engine.dispose()
    hot.dispose()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 100_000])
    parser.add_argument("--sqlite-only", action="store_true")
    opts = parser.parse_args()
    on_both_databases(measure, opts.sizes, "read", opts.sqlite_only)


if __name__ == "__main__":
    main()
