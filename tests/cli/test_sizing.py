"""The seff-like line of `rgrid status`, its hints, and what `estimate`
and the runner's out-of-memory note suggest: one module, so they agree."""

from __future__ import annotations

from rgrid.sizing import (
    batch_usage_line,
    larger_memory_mb,
    memory_for_peak_mb,
    suggested_cpu,
    usage_hint,
    usage_line,
)
from rgrid.wire import BatchUsage, Resources, Usage

GIB = 2**30


def test_the_line_says_use_against_the_ask() -> None:
    usage = Usage(cpu_seconds=71.4, peak_memory_bytes=int(1.2 * GIB), wall_seconds=42, output_bytes=0)
    line = usage_line(usage, Resources(cpu=2, memory_mb=4096))
    assert line == "used 1.7 of 2 CPUs (85 %), peak memory 1.2 GiB of 4.0 GiB (30 %), 42 s"


def test_a_node_without_cgroups_says_so() -> None:
    usage = Usage(wall_seconds=3.25)
    assert usage_line(usage, Resources()) == "CPU and memory not measured on this node, 3.2 s"
    assert usage_hint(usage, Resources(), out_of_memory=False) is None


def test_low_use_suggests_smaller_limits_and_good_use_suggests_nothing() -> None:
    idle = Usage(cpu_seconds=10, peak_memory_bytes=300 * 2**20, wall_seconds=100)
    assert usage_hint(idle, Resources(cpu=4, memory_mb=8192), out_of_memory=False) == (
        "it would fit in --memory 512M and --cpu 0.5"
    )
    busy = Usage(cpu_seconds=390, peak_memory_bytes=7 * GIB, wall_seconds=100)
    assert usage_hint(busy, Resources(cpu=4, memory_mb=8192), out_of_memory=False) is None


def test_an_out_of_memory_kill_names_the_peak_and_twice_the_limit() -> None:
    killed = Usage(cpu_seconds=0.2, peak_memory_bytes=512 * 2**20, wall_seconds=0.3)
    assert usage_hint(killed, Resources(memory_mb=512), out_of_memory=True) == (
        "it ran out of its 512 MiB at a peak of 512 MiB: try --memory 1G"
    )
    assert larger_memory_mb(300, None) == 768  # rounded up to a step nobody minds typing


def test_suggestions_round_to_what_people_type() -> None:
    assert memory_for_peak_mb(300 * 2**20) == 512
    assert memory_for_peak_mb(10 * 2**20) == 256
    assert [suggested_cpu(b) for b in (0.1, 0.6, 1.0, 1.7, 3.02)] == [0.5, 1.0, 1.0, 2.0, 3.0]


def test_a_batch_line_sums_cpu_hours() -> None:
    usage = BatchUsage(
        attempts=3, cpu_seconds=5400, median_peak_memory_bytes=120 * 2**20, max_peak_memory_bytes=300 * 2**20
    )
    assert batch_usage_line(usage) == "1.50 CPU-hours over 3 runs; peak memory median 120 MiB, max 300 MiB"
