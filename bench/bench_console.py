"""The web console's pages with a long history: the runs page (newest,
a page deep in the history through its cursor, filtered by status and by
script), a run's page and a batch-free `limit=500` page, with 1,000 and
100,000 executions (`--sizes`), on SQLite and PostgreSQL. Goal: p95 of
server time at most 100 ms at 100,000.

Each size is a fresh database filled as `bench_history` fills one (ten
owners; every run with outputs and log chunks) and a real API server
(SeaweedFS, no Ray: pages need none) logged in through a one-time link as
the first owner. Each page is asked for `--repeat` times from loopback;
the median and p95 of the wall time the client saw (server time plus a
loopback round trip) are reported.

    uv run python bench/bench_console.py [--sizes 1000 100000] [--repeat 200] [--sqlite-only]

Figures go into docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import httpx
from _sizes import on_both_databases
from bench_history import OWNERS, fill

from rgrid.local.procs import free_port
from rgrid_api.auth import create_key
from rgrid_api.db.engine import make_engine, make_sessionmaker
from rgrid_api.db.migrate import upgrade
from tests.support.services import Proc, RayHead, S3Server, start_api, start_s3

S3: list[S3Server] = []
REPEAT = 200


def nowhere(root: Path) -> RayHead:
    """A Ray address nobody listens on: the API's driver keeps trying it,
    and no page needs Ray."""
    head = RayHead(f"127.0.0.1:{free_port()}", "", Proc(-1, root / "none.log"), token_path=root / "ray-token")
    head.token_path.write_text("bench-ray-token\n")
    return head


def timings(browser: httpx.Client, path: str, repeat: int) -> tuple[float, float]:
    """Median and p95 in ms of `repeat` GETs of `path` (each must answer 200)."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        answer = browser.get(path)
        times.append(time.perf_counter() - started)
        if answer.status_code != 200:
            raise SystemExit(f"GET {path}: {answer.status_code} {answer.text[:200]}")
    times.sort()
    return 1000 * statistics.median(times), 1000 * times[int(len(times) * 0.95) - 1]


def measure(url: str, size: int, repeat: int) -> dict[str, float]:
    root = Path(tempfile.mkdtemp(prefix="rgrid-bench-console-"))
    upgrade(url)
    engine = make_engine(url)
    picked = fill(engine, size)
    with make_sessionmaker(engine)() as session:
        key = create_key(session, OWNERS[0], "bench")
        session.commit()
    engine.dispose()
    if not S3:
        S3.append(start_s3(root / "s3"))
    # The bench asks faster than a key's rate limit allows (a person never does).
    unlimited = {"RGRID_RATE_LIMIT_PER_S": "0"}
    api = start_api(root / "api", url, S3[0], nowhere(root), S3[0].endpoint, unlimited)
    try:
        with httpx.Client(base_url=api.url, timeout=30) as browser:
            link = browser.post("/v1/console/link", headers={"Authorization": f"Bearer {key}"}).json()["path"]
            browser.cookies.set("rgrid_console", browser.get(link).cookies["rgrid_console"], path="/ui")
            mine = [execution_id for owner, execution_id in picked if owner == OWNERS[0]]
            page = browser.get("/ui/?limit=50").text
            deep = mine[len(mine) // 2]
            figures = {}
            for name, path in (
                ("runs, newest 50", "/ui/"),
                ("runs, 50 from the middle of the history (cursor)", f"/ui/?before={deep}"),
                ("runs, filtered by status", "/ui/?status=succeeded"),
                ("runs, filtered by script", "/ui/?script=job.py"),
                ("runs, 500 at once", "/ui/?limit=500"),
                ("a run's page (attempts, log, outputs)", f"/ui/runs/{mine[0]}"),
            ):
                median, p95 = timings(browser, path, repeat)
                figures[f"{name}: median"] = median
                figures[f"{name}: p95"] = p95
            assert "Runs" in page
    finally:
        api.proc.stop()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 100_000])
    parser.add_argument("--repeat", type=int, default=REPEAT)
    parser.add_argument("--sqlite-only", action="store_true")
    opts = parser.parse_args()
    try:
        on_both_databases(
            lambda url, size: measure(url, size, opts.repeat), opts.sizes, "page", opts.sqlite_only
        )
    finally:
        for s3 in S3:
            s3.proc.stop()


if __name__ == "__main__":
    main()
