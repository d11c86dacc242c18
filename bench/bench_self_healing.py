"""Self-healing timings: the Ray head or the API SIGKILLed mid-batch on a
supervised local grid (2 worker nodes, PostgreSQL), nobody typing a command.

Runs tests/chaos/test_self_healing.py `--rounds` times (each scenario asserts
0 lost and 0 duplicated executions, so a round that passes measured that)
and reports, per scenario, the median and max seconds from the kill to the
first completion after it and to the whole batch done.

Run by hand:  uv run python bench/bench_self_healing.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINE = re.compile(
    r"^(?P<scenario>[^:\n]+): .*?first completion after (?P<first>[\d.]+) s, "
    r"first requeued one after (?P<requeued>[\d.]+) s, batch done after (?P<done>[\d.]+) s"
)
SECOND_RESTART = re.compile(r"second restart (?P<down>[\d.]+) s after the kill")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    rounds = parser.parse_args().rounds
    figures: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in range(rounds):
        run = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "-q",
                "-s",
                "-p",
                "no:cacheprovider",
                "tests/chaos/test_self_healing.py",
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        if run.returncode != 0:
            print(run.stdout[-3000:], run.stderr[-2000:])
            sys.exit(f"round {r + 1} failed: something was lost or duplicated, or the grid did not converge")
        for line in run.stdout.splitlines():
            if m := LINE.search(line):
                figures[m["scenario"]]["first completion"].append(float(m["first"]))
                figures[m["scenario"]]["first requeued done"].append(float(m["requeued"]))
                figures[m["scenario"]]["batch done"].append(float(m["done"]))
            if m := SECOND_RESTART.search(line):
                figures["head killed twice"]["second restart"].append(float(m["down"]))
        print(f"round {r + 1} passed", flush=True)
    print(f"\n{rounds} rounds, 16 jobs of 2-4 s per scenario; lost 0, duplicated 0 in every round")
    for scenario, measures in figures.items():
        for what, values in measures.items():
            print(
                f"{scenario:18} {what:17} median {statistics.median(values):5.1f} s  "
                f"max {max(values):5.1f} s  ({', '.join(f'{v:.1f}' for v in values)})"
            )


if __name__ == "__main__":
    main()
