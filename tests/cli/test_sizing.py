"""The seff-like line of `rgrid status`, its hints, the runner's
out-of-memory note and `rgrid estimate`'s line: one module, so they agree."""

from __future__ import annotations

from rgrid.sizing import (
    batch_usage_line,
    estimate_line,
    larger_memory_mb,
    memory_for_peak_mb,
    out_of_memory_note,
    suggested_cpu,
    usage_hint,
    usage_line,
)
from rgrid.wire import BatchUsage, Estimate, Resources, Usage

GIB = 2**30
MIB = 2**20


def test_the_line_says_use_against_the_ask() -> None:
    usage = Usage(cpu_seconds=71.4, peak_memory_bytes=int(1.2 * GIB), wall_seconds=42)
    line = usage_line(usage, Resources(cpu=2, memory_mb=4096))
    assert line == "used 1.7 of 2 CPUs (85 %), peak memory 1.2 GiB of 4 GiB (30 %), 42 s"
    one = usage_line(Usage(cpu_seconds=0.2, peak_memory_bytes=10 * MIB, wall_seconds=1.0), Resources())
    assert one == "used 0.2 of 1 CPU (20 %), peak memory 10 MiB of 1 GiB (1 %), 1.0 s"


def test_a_node_without_cgroups_says_so() -> None:
    usage = Usage(wall_seconds=3.25)
    assert usage_line(usage, Resources()) == "CPU and memory not measured on this node, 3.2 s"
    assert usage_hint(usage, Resources(), out_of_memory=False, succeeded=True) is None


def test_low_use_after_a_success_long_enough_to_tell_suggests_smaller_limits() -> None:
    idle = Usage(cpu_seconds=10, peak_memory_bytes=300 * MIB, wall_seconds=100)
    assert usage_hint(idle, Resources(cpu=4, memory_mb=8192), out_of_memory=False, succeeded=True) == (
        "it would fit in --memory 512M and --cpu 0.5"
    )
    busy = Usage(cpu_seconds=390, peak_memory_bytes=7 * GIB, wall_seconds=100)
    assert usage_hint(busy, Resources(cpu=4, memory_mb=8192), out_of_memory=False, succeeded=True) is None
    # A failed run had not reached its needs, and a blink says nothing.
    assert usage_hint(idle, Resources(cpu=4, memory_mb=8192), out_of_memory=False, succeeded=False) is None
    blink = Usage(cpu_seconds=0.05, peak_memory_bytes=9 * MIB, wall_seconds=0.2)
    assert usage_hint(blink, Resources(), out_of_memory=False, succeeded=True) is None


def test_an_out_of_memory_kill_names_the_peak_and_a_limit_people_type() -> None:
    killed = Usage(cpu_seconds=0.2, peak_memory_bytes=512 * MIB, wall_seconds=0.3)
    assert usage_hint(killed, Resources(memory_mb=512), out_of_memory=True, succeeded=False) == (
        "it ran out of its 512 MiB at a peak of 512 MiB: try --memory 1G"
    )
    assert out_of_memory_note(1536, 1536 * MIB + 4096) == (
        "killed for exceeding its memory limit (1.5 GiB, peak 1.5 GiB); try --memory 3G"
    )
    assert (
        out_of_memory_note(200, None) == "killed for exceeding its memory limit (200 MiB); try --memory 512M"
    )
    assert [larger_memory_mb(m) for m in (100, 300, 1536, 3000)] == [256, 768, 3072, 6144]


def test_suggestions_round_to_what_people_type() -> None:
    assert memory_for_peak_mb(300 * MIB) == 512
    assert memory_for_peak_mb(10 * MIB) == 256
    assert memory_for_peak_mb(2 * GIB) == 3072
    assert [suggested_cpu(b) for b in (0.1, 0.6, 1.0, 1.7, 3.02)] == [0.5, 1.0, 1.0, 2.0, 3.0]


def test_the_estimate_line_shows_its_evidence() -> None:
    guess = Estimate(
        runs=5,
        basis="same script",
        busy_cpus=1.7,
        peak_memory_bytes=300 * MIB,
        suggested_cpu=2.0,
        suggested_memory_mb=512,
    )
    assert estimate_line(guess) == (
        "those runs kept 1.7 CPUs busy (90th percentile) and peaked at 300 MiB: ask for --cpu 2 --memory 512M"
    )
    assert estimate_line(Estimate(runs=5, basis="same script")) is None


def test_a_batch_line_sums_cpu_hours() -> None:
    usage = BatchUsage(
        attempts=3, cpu_seconds=5400, median_peak_memory_bytes=120 * MIB, max_peak_memory_bytes=300 * MIB
    )
    assert (
        batch_usage_line(usage) == "1.50 CPU-hours over 3 attempts; peak memory median 120 MiB, max 300 MiB"
    )
