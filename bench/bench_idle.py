"""What an idle local grid costs the machine: CPU of each of its pieces
over a quiet minute after one run.

Run by hand:  uv run python bench/bench_idle.py [--seconds 60]
It starts a private local grid in a temp RGRID_HOME, runs the README's
example once, then samples every process of the grid's sessions (the
supervisor, the API, SeaweedFS, Ray's processes, the node agent and its
attempt service) from /proc. Figures go into docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from _cpu import all_processes, proc_stat
from _grid import REPO, grid_env, local_grid, rgrid

from rgrid.local.grid import LocalGrid

# Not rgrid's code: the driver is Ray's library too, but rgrid's process.
THIRD_PARTY = frozenset({"Ray", "SeaweedFS"})


def piece_of(cmdline: str) -> str:
    """Which of the grid's pieces a process belongs to, by what it runs."""
    for marker, piece in (
        ("rgrid.local.supervisor", "supervisor"),
        ("rgrid server", "API"),
        ("raydriver", "Ray driver"),
        ("weed", "SeaweedFS"),
        ("attemptproc", "node agent"),
        ("rgrid worker", "node agent"),
    ):
        if marker in cmdline:
            return piece
    return "Ray"


def grid_processes(home: Path) -> dict[int, str]:
    """Every process of the grid: the supervisor's session and the session
    of each piece it started (each leads one)."""
    state = LocalGrid(home).read_state()
    assert state.supervisor is not None, "the local grid's supervisor is not running"
    leaders = {state.supervisor.pid, *(p.pid for p in state.pieces.values() if p.pid)}
    found = {}
    for pid, stat in all_processes().items():
        if stat.session in leaders:
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            found[pid] = piece_of(cmd)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    seconds = parser.parse_args().seconds
    home = Path(tempfile.mkdtemp(prefix="rgrid-bench-idle-"))
    project = home / "project"
    shutil.copytree(REPO / "examples", project / "examples")
    env = grid_env(home / "home")
    try:
        with local_grid(project, env):
            rgrid(["run", "examples/hello.py", "examples/data.csv"], project, env)
            time.sleep(5)  # the run's own tail (uploads, reports) is not idleness
            procs = grid_processes(home / "home")
            before = {pid: proc_stat(pid) for pid in procs}
            time.sleep(seconds)
            used: dict[str, float] = defaultdict(float)
            for pid, piece in procs.items():
                start, end = before[pid], proc_stat(pid)
                if start is not None and end is not None:
                    used[piece] += end.own_s - start.own_s
    finally:
        shutil.rmtree(home, ignore_errors=True)
    total = sum(used.values())
    print(f"idle for {seconds:.0f} s; % of one core:")
    for piece, cpu in sorted(used.items(), key=lambda kv: -kv[1]):
        print(f"  {piece:<12} {100 * cpu / seconds:5.1f} %")
    rgrid_own = sum(v for k, v in used.items() if k not in THIRD_PARTY)
    print(
        f"  {'all':<12} {100 * total / seconds:5.1f} %   "
        f"(rgrid's own processes: {100 * rgrid_own / seconds:.1f} %; Ray and SeaweedFS are the rest)"
    )


if __name__ == "__main__":
    main()
