"""Whether a running piece of the local grid must be restarted: the
supervisor's judgement, apart from its processes, its health checks and
its clock, so that a test drives it with a fake clock and fake answers
(`tests/cli/test_supervisor_verdict.py`) instead of crashing real pieces.

A piece is restarted when its process ended; when it never became healthy
within its start timeout; or when, having been healthy, it stays unhealthy
for UNHEALTHY_S while everything it depends on is healthy (a piece is never
blamed for what it needs being down). A healthy piece is asked again only
every HEALTH_EVERY_S: an idle grid costs the laptop little.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field

from rgrid.restarts import RestartPolicy

HEALTH_EVERY_S = 5.0
UNHEALTHY_S = 30.0
START_TIMEOUT_S = {"s3": 60.0, "api": 60.0, "ray": 90.0, "worker": 90.0}


@dataclass
class Watched:
    """What the supervisor knows of one piece beyond state.json."""

    policy: RestartPolicy = field(default_factory=RestartPolicy)
    proc: subprocess.Popen[bytes] | None = None  # None: adopted from an earlier supervisor
    started: float = 0.0
    healthy_once: bool = False
    unhealthy_since: float | None = None
    ok: bool = False
    checked_at: float = 0.0


def failure(
    w: Watched,
    kind: str,
    exited: str | None,
    check: Callable[[], bool],
    needs_met: Callable[[], bool],
    now: float,
) -> str | None:
    """Why this piece must be restarted, or None if it may run on.
    `exited`: how its process ended, if it did; `check`: its health check
    (called only when one is due); `needs_met`: whether what it depends on
    is healthy; `now`: the supervisor's monotonic clock."""
    if exited is not None:
        return exited
    if w.proc is None and not w.started:
        w.started = now  # adopted: give it the same chances as a fresh start
    if w.ok and now - w.checked_at < HEALTH_EVERY_S:
        return None
    w.ok, w.checked_at = check(), now
    if w.ok:
        w.healthy_once = True
        w.unhealthy_since = None
        return None
    if not needs_met():
        w.unhealthy_since = None  # not its fault: what it needs is down
        return None
    if not w.healthy_once:
        if now - w.started > START_TIMEOUT_S[kind]:
            return f"not healthy {START_TIMEOUT_S[kind]:.0f} s after start"
        return None
    w.unhealthy_since = w.unhealthy_since or now
    if now - w.unhealthy_since > UNHEALTHY_S:
        return f"unhealthy for {UNHEALTHY_S:.0f} s"
    return None
