"""What the benches over database sizes share (`bench_history`,
`bench_queue`, `bench_run_history`): an execution row to fill a database
with, the timing of one operation, the table of figures by size, and the
run of a measure on SQLite and then on PostgreSQL."""

from __future__ import annotations

import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository, for `tests.support`

from tests.support.history import execution_row
from tests.support.services import postgres_available, start_postgres

__all__ = ["execution_row", "median_ms", "on_both_databases", "report"]

T = TypeVar("T")
REPEAT = 200


def median_ms(
    call: Callable[[int], T], undo: Callable[[T], None] | None = None, repeat: int = REPEAT
) -> float:
    """The median wall time of `call(n)` over `repeat` calls; `undo` runs
    after each, untimed."""
    times = []
    for n in range(repeat):
        started = time.perf_counter()
        result = call(n)
        times.append(time.perf_counter() - started)
        if undo is not None:
            undo(result)
    return 1000 * statistics.median(times)


def report(backend: str, what: str, results: dict[int, dict[str, float]]) -> None:
    """The figures by size, with each one's ratio to the smallest size."""
    sizes = sorted(results)
    base = sizes[0]
    print(f"\n{backend}")
    print(f"| {what} | " + " | ".join(f"{s:,}" for s in sizes) + f" | ratio {sizes[-1]:,} / {base:,} |")
    print("|---|" + "---|" * (len(sizes) + 1))
    for name in results[base]:
        cells = " | ".join(f"{results[s][name]:.2f} ms" for s in sizes)
        print(f"| {name} | {cells} | {results[sizes[-1]][name] / results[base][name]:.2f} |")


def on_both_databases(
    measure: Callable[[str, int], dict[str, float]], sizes: list[int], what: str, sqlite_only: bool
) -> None:
    """`measure(url, size)` for each size on a fresh SQLite file, then on a
    fresh PostgreSQL (one per size), and their tables."""
    root = Path(tempfile.mkdtemp(prefix="rgrid-bench-sizes-"))
    try:
        report("SQLite", what, {size: measure(f"sqlite:///{root / f'{size}.db'}", size) for size in sizes})
    finally:
        shutil.rmtree(root, ignore_errors=True)
    if sqlite_only or not postgres_available():
        return
    results = {}
    for size in sizes:
        pg = start_postgres()
        try:
            results[size] = measure(pg.url, size)
        finally:
            pg.stop()
    report("PostgreSQL", what, results)
