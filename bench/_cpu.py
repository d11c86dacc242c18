"""CPU time of processes, read from /proc: what the benches that split a
grid's CPU by process (or time one server's) share, read one way."""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class ProcStat:
    ppid: int
    session: int
    own_s: float  # utime + stime
    reaped_s: float  # cutime + cstime: children that ended and were waited for


def proc_stat(pid: int) -> ProcStat | None:
    """One process's line of /proc/PID/stat; None once it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    return ProcStat(
        ppid=int(fields[1]),
        session=int(fields[3]),
        own_s=(int(fields[11]) + int(fields[12])) / TICKS,
        reaped_s=(int(fields[13]) + int(fields[14])) / TICKS,
    )


def cpu_s(pid: int) -> float:
    """A live process's own CPU seconds (0 once it is gone)."""
    stat = proc_stat(pid)
    return stat.own_s if stat else 0.0


def all_processes() -> dict[int, ProcStat]:
    found = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (stat := proc_stat(int(entry))) is not None:
            found[int(entry)] = stat
    return found


def descendants(root: int) -> dict[int, ProcStat]:
    """Every process below `root` (not `root` itself)."""
    stats = all_processes()
    children: dict[int, list[int]] = defaultdict(list)
    for pid, stat in stats.items():
        children[stat.ppid].append(pid)
    found = {}
    stack = list(children[root])
    while stack:
        pid = stack.pop()
        found[pid] = stats[pid]
        stack.extend(children[pid])
    return found


def tree_cpu_s(root: int) -> float:
    """CPU seconds of `root` and everything below it, ended children included."""
    tree = descendants(root)
    if (stat := proc_stat(root)) is not None:
        tree[root] = stat
    return sum(s.own_s + s.reaped_s for s in tree.values())
