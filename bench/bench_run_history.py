"""`rgrid run` end to end with a long history behind it: the warm local
grid's median wall time of `rgrid run examples/hello.py examples/data.csv`
with the grid's own few runs, then again after its database was given
`--sizes` finished executions (a tenth of them the local owner's, the rest
nine other owners'), in the same run. Goal: within 1.5× at 100,000 and at
1,000,000.

    uv run python bench/bench_run_history.py [--sizes 100000 1000000] [--runs 15] [--postgres]

The local grid runs on SQLite, or with `--postgres` on a private PostgreSQL
as the tests start it (`rgrid local up --database-url`); the history is
written while it runs, in chunks (each a short transaction), as a busy
grid's would accumulate, and the database's statistics are brought up to
date after it. Figures go into docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
from datetime import timedelta
from pathlib import Path

from _grid import REPO, RGRID, grid_env, local_grid, rgrid, timed
from _sizes import execution_row
from sqlalchemy import create_engine, insert, select, text

from rgrid.wire import Status
from rgrid_api.db.models import ApiKey, Attempt, Execution
from rgrid_api.db.times import utcnow
from rgrid_api.ids import new_execution_id
from tests.support.services import start_postgres

CHUNK = 5000


def add_history(url: str, count: int) -> None:
    """`count` finished executions with one attempt each, older than now."""
    sqlite = url.startswith("sqlite")
    engine = create_engine(url, connect_args={"timeout": 60} if sqlite else {})
    with engine.connect() as conn:
        local_owner = conn.scalar(select(ApiKey.owner).limit(1))
    if local_owner is None:
        raise SystemExit("the local grid's database has no API key yet")
    owners = [local_owner, *(f"owner{n}" for n in range(9))]
    now = utcnow()
    for start in range(0, count, CHUNK):
        executions: list[dict[str, object]] = []
        attempts: list[dict[str, object]] = []
        for n in range(start, min(start + CHUNK, count)):
            execution_id = new_execution_id()
            created = now - timedelta(days=30, seconds=count - n)
            executions.append(
                execution_row(
                    execution_id,
                    owners[n % len(owners)],
                    Status.SUCCEEDED,
                    created,
                    exit_code=0,
                    duration_s=0.5,
                    started_at=created,
                    finished_at=created + timedelta(seconds=1),
                )
            )
            attempts.append(
                {
                    "execution_id": execution_id,
                    "number": 1,
                    "status": Status.SUCCEEDED,
                    "dispatched_at": created,
                    "started_at": created,
                    "finished_at": created + timedelta(seconds=1),
                    "exit_code": 0,
                }
            )
        with engine.begin() as conn:
            conn.execute(insert(Execution), executions)
            conn.execute(insert(Attempt), attempts)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("PRAGMA wal_checkpoint(TRUNCATE)" if sqlite else "ANALYZE"))
    engine.dispose()


def median_run(project: Path, env: dict[str, str], runs: int) -> float:
    argv = [*RGRID, "run", "examples/hello.py", "examples/data.csv"]
    for _ in range(2):  # warm after the writes: caches, the page cache
        timed(argv, project, env)
    return statistics.median(timed(argv, project, env) for _ in range(runs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--postgres", action="store_true", help="the grid on PostgreSQL, not SQLite")
    opts = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="rgrid-bench-run-history-"))
    pg = start_postgres() if opts.postgres else None
    try:
        project = tmp / "project"
        shutil.copytree(REPO / "examples", project / "examples")
        env = grid_env(tmp / "home")
        url = pg.url if pg else f"sqlite:///{tmp / 'home' / 'local' / 'rgrid.db'}"
        with local_grid(project, env, *(["--database-url", pg.url] if pg else [])):
            rgrid(["run", "examples/hello.py", "examples/data.csv"], project, env)
            base = median_run(project, env, opts.runs)
            print("| history | `rgrid run` median | ratio |")
            print("|---|---|---|")
            print(f"| the grid's own runs | {base:.3f} s | 1.00 |", flush=True)
            total = 0
            for size in sorted(opts.sizes):
                add_history(url, size - total)
                total = size
                took = median_run(project, env, opts.runs)
                print(f"| {size:,} | {took:.3f} s | {took / base:.2f} |", flush=True)
    finally:
        if pg is not None:
            pg.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
