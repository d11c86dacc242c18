"""What a run used against what it asked for, and what to ask for next
time: the `seff`-like line of `rgrid status`, its hints, the runner's
out-of-memory note in the job's stderr and `rgrid estimate`'s suggestions
all come from here, so they never disagree.
"""

from __future__ import annotations

import math

from rgrid.units import memory_flag
from rgrid.wire import BatchUsage, Estimate, Resources, Usage

MIB = 2**20
# A limit is rounded up to this many MiB below a GiB, and to whole GiB
# above: nobody types --memory 731M or 3328M.
MEMORY_STEP_MB = 256
# Headroom over the largest peak seen: page cache and a slightly larger input.
MEMORY_HEADROOM = 1.25
# Below this share of --memory used, the line suggests a smaller limit.
LOW_MEMORY_SHARE = 0.5
# Below this share of --cpu kept busy, fewer CPUs.
LOW_CPU_SHARE = 0.5
# Runs shorter than these say little about their needs: no hint from them.
MIN_WALL_FOR_MEMORY_HINT_S = 1.0
MIN_WALL_FOR_CPU_HINT_S = 5.0


def _round_up_mb(memory_mb: float) -> int:
    step = MEMORY_STEP_MB if memory_mb <= 1024 else 1024
    return max(MEMORY_STEP_MB, math.ceil(memory_mb / step) * step)


def memory_for_peak_mb(peak_bytes: int) -> int:
    """A --memory that holds this peak with headroom."""
    return _round_up_mb(peak_bytes / MIB * MEMORY_HEADROOM)


def larger_memory_mb(limit_mb: int) -> int:
    """After an out-of-memory kill: twice the limit (the peak reached the
    limit, so it says nothing of what the run would have needed)."""
    return _round_up_mb(limit_mb * 2)


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
        return f"{num_bytes / 2**30:.1f}".removesuffix(".0") + " GiB"
    return f"{num_bytes / MIB:.0f} MiB"


def _cpus(count: float) -> str:
    return f"{count:g} CPU" + ("" if count == 1 else "s")


def _share(part: float, whole: float) -> str:
    return f"{part / whole:.0%}".replace("%", " %")


def usage_line(usage: Usage, resources: Resources) -> str:
    """`used 1.7 of 2 CPUs (85 %), peak memory 1.2 GiB of 4 GiB (30 %), 42 s`."""
    parts = []
    busy = cpus_busy(usage)
    if busy is not None:
        parts.append(f"used {busy:.1f} of {_cpus(resources.cpu)} ({_share(busy, resources.cpu)})")
    limit = resources.memory_mb * MIB
    if usage.peak_memory_bytes is not None:
        peak = usage.peak_memory_bytes
        parts.append(f"peak memory {_size(peak)} of {_size(limit)} ({_share(peak, limit)})")
    if not parts:
        parts.append("CPU and memory not measured on this node")
    parts.append(f"{usage.wall_seconds:.0f} s" if usage.wall_seconds >= 10 else f"{usage.wall_seconds:.1f} s")
    return ", ".join(parts)


def out_of_memory_note(memory_mb: int, peak_bytes: int | None) -> str:
    """The runner's line in the job's stderr when the kernel killed it."""
    seen = f", peak {_size(peak_bytes)}" if peak_bytes else ""
    return (
        f"killed for exceeding its memory limit ({_size(memory_mb * MIB)}{seen}); "
        f"try --memory {memory_flag(larger_memory_mb(memory_mb))}"
    )


def usage_hint(usage: Usage, resources: Resources, out_of_memory: bool, succeeded: bool) -> str | None:
    """One line on what to ask for next time, when the run says so: after
    an out-of-memory kill a larger limit; after a success long enough to
    tell, smaller limits where it used less than half."""
    peak = usage.peak_memory_bytes
    if out_of_memory:
        seen = f" at a peak of {_size(peak)}" if peak else ""
        larger = larger_memory_mb(resources.memory_mb)
        return (
            f"it ran out of its {_size(resources.memory_mb * MIB)}{seen}: try --memory {memory_flag(larger)}"
        )
    if not succeeded:
        return None  # a run that failed early had not reached its needs
    hints = []
    if (
        peak is not None
        and usage.wall_seconds >= MIN_WALL_FOR_MEMORY_HINT_S
        and peak < resources.memory_mb * MIB * LOW_MEMORY_SHARE
    ):
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


def estimate_line(estimate: Estimate) -> str | None:
    """What `rgrid estimate` says the history suggests, with its evidence."""
    said, asks = [], []
    if estimate.busy_cpus is not None and estimate.suggested_cpu is not None:
        said.append(f"kept {_cpus(estimate.busy_cpus)} busy (90th percentile)")
        asks.append(f"--cpu {estimate.suggested_cpu:g}")
    if estimate.peak_memory_bytes is not None and estimate.suggested_memory_mb is not None:
        said.append(f"peaked at {_size(estimate.peak_memory_bytes)}")
        asks.append(f"--memory {memory_flag(estimate.suggested_memory_mb)}")
    if not asks:
        return None
    return f"those runs {' and '.join(said)}: ask for {' '.join(asks)}"


def batch_usage_line(usage: BatchUsage) -> str:
    """`0.42 CPU-hours over 100 attempts; peak memory median 120 MiB, max 300 MiB`."""
    line = f"{usage.cpu_seconds / 3600:.2f} CPU-hours over {usage.attempts} attempt"
    line += "" if usage.attempts == 1 else "s"
    if usage.median_peak_memory_bytes is not None and usage.max_peak_memory_bytes is not None:
        line += (
            f"; peak memory median {_size(usage.median_peak_memory_bytes)}, "
            f"max {_size(usage.max_peak_memory_bytes)}"
        )
    return line
