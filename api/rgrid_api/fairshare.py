"""Which queued executions go to the grid next: a pure function, so the
order is decided in one place and tested without a database.

The grid is shared between owners, not between submissions: the next
attempt goes to the owner with the least work, counted as the CPU-seconds
it used lately (`RecentUse`: decayed with a half-life of 30 s, running
attempts counted as they run) plus, for each CPU it runs now (dispatched
and running), `RUNNING_WEIGHT_S` more. Within one owner the oldest goes
first. The recent part is what lets an owner who just arrived overtake one
whose batch holds the grid, for each of its runs and not only the first:
by running CPUs alone, the batch's owner, down to nothing running for the
instant between two of its attempts, would take the next slot back. The
running part spreads one round's slots between owners with no history
yet. An owner stops being served in a round when its next execution would
pass its running-CPU cap, or no longer fits the room the grid has left: it
keeps its place, so a large run is never overtaken forever by smaller ones
of the same owner.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from rgrid_runner.driver_messages import Capacity

# What a CPU running now weighs against CPU-seconds already used: about a
# second of what it is about to use. Small beside any real history, so an
# owner who used the grid lately yields to one who did not, however few it
# runs at this instant.
RUNNING_WEIGHT_S = 1.0


@dataclass(frozen=True)
class Candidate:
    """A queued execution at the head of its owner's queue."""

    execution_id: str
    owner: str
    cpu: float
    created_at: datetime
    batch_id: str | None = None
    memory_mb: int = 0


class RecentUse:
    """Each owner's CPU-seconds lately: what it ran since the last sample
    (the CPUs it ran then, for the time since) added to what it had, which
    halves every `half_life_s`. Sampled at every dispatch round. It lives in
    the dispatcher's memory: every server samples the same database, so
    their figures come close; a server that restarts starts from nothing,
    which only favours busy owners for a half-life or two."""

    FORGET_BELOW = 0.01

    def __init__(self, half_life_s: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.half_life_s = half_life_s
        self._clock = clock
        self._at: float | None = None
        self._running: dict[str, float] = {}
        self._used: dict[str, float] = {}

    def observe(self, running_cpus: dict[str, float]) -> None:
        now = self._clock()
        elapsed = 0.0 if self._at is None else now - self._at
        kept = 0.5 ** (elapsed / self.half_life_s)
        self._at = now
        owners = set(self._used) | set(self._running)
        used = {o: self._used.get(o, 0.0) * kept + self._running.get(o, 0.0) * elapsed for o in owners}
        self._used = {o: v for o, v in used.items() if v >= self.FORGET_BELOW}
        self._running = dict(running_cpus)

    def cpu_seconds(self) -> dict[str, float]:
        return dict(self._used)


def fair_order(
    queues: dict[str, list[Candidate]],
    running_cpus: dict[str, float],
    room_cpus: float,
    caps: dict[str, float],
    batch_room: dict[str, int],
    limit: int,
    recent_cpu_s: dict[str, float] | None = None,
    grid: Capacity | None = None,
) -> list[Candidate]:
    """Up to `limit` candidates, in the order they should be dispatched.

    `queues` holds each owner's queued executions, oldest first; `running_cpus`
    what each owner runs now and `recent_cpu_s` what it used lately (its
    `RecentUse`, in CPU-seconds); `room_cpus` how many CPUs may still be handed
    out; `caps` each owner's running-CPU cap (absent: none); `batch_room` how
    many more of each capped batch may be dispatched; `grid` the job nodes,
    one of which a run must fit. A run that fits none, or is larger than
    its owner's cap, cannot start however long it waits: it
    is passed over (it stays queued, and `rgrid status` says why) rather
    than holding up the owner's others, or the room of everyone."""
    running = dict(running_cpus)
    recent = recent_cpu_s or {}
    rooms = dict(batch_room)
    waiting = {owner: deque(queue) for owner, queue in queues.items() if queue}
    picked: list[Candidate] = []
    while waiting and len(picked) < limit:
        owner = min(
            waiting,
            key=lambda o: (
                running.get(o, 0.0) * RUNNING_WEIGHT_S + recent.get(o, 0.0),
                waiting[o][0].created_at,
                o,
            ),
        )
        queue = waiting[owner]
        head = queue[0]
        cap = caps.get(owner, math.inf)
        if head.batch_id is not None and rooms.get(head.batch_id, 1) <= 0:
            queue.popleft()  # its batch is at its cap: the owner's next may go
        elif head.cpu > cap or (grid is not None and not grid.fits(head.cpu, head.memory_mb)):
            queue.popleft()  # it cannot start now at all: the owner's next may go
        elif running.get(owner, 0.0) + head.cpu > cap or head.cpu > room_cpus:
            del waiting[owner]  # it waits, in its place, for the next round
            continue
        else:
            queue.popleft()
            picked.append(head)
            room_cpus -= head.cpu
            running[owner] = running.get(owner, 0.0) + head.cpu
            if head.batch_id in rooms:
                rooms[head.batch_id] -= 1
        if not queue:
            del waiting[owner]
    return picked
