"""What a run used against what it asked for, and what to ask for next
time: the `seff`-like line of `rgrid status`, its hints, the runner's
out-of-memory note and `rgrid estimate`'s suggestions all come from here,
so they never disagree.
"""

from __future__ import annotations

import math

from rgrid.units import memory_flag
from rgrid.wire import BatchUsage, Resources, Usage

MIB = 2**20
# A limit is rounded up to this many MiB: nobody types --memory 731M.
MEMORY_STEP_MB = 256
# Headroom over the largest peak seen: page cache and a slightly larger input.
MEMORY_HEADROOM = 1.25
# Below this share of --memory used, the line suggests a smaller limit.
LOW_MEMORY_SHARE = 0.5
# Below this share of --cpu kept busy (over runs long enough to tell), fewer CPUs.
LOW_CPU_SHARE = 0.5
MIN_WALL_FOR_CPU_HINT_S = 5.0


def _round_up_mb(memory_mb: float) -> int:
    return max(MEMORY_STEP_MB, math.ceil(memory_mb / MEMORY_STEP_MB) * MEMORY_STEP_MB)


def memory_for_peak_mb(peak_bytes: int) -> int:
    """A --memory that holds this peak with headroom."""
    return _round_up_mb(peak_bytes / MIB * MEMORY_HEADROOM)


def larger_memory_mb(limit_mb: int, peak_bytes: int | None) -> int:
    """After an out-of-memory kill: twice the limit (the peak is the limit,
    so it says nothing of what the run would have needed)."""
    return _round_up_mb(max(limit_mb * 2, (peak_bytes or 0) / MIB * 2))


def cpus_busy(usage: Usage) -> float | None:
    """How many CPUs the run kept busy on average."""
    if usage.cpu_seconds is None or usage.wall_seconds <= 0:
        return None
    return usage.cpu_seconds / usage.wall_seconds


def suggested_cpu(busy: float) -> float:
    """A --cpu for a run that kept `busy` CPUs busy: whole CPUs above one,
    halves below."""
    if busy >= 1:
        return float(math.ceil(busy - 0.05))
    return max(0.5, math.ceil(busy * 2) / 2)


def _size(num_bytes: float) -> str:
    if num_bytes >= 2**30:
        return f"{num_bytes / 2**30:.1f} GiB"
    return f"{num_bytes / MIB:.0f} MiB"


def usage_line(usage: Usage, resources: Resources) -> str:
    """`used 1.7 of 2 CPUs (85 %), peak memory 1.2 GiB of 4 GiB (30 %), 42 s`."""
    parts = []
    busy = cpus_busy(usage)
    if busy is not None:
        parts.append(
            f"used {busy:.1f} of {resources.cpu:g} CPUs ({busy / resources.cpu:.0%})".replace("%", " %")
        )
    limit = resources.memory_mb * MIB
    if usage.peak_memory_bytes is not None:
        share = usage.peak_memory_bytes / limit
        parts.append(
            f"peak memory {_size(usage.peak_memory_bytes)} of {_size(limit)} ({share:.0%})".replace("%", " %")
        )
    if not parts:
        parts.append("CPU and memory not measured on this node")
    parts.append(f"{usage.wall_seconds:.0f} s" if usage.wall_seconds >= 10 else f"{usage.wall_seconds:.1f} s")
    return ", ".join(parts)


def usage_hint(usage: Usage, resources: Resources, out_of_memory: bool) -> str | None:
    """One line on what to ask for next time, when the run says so."""
    peak = usage.peak_memory_bytes
    if out_of_memory:
        seen = f" at a peak of {_size(peak)}" if peak else ""
        larger = larger_memory_mb(resources.memory_mb, peak)
        return (
            f"it ran out of its {_size(resources.memory_mb * MIB)}{seen}: try --memory {memory_flag(larger)}"
        )
    hints = []
    if peak is not None and peak < resources.memory_mb * MIB * LOW_MEMORY_SHARE:
        smaller = memory_for_peak_mb(peak)
        if smaller < resources.memory_mb:
            hints.append(f"--memory {memory_flag(smaller)}")
    busy = cpus_busy(usage)
    if (
        busy is not None
        and usage.wall_seconds >= MIN_WALL_FOR_CPU_HINT_S
        and busy < resources.cpu * LOW_CPU_SHARE
    ):
        fewer = suggested_cpu(busy)
        if fewer < resources.cpu:
            hints.append(f"--cpu {fewer:g}")
    if not hints:
        return None
    return f"it would fit in {' and '.join(hints)}"


def batch_usage_line(usage: BatchUsage) -> str:
    """`0.42 CPU-hours over 100 runs; peak memory median 120 MiB, max 300 MiB`."""
    line = f"{usage.cpu_seconds / 3600:.2f} CPU-hours over {usage.attempts} run{'' if usage.attempts == 1 else 's'}"
    if usage.median_peak_memory_bytes is not None and usage.max_peak_memory_bytes is not None:
        line += (
            f"; peak memory median {_size(usage.median_peak_memory_bytes)}, "
            f"max {_size(usage.max_peak_memory_bytes)}"
        )
    return line
