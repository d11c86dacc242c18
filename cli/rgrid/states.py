"""One table of moves per entity: which state may follow which, in one
place, raising on any other (as Ray's autoscaler v2 does for its instances).

- Executions and attempts: the database refuses every other move too, by
  triggers written from these tables (migrations 0003 and 0012);
  `tests/integration/test_migrations.py` checks on SQLite and PostgreSQL
  that they allow exactly these.
- Workers and instances are moved only through `move`.
- A batch's status is derived from its executions' (`BatchStatus`), never
  stored, so it has no moves.

Staying in a state is no move and always allowed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Generic, TypeVar

from rgrid.wire import InstanceState, Status, WorkerStatus

S = TypeVar("S", bound=StrEnum)


class IllegalMove(ValueError):
    """A move the entity's table does not have: a bug, never the user's."""


@dataclass(frozen=True)
class Moves(Generic[S]):
    entity: str
    edges: Mapping[S, frozenset[S]]

    def allowed(self, old: str, new: str) -> bool:
        return old == new or any(new in news for state, news in self.edges.items() if state == old)

    def check(self, old: str, new: str) -> None:
        if not self.allowed(old, new):
            raise IllegalMove(f"{self.entity} cannot go from {old} to {new}")

    def move(self, row: Any, new: S, field: str = "status") -> None:
        """Set `row.<field>` to `new`, if the table allows it."""
        self.check(getattr(row, field), new)
        setattr(row, field, new)

    def pairs(self) -> set[tuple[str, str]]:
        return {(str(old), str(new)) for old, news in self.edges.items() for new in news}


EXECUTION = Moves[Status](
    "execution",
    {
        Status.QUEUED: frozenset({Status.DISPATCHED, Status.CANCELLED, Status.FAILED}),
        # Back to queued: its attempt was lost (a node died, a lease ran out).
        Status.DISPATCHED: frozenset({Status.RUNNING, Status.QUEUED, Status.FAILED, Status.CANCELLED}),
        Status.RUNNING: frozenset({Status.SUCCEEDED, Status.FAILED, Status.CANCELLED, Status.QUEUED}),
    },
)

ATTEMPT = Moves[Status](
    "attempt",
    {
        # An attempt is born dispatched; lost, refused or cancelled before its start, it fails or is cancelled.
        Status.DISPATCHED: frozenset({Status.RUNNING, Status.FAILED, Status.CANCELLED}),
        Status.RUNNING: frozenset({Status.SUCCEEDED, Status.FAILED, Status.CANCELLED}),
    },
)

WORKER = Moves[WorkerStatus](
    "worker",
    {
        WorkerStatus.ACTIVE: frozenset({WorkerStatus.DRAINING, WorkerStatus.DEAD, WorkerStatus.LEFT}),
        # Registering again makes a node active, whatever it was.
        WorkerStatus.DRAINING: frozenset({WorkerStatus.ACTIVE, WorkerStatus.DEAD, WorkerStatus.LEFT}),
        WorkerStatus.DEAD: frozenset({WorkerStatus.ACTIVE}),
        WorkerStatus.LEFT: frozenset({WorkerStatus.ACTIVE}),
    },
)

INSTANCE = Moves[InstanceState](
    "instance",
    {
        InstanceState.REQUESTED: frozenset(
            {InstanceState.ALLOCATED, InstanceState.ALLOCATION_FAILED, InstanceState.DELETING}
        ),
        InstanceState.ALLOCATED: frozenset(
            {InstanceState.JOINED, InstanceState.JOIN_TIMEOUT, InstanceState.DELETING, InstanceState.DELETED}
        ),
        InstanceState.JOINED: frozenset(
            {InstanceState.DRAINING, InstanceState.DELETING, InstanceState.DELETED}
        ),
        InstanceState.DRAINING: frozenset({InstanceState.DELETING, InstanceState.DELETED}),
        InstanceState.JOIN_TIMEOUT: frozenset({InstanceState.DELETING, InstanceState.DELETED}),
        InstanceState.DELETING: frozenset({InstanceState.DELETED}),
    },
)
# Ended: the server is going or gone (its credentials are revoked).
INSTANCE_ENDED = frozenset(
    {
        InstanceState.DELETING,
        InstanceState.DELETED,
        InstanceState.ALLOCATION_FAILED,
        InstanceState.JOIN_TIMEOUT,
    }
)
INSTANCE_FINAL = frozenset({InstanceState.DELETED, InstanceState.ALLOCATION_FAILED})
INSTANCE_PENDING = frozenset({InstanceState.REQUESTED, InstanceState.ALLOCATED})
# Its server may exist and be billed.
INSTANCE_BILLED = frozenset(set(InstanceState) - INSTANCE_FINAL)
