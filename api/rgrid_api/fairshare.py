"""Which queued executions go to the grid next: a pure function, so the
order is decided in one place and tested without a database.

The grid is shared between owners, not between submissions: the next
attempt goes to the owner with the least running work (CPUs of its
dispatched and running attempts), and within one owner the oldest goes
first. An owner stops being served in a round when its next execution
would pass its running-CPU cap, or no longer fits the room the grid has
left: it keeps its place, so a large run is never overtaken forever by
smaller ones of the same owner.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class Candidate:
    """A queued execution at the head of its owner's queue."""

    execution_id: str
    owner: str
    cpu: float
    created_at: datetime
    batch_id: str | None = None


def fair_order(
    queues: dict[str, list[Candidate]],
    running_cpus: dict[str, float],
    room_cpus: float,
    caps: dict[str, float],
    batch_room: dict[str, int],
    limit: int,
) -> list[Candidate]:
    """Up to `limit` candidates, in the order they should be dispatched.

    `queues` holds each owner's queued executions, oldest first; `running_cpus`
    what each owner runs now; `room_cpus` how many CPUs may still be handed
    out; `caps` each owner's running-CPU cap (absent: none); `batch_room` how
    many more of each capped batch may be dispatched."""
    running = dict(running_cpus)
    rooms = dict(batch_room)
    waiting = {owner: deque(queue) for owner, queue in queues.items() if queue}
    picked: list[Candidate] = []
    while waiting and len(picked) < limit:
        owner = min(waiting, key=lambda o: (running.get(o, 0.0), waiting[o][0].created_at, o))
        queue = waiting[owner]
        head = queue[0]
        if head.batch_id is not None and rooms.get(head.batch_id, 1) <= 0:
            queue.popleft()  # its batch is at its cap: the owner's next may go
        elif running.get(owner, 0.0) + head.cpu > caps.get(owner, math.inf) or head.cpu > room_cpus:
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
