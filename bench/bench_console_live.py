"""How soon a line a job prints shows in the web console: a script on the
warm local grid prints the time every `--every` seconds for `--seconds`;
the console's event stream for that run (what the run page's script
listens to) is read as a browser reads it, logged in through `rgrid
console --no-open`, and each line's delay is the time it arrived minus the
time it holds (one machine, one clock). Goal: within 1 s.

    uv run python bench/bench_console_live.py [--seconds 20] [--every 0.2]

Figures go into docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import httpx
from _grid import grid_env, local_grid, rgrid


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--every", type=float, default=0.2)
    opts = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="rgrid-bench-console-live-"))
    try:
        project = tmp / "project"
        project.mkdir()
        count = int(opts.seconds / opts.every)
        (project / "stamps.py").write_text(
            f"import time\nfor _ in range({count}):\n    print(repr(time.time()), flush=True)\n"
            f"    time.sleep({opts.every})\n"
        )
        env = grid_env(tmp / "home")
        with local_grid(project, env):
            rgrid(["run", "stamps.py"], project, env)  # warm: the runtime, the sandbox
            link = rgrid(["console", "--no-open"], project, env).strip().splitlines()[-1]
            run_id = json.loads(rgrid(["run", "-d", "--json", "stamps.py"], project, env))["id"]
            base = link.split("/ui/")[0]
            delays = []
            with httpx.Client(base_url=base, timeout=120) as browser:
                cookie = browser.get(link).cookies["rgrid_console"]
                browser.cookies.set("rgrid_console", cookie, path="/ui")
                with browser.stream("GET", f"/ui/runs/{run_id}/events") as stream:
                    name = ""
                    for line in stream.iter_lines():
                        if line.startswith("event: "):
                            name = line.removeprefix("event: ")
                        elif line.startswith("data: ") and name == "log":
                            arrived = time.time()
                            chunk = json.loads(line.removeprefix("data: "))
                            delays += [arrived - float(stamp) for stamp in chunk["data"].split()]
                        elif line.startswith("data: ") and name == "end":
                            break
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    delays.sort()
    print(f"{len(delays)} lines, one every {opts.every:g} s")
    print("| delay from print to the browser's event stream | median | p95 | max |")
    print("|---|---|---|---|")
    p95 = delays[int(len(delays) * 0.95) - 1]
    print(
        f"| the run page's live log | {1000 * statistics.median(delays):.0f} ms | {1000 * p95:.0f} ms | "
        f"{1000 * delays[-1]:.0f} ms |"
    )


if __name__ == "__main__":
    main()
