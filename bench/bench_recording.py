"""What recording usage and provenance costs per attempt, in CPU time: the
goal is at most 5 ms.

- **Runner**: reading the attempt's cgroup (CPU and peak memory), its
  package set (the interpreter's, listed once per process; an
  environment's, from the mark beside it), and encoding the report with
  them, against the same report without them.
- **API**: `complete_attempt` with a usage and an environment of 60
  packages (the lock stored once, the owner's current lock upserted, the
  result re-keyed) against the same completion without them, on SQLite
  and PostgreSQL. Each completion is one real transaction.

CPU time (`time.process_time`), median of REPEAT, with the ratio measured
in the same run.

    sudo uv run python bench/bench_recording.py [--sqlite-only]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sqlalchemy import insert  # noqa: E402

from rgrid.wire import RunnerEnvironment, RunnerResult, Status, Usage  # noqa: E402
from rgrid_api.attempts import check_outputs, complete_attempt  # noqa: E402
from rgrid_api.db.engine import make_engine, make_sessionmaker  # noqa: E402
from rgrid_api.db.migrate import upgrade  # noqa: E402
from rgrid_api.db.models import Attempt, Execution  # noqa: E402
from rgrid_api.db.times import utcnow  # noqa: E402
from rgrid_api.ids import new_execution_id  # noqa: E402
from rgrid_runner.cgroups import CgroupManager  # noqa: E402
from rgrid_runner.limits import Limits  # noqa: E402
from rgrid_runner.packages import installed, interpreter_packages  # noqa: E402
from tests.support.history import execution_row  # noqa: E402
from tests.support.memstorage import MemoryStorage  # noqa: E402
from tests.support.services import postgres_available, start_postgres  # noqa: E402

REPEAT = 300
PACKAGES = [f"package-{n}==1.{n}.0" for n in range(60)]
ENVIRONMENT = RunnerEnvironment(interpreter="CPython 3.11.7", packages=PACKAGES, rgrid_version="0.1.0")
USAGE = Usage(cpu_seconds=1.2, peak_memory_bytes=300 * 2**20, wall_seconds=1.3, output_bytes=0)


def median_cpu_ms(call: Callable[[int], object], repeat: int = REPEAT) -> float:
    times = []
    for n in range(repeat):
        started = time.process_time()
        call(n)
        times.append(time.process_time() - started)
    return 1000 * statistics.median(times)


def runner_side() -> dict[str, float]:
    cgroups = CgroupManager()
    group = (
        cgroups.create("bench-recording", Limits(memory_bytes=2**30, cpu=1.0, max_pids=64))
        if cgroups.available
        else None
    )
    interpreter_packages(sys.base_prefix)  # what a runner does once per process
    venv = Path(sys.prefix)

    def bare(_n: int) -> None:
        RunnerResult(exit_code=0, duration_s=1.3).model_dump_json()

    def recorded(_n: int) -> None:
        used = group.usage() if group is not None else None
        packages = interpreter_packages(sys.base_prefix)
        environment = RunnerEnvironment(
            interpreter="CPython 3.11.7", packages=list(packages), rgrid_version="0.1.0"
        )
        usage = Usage(
            cpu_seconds=used.cpu_seconds if used else None,
            peak_memory_bytes=used.peak_memory_bytes if used else None,
            wall_seconds=1.3,
        )
        RunnerResult(exit_code=0, duration_s=1.3, usage=usage, environment=environment).model_dump_json()

    try:
        return {
            "report without usage and provenance": median_cpu_ms(bare),
            "report with them (cgroup read, package set, encoding)": median_cpu_ms(recorded),
            f"listing a fresh environment's packages ({len(installed(venv))}; once per build)": median_cpu_ms(
                lambda _n: installed(venv), 30
            ),
        }
    finally:
        if group is not None:
            group.remove()


def api_side(url: str) -> dict[str, float]:
    upgrade(url)
    engine = make_engine(url)
    sessions = make_sessionmaker(engine)
    storage = MemoryStorage()
    now = utcnow()
    ids = [new_execution_id() for _ in range(2 * REPEAT)]
    with engine.begin() as conn:
        conn.execute(
            insert(Execution),
            [
                execution_row(
                    execution_id, "bench", Status.RUNNING, now, requirements="package-1>=1", started_at=now
                )
                for execution_id in ids
            ],
        )
        conn.execute(
            insert(Attempt),
            [
                {
                    "execution_id": execution_id,
                    "number": 1,
                    "status": Status.RUNNING,
                    "dispatched_at": now,
                    "started_at": now,
                    "lease_expires_at": now,
                }
                for execution_id in ids
            ],
        )

    def complete(execution_id: str, result: RunnerResult) -> None:
        with sessions() as session:
            complete_attempt(session, execution_id, 1, check_outputs(storage, execution_id, 1, result))
            session.commit()

    bare = RunnerResult(exit_code=0, duration_s=1.3)
    full = RunnerResult(exit_code=0, duration_s=1.3, usage=USAGE, environment=ENVIRONMENT)
    figures = {
        "completion without usage and provenance": median_cpu_ms(lambda n: complete(ids[2 * n], bare)),
        "completion with them": median_cpu_ms(lambda n: complete(ids[2 * n + 1], full)),
    }
    engine.dispose()
    return figures


def report(title: str, figures: dict[str, float]) -> None:
    print(f"\n{title}")
    print("| what | CPU per attempt (median) |")
    print("|---|---|")
    for name, value in figures.items():
        print(f"| {name} | {value:.3f} ms |")
    names = list(figures)
    print(f"| **added by recording** | **{figures[names[1]] - figures[names[0]]:.3f} ms** |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sqlite-only", action="store_true")
    opts = parser.parse_args()
    report("Runner", runner_side())
    root = Path(tempfile.mkdtemp(prefix="rgrid-bench-recording-"))
    try:
        report("API, SQLite", api_side(f"sqlite:///{root / 'r.db'}"))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    if opts.sqlite_only or not postgres_available():
        return
    pg = start_postgres()
    try:
        report("API, PostgreSQL", api_side(pg.url))
    finally:
        pg.stop()


if __name__ == "__main__":
    main()
