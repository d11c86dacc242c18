"""The one restart schedule for every supervisor of the grid: the local
grid's supervisor (its pieces), the API server (its Ray driver process) and
the node agent (its raylet).

The first crash is restarted at once: most crashes are one-offs, and every
second down is work waiting. A piece that keeps crashing waits 1, 2, 4, 8,
16, then 30 s between tries, so a broken piece cannot spin the machine. A
piece that stayed up for `reset_after_s` is healthy again: its next crash
counts as a first one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

FIRST_PAUSE_S = 1.0
MAX_PAUSE_S = 30.0
RESET_AFTER_S = 60.0


def pause_before_restart(consecutive_crashes: int) -> float:
    """Seconds to wait before restarting after the n-th crash in a row (n >= 1)."""
    if consecutive_crashes <= 1:
        return 0.0
    return min(FIRST_PAUSE_S * 2 ** (consecutive_crashes - 2), MAX_PAUSE_S)


@dataclass
class RestartPolicy:
    """Tracks one supervised piece: when it started, how often it crashed in
    a row, and when it may be started again."""

    reset_after_s: float = RESET_AFTER_S
    clock: Callable[[], float] = time.monotonic
    consecutive: int = 0
    restarts: int = 0
    started_at: float | None = None
    not_before: float = field(default=0.0)

    def started(self) -> None:
        self.started_at = self.clock()

    def crashed(self) -> float:
        """Record a crash; returns the pause before the next start."""
        now = self.clock()
        if self.started_at is not None and now - self.started_at >= self.reset_after_s:
            self.consecutive = 0
        self.consecutive += 1
        self.restarts += 1
        self.started_at = None
        pause = pause_before_restart(self.consecutive)
        self.not_before = now + pause
        return pause

    def may_start(self) -> bool:
        return self.clock() >= self.not_before

    def wait_s(self) -> float:
        return max(0.0, self.not_before - self.clock())
