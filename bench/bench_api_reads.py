"""The API's read latency under load: `wrk` (Debian package) against
`GET /v1/executions/{id}` with 16 connections, on the local grid with
SQLite and then with PostgreSQL, `/healthz` alongside as the ceiling of the
HTTP stack itself. Two executions are read: a finished one (answered from
memory) and a running one (a database read on every request).

Run by hand:  uv run python bench/bench_api_reads.py [--seconds 15] [--connections 16]
It starts a private local grid in a temp RGRID_HOME (and a private
PostgreSQL for the second half), runs one job so there is an execution to
read, and stops everything at the end. Figures go into docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _grid import REPO, grid_env, local_grid, rgrid

sys.path.insert(0, str(REPO))

from rgrid.local.grid import LocalGrid
from tests.support.services import postgres_available, start_postgres


def wrk(url: str, key: str | None, seconds: int, connections: int) -> dict[str, str]:
    argv = ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", "--timeout", "2s"]
    if key:
        argv += ["-H", f"Authorization: Bearer {key}"]
    out = subprocess.run([*argv, url], text=True, capture_output=True, check=True).stdout
    found = {"req/s": re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)}  # type: ignore[union-attr]
    for pct in ("50", "99"):
        m = re.search(rf"^\s+{pct}%\s+(\S+)", out, re.M)
        found[f"p{pct}"] = m.group(1) if m else "?"
    errors = re.search(r"Socket errors:.*timeout (\d+)", out)
    found["timeouts"] = errors.group(1) if errors else "0"
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    found["non-2xx"] = non2xx.group(1) if non2xx else "0"
    return found


def measure(project: Path, env: dict[str, str], up_args: list[str], opts: argparse.Namespace) -> list[str]:
    with local_grid(project, env, *up_args):
        view = json.loads(rgrid(["run", "--json", "job.py"], project, env))
        running = json.loads(rgrid(["run", "-d", "--json", "sleep.py"], project, env))
        while json.loads(rgrid(["status", "--json", running["id"]], project, env))["status"] != "running":
            time.sleep(0.2)
        target = LocalGrid(Path(env["RGRID_HOME"])).target()
        base, key = target.api_url.rstrip("/"), target.api_key
        rows = []
        for name, url, auth in (
            ("GET /v1/executions/{id}, finished", f"{base}/v1/executions/{view['id']}", key),
            ("GET /v1/executions/{id}, running", f"{base}/v1/executions/{running['id']}", key),
            ("GET /healthz", f"{base}/healthz", None),
        ):
            r = wrk(url, auth, opts.seconds, opts.connections)
            rows.append(
                f"| {name} | {r['req/s']} | {r['p50']} | {r['p99']} | {r['timeouts']} | {r['non-2xx']} |"
            )
        return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--connections", type=int, default=16)
    opts = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="rgrid-bench-") as tmp:
        project = Path(tmp) / "project"
        project.mkdir()
        (project / "job.py").write_text("print('ok')\n")
        (project / "sleep.py").write_text("import time\ntime.sleep(600)\n")
        header = "| route | req/s | p50 | p99 | timeouts | non-2xx |\n|---|---|---|---|---|---|"
        print(f"SQLite ({opts.connections} connections, {opts.seconds} s):\n{header}")
        print("\n".join(measure(project, grid_env(Path(tmp) / "home"), [], opts)))
        if postgres_available():
            pg = start_postgres()
            try:
                print(f"\nPostgreSQL ({opts.connections} connections, {opts.seconds} s):\n{header}")
                env = grid_env(Path(tmp) / "home-pg")
                print("\n".join(measure(project, env, ["--database-url", pg.url], opts)))
            finally:
                pg.stop()


if __name__ == "__main__":
    main()
