"""What one attempt may use, and the caps the runner enforces itself beside
the kernel's: log volume, work dir size, and rlimits where cgroups are not
available.

`Limits` is built once per attempt from the spec's resources and handed to
whichever enforces it: the cgroup, the Docker command, or the rlimits.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rgrid.wire import Resources, Stream
from rgrid_runner.systools import system_tool

DISK_CHECK_EVERY_S = 2.0
MIB = 1024 * 1024


@dataclass(frozen=True)
class Limits:
    memory_bytes: int
    cpu: float
    max_pids: int

    @classmethod
    def for_attempt(cls, resources: Resources, max_pids: int) -> Limits:
        return cls(memory_bytes=resources.memory_mb * MIB, cpu=resources.cpu, max_pids=max_pids)


class LogBudget:
    """Passes output through until `limit` bytes, then drops it and reports."""

    def __init__(self, limit: int, sink: Callable[[Stream, str], None]) -> None:
        self.limit = limit
        self.sink = sink
        self.used = 0
        self.over = False

    def write(self, stream: Stream, data: str) -> None:
        if self.over:
            return
        self.used += len(data.encode("utf-8", "replace"))
        if self.used > self.limit:
            self.over = True
            return
        self.sink(stream, data)

    def exceeded(self) -> str | None:
        return f"its log exceeded {self.limit} bytes" if self.over else None


class WorkdirWatch:
    """Measures the work dir every few seconds so a script cannot fill the disk."""

    def __init__(self, root: Path, limit: int) -> None:
        self.root = root
        self.limit = limit
        self._next = 0.0

    def exceeded(self) -> str | None:
        now = time.monotonic()
        if now < self._next:
            return None
        self._next = now + DISK_CHECK_EVERY_S
        used = tree_usage(self.root).bytes
        return f"its work dir grew over {self.limit} bytes" if used > self.limit else None


@dataclass(frozen=True)
class Usage:
    """What a tree takes on the node: bytes on disk (every entry charged at
    least one block, so a million empty files are not free) and entries."""

    bytes: int
    files: int


BLOCK = 4096


def tree_usage(root: Path) -> Usage:
    """A tree's usage, without following links."""
    total = files = 0
    for dirpath, dirnames, filenames in os.walk(root):
        for name in (*dirnames, *filenames):
            try:
                total += max(os.lstat(os.path.join(dirpath, name)).st_blocks * 512, BLOCK)
            except FileNotFoundError:
                continue
            files += 1
    return Usage(total, files)


def rlimit_command(argv: list[str], limits: Limits) -> list[str]:
    """Without cgroups: address-space and process-count rlimits via prlimit.
    Weaker (RLIMIT_NPROC counts all processes of the uid; RLIMIT_AS counts
    virtual memory), and an exceeded memory rlimit is not told apart from
    another failure."""
    return [system_tool("prlimit"), f"--as={limits.memory_bytes}", f"--nproc={limits.max_pids}", "--", *argv]
